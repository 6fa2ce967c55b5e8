//! One request through the proxy: rewrite the head, pick a backend (sticky cookie
//! first), send, retry by the rules, report the outcome to passive ejection, and
//! relay the response — or switch protocols and splice bytes after a 101.
//!
//! Retry rules (read from [`ProxyError`] fields, never from messages):
//! * nothing was sent (connect failed, or a pooled connection was found closed):
//!   another backend, up to the VIP's `retries`;
//! * the backend failed after the request left but before any response byte: an
//!   idempotent request (GET, HEAD, OPTIONS) without a body is retried once
//!   elsewhere; anything whose body was streamed is never retried;
//! * a stale keep-alive connection (closed by the backend as we reused it) is retried
//!   on a fresh connection to the same backend without blaming it, for body-less
//!   idempotent requests.
//!
//! 5xx responses, connect failures, backend errors and timeouts count against the
//! backend in the pool's outlier record; any other response clears it.
//!
//! `backend_timeout` runs from the moment the request body's last byte left for the
//! backend (at once for a body-less request): it bounds the backend's think time, so
//! a slow client uploading a large attachment is never answered 504 while it uploads.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use http::header::{HeaderValue, CONNECTION, EXPECT, HOST, SET_COOKIE, TRAILER};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::client::{BackendClient, Conn};
use super::errors::{error_response, local_response, BodyStalled};
use super::headers::{self, Forwarding};
use super::interim::{Gate, Interim};
use super::{empty, sticky, Body, BoxError, HttpVip, Settings, RESPONSES_TOTAL};
use crate::access;
use crate::backend::{Backend, Lease};
use crate::error::{ProxyError, Side};
use crate::pool::Pool;
use shared::config::{ForwardedFor, HttpVipConfig};

/// Facts about the client connection a request arrived on, shared by its requests.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the client connection is TLS (`https` in forwarding headers).
    pub tls: bool,
    /// The forwarding headers' per-connection parts, rendered once.
    forwarding: Forwarding,
    /// Whether the chain the client's requests bring is kept (`forwarded_for` and
    /// `trusted_proxies`), decided once per connection.
    append_forwarded: bool,
}

impl ConnInfo {
    /// The facts of a connection from `peer`, over TLS or not, under `http`'s
    /// forwarding rules.
    pub fn new(peer: SocketAddr, tls: bool, http: &HttpVipConfig) -> Arc<Self> {
        let proto = if tls { "https" } else { "http" };
        let ip = match peer.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        let append_forwarded = match http.forwarded_for {
            ForwardedFor::Replace => false,
            ForwardedFor::Append => {
                http.trusted_proxies.is_empty()
                    || http.trusted_proxies.iter().any(|n| n.contains(&ip))
            }
        };
        Arc::new(ConnInfo {
            peer,
            tls,
            forwarding: Forwarding::new(peer.ip(), proto),
            append_forwarded,
        })
    }
}

/// Why a request is answered by the proxy before any backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Missing (HTTP/1.1), repeated or invalid Host, or one that differs from
    /// `:authority`.
    BadHost,
    /// A transfer coding other than a lone `chunked`.
    TransferEncoding,
    /// CONNECT on a VIP without `allow_connect`: a reverse proxy, not a tunnel.
    Connect,
    /// More header lines than `max_headers` (HTTP/2; hyper counts HTTP/1's).
    TooManyHeaders,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::BadHost => StatusCode::BAD_REQUEST,
            Refusal::TransferEncoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::BadHost => "bad_host",
            Refusal::TransferEncoding => "transfer_encoding",
            Refusal::Connect => "connect",
            Refusal::TooManyHeaders => "too_many_headers",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Refusal::BadHost => "400 Bad Request: missing, repeated or invalid Host\n",
            Refusal::TransferEncoding => {
                "501 Not Implemented: only the chunked transfer coding is accepted\n"
            }
            Refusal::Connect => "405 Method Not Allowed: CONNECT is not served here\n",
            Refusal::TooManyHeaders => "431 Request Header Fields Too Large\n",
        }
    }
}

/// The one host of a request, validated (RFC 9112 §3.2, RFC 9113 §8.3.1): the
/// target's authority when it has one (HTTP/2 `:authority`, or an HTTP/1
/// absolute-form target, which replaces Host), else the single Host header. Two
/// Host headers, an invalid value, an HTTP/2 Host that differs from `:authority`,
/// and no host at all on HTTP/1.1 or HTTP/2 are refused. `None` is an HTTP/1.0
/// request without one, or an empty Host. The usual case (one valid Host header, or
/// an `:authority` alone) costs a reference-count increment or one copy.
fn request_host(req: &Request<Incoming>) -> Result<Option<HeaderValue>, Refusal> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadHost);
    }
    let h2 = req.version() == Version::HTTP_2;
    if let Some(h) = header {
        // Empty is what an HTTP/1.1 client sends for a target without an authority.
        let empty_ok = !h2 && h.is_empty();
        if !empty_ok && !headers::valid_host(h.as_bytes()) {
            return Err(Refusal::BadHost);
        }
    } else if req.version() == Version::HTTP_11 {
        return Err(Refusal::BadHost);
    }
    if let Some(authority) = req.uri().authority() {
        let a = authority.as_str().as_bytes();
        if !headers::valid_host(a) {
            return Err(Refusal::BadHost);
        }
        if let Some(h) = header {
            if h.as_bytes() == a {
                return Ok(Some(h.clone()));
            }
            if h2 && !h.as_bytes().eq_ignore_ascii_case(a) {
                return Err(Refusal::BadHost);
            }
        }
        return HeaderValue::from_bytes(a)
            .map(Some)
            .map_err(|_| Refusal::BadHost);
    }
    match header {
        Some(h) if h.is_empty() => Ok(None),
        Some(h) => Ok(Some(h.clone())),
        None if h2 => Err(Refusal::BadHost),
        None => Ok(None),
    }
}

/// Checks a request before it is rewritten: what is refused outright, and its host.
fn admit(req: &Request<Incoming>, http: &HttpVipConfig) -> Result<Option<HeaderValue>, Refusal> {
    if req.method() == Method::CONNECT {
        if !http.allow_connect {
            return Err(Refusal::Connect);
        }
        // The target of a tunnel is `host:port` (RFC 9110 §9.3.6).
        let port = req.uri().authority().and_then(|a| a.port_u16());
        if req.uri().path_and_query().is_some() || port.is_none() {
            return Err(Refusal::BadHost);
        }
    }
    if req.version() == Version::HTTP_2 && req.headers().len() > http.max_headers {
        return Err(Refusal::TooManyHeaders);
    }
    if req.version() < Version::HTTP_2
        && headers::transfer_coding(req.headers()) == headers::TransferCoding::Unsupported
    {
        return Err(Refusal::TransferEncoding);
    }
    request_host(req)
}

/// The rewritten head sent to backends, kept so a retry can rebuild the request.
struct Template {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
    /// Open while the client can be sent the backend's 1xx responses.
    gate: Option<Gate>,
}

impl Template {
    fn build(&self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        if let Some(gate) = &self.gate {
            gate.attach(&mut req);
        }
        req
    }
}

/// A client's request body on its way to a backend. It ends with [`BodyStalled`] when
/// the client pauses longer than `body_timeout` (otherwise a stalled upload would hold
/// a backend connection forever), and with `backend_timeout` set it drops its sender
/// once the last byte has been handed over (or the body is dropped), which is when
/// that timeout starts counting: [`uploaded`] waits for that moment.
struct Uploading {
    inner: Incoming,
    sent: Option<watch::Sender<()>>,
    body_timeout: Duration,
    /// Armed while the client owes the next piece; reused across pauses.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl Uploading {
    /// Wraps `inner`; with `signal`, the receiver resolves [`uploaded`] once the body
    /// has ended.
    fn wrap(
        inner: Incoming,
        body_timeout: Duration,
        signal: bool,
    ) -> (Body, Option<watch::Receiver<()>>) {
        let (sent, rx) = if signal {
            let (tx, rx) = watch::channel(());
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let body = Uploading {
            inner,
            sent,
            body_timeout,
            stall: None,
            waiting: false,
        };
        (body.boxed(), rx)
    }

    /// Called when the client has nothing for us: arms the stall timer at the first
    /// such poll after a piece arrived, or reports that it fired. Only a pause of the
    /// client counts: while the backend is slow to take a piece, hyper does not poll
    /// the body at all, and the next poll after that starts a fresh period.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<BodyStalled> {
        if !self.waiting {
            self.waiting = true;
            let at = Instant::now() + self.body_timeout;
            match &mut self.stall {
                Some(s) => s.as_mut().reset(at),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let fired = match &mut self.stall {
            Some(s) => std::future::Future::poll(s.as_mut(), cx).is_ready(),
            None => false,
        };
        if fired {
            Poll::Ready(BodyStalled(self.body_timeout))
        } else {
            Poll::Pending
        }
    }
}

impl hyper::body::Body for Uploading {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Pending => {
                return match self.poll_stall(cx) {
                    Poll::Ready(stalled) => {
                        self.sent = None;
                        Poll::Ready(Some(Err(Box::new(stalled))))
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
        };
        self.waiting = false;
        if ended {
            self.sent = None;
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves when the [`Uploading`] body behind `rx` has ended (its sender is gone;
/// nothing is ever sent on the channel).
async fn uploaded(mut rx: watch::Receiver<()>) {
    while rx.changed().await.is_ok() {}
}

/// Index of the status class of `s` in [`super::CLASSES`] (`1xx`..`5xx`).
fn status_class(s: StatusCode) -> usize {
    match s.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The request target as sent to backends: the origin form (path and query, `/` if
/// none). An origin-form target (every HTTP/1 request from a browser) is kept as is;
/// otherwise the path and query are reused without re-parsing when they can be.
fn origin_form(uri: Uri) -> Uri {
    if let Some(pq) = uri.path_and_query() {
        if pq.as_str().starts_with('/') {
            if uri.scheme().is_none() && uri.authority().is_none() {
                return uri;
            }
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(pq.clone());
            if let Ok(u) = Uri::from_parts(parts) {
                return u;
            }
        }
    }
    let origin = uri.path_and_query().map_or("/", |p| p.as_str());
    origin.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// A backend's response body on its way to the client. It holds the backend lease
/// until the body ends, so least_conn and `wait drained` see a request as active while
/// its response still streams, and it hands the backend connection back to the pool
/// only when the body was relayed to the end (a connection abandoned mid-body is
/// dropped, never reused with unread bytes in it).
struct Relayed {
    inner: Incoming,
    lease: Option<Lease>,
    /// The connection and the client it returns to; `None` after an upgrade.
    checkin: Option<(Conn, Arc<BackendClient>)>,
    /// The access line, written when the body ends (with `access_log`).
    access: Option<Box<AccessPending>>,
}

/// An access-log line waiting for its response body to end.
struct AccessPending {
    req: Box<access::Request>,
    backend: String,
    status: StatusCode,
    retries: u32,
    head: Instant,
    bytes: u64,
}

impl AccessPending {
    fn log(&self, aborted: bool) {
        self.req.log(
            &self.backend,
            self.status,
            self.retries,
            self.head,
            self.bytes,
            aborted,
        );
    }
}

impl Relayed {
    fn finish(&mut self) {
        self.lease = None;
        if let Some((conn, client)) = self.checkin.take() {
            client.checkin(conn);
        }
        if let Some(a) = self.access.take() {
            a.log(false);
        }
    }
}

impl hyper::body::Body for Relayed {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Some(a), Poll::Ready(Some(Ok(frame)))) = (&mut self.access, &polled) {
            if let Some(data) = frame.data_ref() {
                a.bytes += data.len() as u64;
            }
        }
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => {
                self.lease = None;
                self.checkin = None;
                if let Some(a) = self.access.take() {
                    a.log(true);
                }
            }
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // hyper stops polling a body that reports its end (a Content-Length body
        // whose last byte was read), so the end may only be seen here.
        if self.inner.is_end_stream() {
            self.finish();
        } else if let Some(a) = self.access.take() {
            // The client went away (or the response was dropped) mid-body.
            a.log(true);
        }
    }
}

impl HttpVip {
    /// Counts a response the proxy made itself (`backend="-"`: no backend to blame).
    pub(super) fn count_own_response(&self, status: StatusCode) {
        metrics::counter!(RESPONSES_TOTAL, "vip" => self.name.clone(), "backend" => "-", "class" => super::CLASSES[status_class(status)]).increment(1);
    }

    /// Answers a request refused before any backend saw it (and logs it). On
    /// HTTP/1 the connection closes after the answer: the refused request's body
    /// (of an unknown coding, say) cannot be skipped safely.
    fn refuse(
        &self,
        req: &Request<Incoming>,
        conn: &ConnInfo,
        settings: &super::Settings,
        refusal: Refusal,
    ) -> Response<Body> {
        let status = refusal.status();
        self.count_client_error(refusal.reason());
        self.count_own_response(status);
        tracing::debug!(vip = %self.name, client = %conn.peer, reason = refusal.reason(), "request refused: {status}");
        if settings.access_log {
            access::Request {
                vip: self.name.clone(),
                client: conn.peer,
                method: req.method().clone(),
                host: None,
                path: req.uri().clone(),
                version: req.version(),
                started: Instant::now(),
            }
            .log_failed("-", status, 0);
        }
        let mut resp = local_response(status, refusal.text());
        if refusal == Refusal::Connect {
            resp.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"),
            );
        }
        if req.version() < Version::HTTP_2 {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// Serves one client request; never fails (failures become 502/503/504).
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
        pool: Arc<Pool>,
        settings: Arc<Settings>,
        interim: Option<Arc<Interim>>,
    ) -> Response<Body> {
        self.count_request();
        let mut req = req;

        let host_value = match admit(&req, &settings.http) {
            Ok(h) => h,
            Err(refusal) => return self.refuse(&req, &conn, &settings, refusal),
        };
        let trailers = req.version() == Version::HTTP_2 || headers::accepts_trailers(req.headers());
        // The backend's 1xx responses are relayed until this handler has its final
        // response (interim.rs has the rules).
        let gate = Gate::open(interim.as_ref(), &mut req);
        let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers());
        // Admitted only with `allow_connect`: a 2xx from the backend opens a tunnel.
        let connect = req.method() == Method::CONNECT;
        let client_upgrade = (upgrade || connect).then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let Parts {
            method,
            uri,
            version,
            headers: mut hdrs,
            ..
        } = parts;

        headers::strip_hop_by_hop(&mut hdrs, upgrade);
        // 100-continue is answered by this hop when the body is first read.
        hdrs.remove(EXPECT);
        // The backend, the forwarding headers and the access log all see the one
        // validated host.
        if let Some(h) = &host_value {
            hdrs.insert(HOST, h.clone());
        }
        conn.forwarding
            .apply(&mut hdrs, host_value.as_ref(), conn.append_forwarded);
        if settings.http.via {
            headers::add_via(&mut hdrs, version);
        }
        headers::join_cookies(&mut hdrs);
        let uri = if connect { uri } else { origin_form(uri) };
        let sticky_value = settings
            .http
            .sticky_cookie
            .as_deref()
            .and_then(|name| headers::cookie(&hdrs, name))
            .map(str::to_string);
        if let (Some(name), Some(_)) = (settings.http.sticky_cookie.as_deref(), &sticky_value) {
            headers::remove_cookie(&mut hdrs, name);
        }
        let access = settings.access_log.then(|| {
            Box::new(access::Request {
                vip: self.name.clone(),
                client: conn.peer,
                method: method.clone(),
                host: host_value.clone(),
                path: uri.clone(),
                version,
                started: Instant::now(),
            })
        });
        let template = Template {
            method: method.clone(),
            uri,
            headers: hdrs,
            gate,
        };

        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let body_empty = body.is_end_stream();
        let resendable = idempotent && body_empty;
        // An empty body needs no box (and no reads of the client connection); a
        // streamed one is bounded by body_timeout and tells `backend_timeout` when
        // its upload has finished.
        let (body, upload) = if body_empty {
            (empty(), None)
        } else {
            Uploading::wrap(
                body,
                settings.http.body_timeout,
                settings.http.backend_timeout.is_some(),
            )
        };
        let mut body = Some(body);

        let mut tried: Vec<usize> = Vec::new();
        let mut connect_retries = 0u32;
        let mut idempotent_retried = false;
        let mut last_err: Option<ProxyError> = None;
        loop {
            let picked = sticky_value
                .as_deref()
                .and_then(|v| sticky::find(&pool, v, &tried).map(|l| (l, true)))
                .or_else(|| pool.select(conn.peer.ip(), &tried).map(|l| (l, false)));
            let Some((lease, pinned)) = picked else {
                let err = last_err.unwrap_or(ProxyError::NoBackend);
                if matches!(err, ProxyError::NoBackend) {
                    self.count_own_response(err.status());
                    tracing::warn!(vip = %self.name, "no backend in rotation: 503");
                }
                if let Some(a) = &access {
                    a.log_failed("-", err.status(), tried.len());
                }
                return error_response(&err);
            };
            let backend = Arc::clone(lease.backend());
            let req_body = body.take().unwrap_or_else(empty);
            match self
                .attempt(
                    &backend,
                    &template,
                    req_body,
                    upload.as_ref(),
                    resendable,
                    &settings,
                )
                .await
            {
                Ok((resp, c)) => {
                    let access = access.map(|req| {
                        Box::new(AccessPending {
                            req,
                            backend: backend.name().to_string(),
                            status: resp.status(),
                            retries: tried.len() as u32,
                            head: Instant::now(),
                            bytes: 0,
                        })
                    });
                    return self.respond(
                        resp,
                        c,
                        lease,
                        &pool,
                        pinned,
                        client_upgrade,
                        &settings,
                        (conn.tls, trailers, connect),
                        access,
                    );
                }
                Err((err, returned)) => {
                    if matches!(err, ProxyError::HttpConnect { .. }) {
                        backend.metrics.connect_failures.increment(1);
                    }
                    if err.side() == Some(Side::Backend) {
                        self.count_backend_error(&backend, err.kind());
                        tracing::warn!(vip = %self.name, backend = %backend.name(), error = %err, "request failed");
                    } else {
                        // The client's doing (a stalled or broken upload): not a
                        // backend error, and nothing for the operator to fix.
                        tracing::debug!(vip = %self.name, backend = %backend.name(), error = %err, "request failed on the client side");
                    }
                    if err.blames_backend() {
                        pool.report_failure(&lease);
                    }
                    tried.push(lease.index());
                    drop(lease);
                    let retry = if err.retry_safe() {
                        body = returned;
                        connect_retries += 1;
                        connect_retries <= settings.retries && (body.is_some() || body_empty)
                    } else if err.retry_if_idempotent() && resendable && !idempotent_retried {
                        idempotent_retried = true;
                        true
                    } else {
                        false
                    };
                    if !retry {
                        if err.side() == Some(Side::Client) {
                            // The client's fault is its own line in the metrics,
                            // never a backend's response class.
                            self.count_client_error(err.kind());
                            self.count_own_response(err.status());
                        } else {
                            self.count_backend_response(&backend, status_class(err.status()));
                        }
                        if let Some(a) = &access {
                            a.log_failed(backend.name(), err.status(), tried.len());
                        }
                        return error_response(&err);
                    }
                    self.count_retry();
                    last_err = Some(err);
                }
            }
        }
    }

    /// One try on `backend`: a pooled connection (or a fresh one when the pooled one
    /// proves stale), the request, and the response head. On failure the body comes
    /// back when it was not consumed. `upload` (with `backend_timeout`) says when a
    /// streamed body has been sent, which is when the timeout starts.
    async fn attempt(
        &self,
        backend: &Backend,
        template: &Template,
        body: Body,
        upload: Option<&watch::Receiver<()>>,
        resendable: bool,
        settings: &super::Settings,
    ) -> Result<(Response<Incoming>, Conn), (ProxyError, Option<Body>)> {
        let mut body = body;
        let mut fresh = false;
        loop {
            let mut c = match settings.client.checkout(backend, fresh).await {
                Ok(c) => c,
                Err(e) => return Err((e, Some(body))),
            };
            let send = c.sender.try_send_request(template.build(body));
            let result = match settings.http.backend_timeout {
                Some(t) => {
                    let expired = async {
                        if let Some(rx) = upload {
                            uploaded(rx.clone()).await;
                        }
                        tokio::time::sleep(t).await;
                    };
                    tokio::select! {
                        r = send => r,
                        () = expired => {
                            return Err((
                                ProxyError::Timeout {
                                    backend: backend.name().to_string(),
                                    timeout: t,
                                },
                                None,
                            ))
                        }
                    }
                }
                None => send.await,
            };
            match result {
                Ok(resp) => return Ok((resp, c)),
                Err(mut e) => {
                    if let Some(req) = e.take_message() {
                        let returned = req.into_body();
                        if c.reused && !fresh {
                            fresh = true;
                            body = returned;
                            continue;
                        }
                        return Err((
                            ProxyError::NotSent {
                                backend: backend.name().to_string(),
                            },
                            Some(returned),
                        ));
                    }
                    let source = e.into_error();
                    let stale = source.is_incomplete_message()
                        || source.is_closed()
                        || source.is_canceled();
                    if c.reused && !fresh && resendable && stale {
                        tracing::debug!(backend = %backend.id(), "stale keep-alive connection; resending on a fresh one");
                        fresh = true;
                        body = empty();
                        continue;
                    }
                    if let Some(timeout) = BodyStalled::found_in(&source) {
                        return Err((ProxyError::BodyStalled { timeout }, None));
                    }
                    return Err((
                        ProxyError::BeforeResponse {
                            backend: backend.name().to_string(),
                            source,
                        },
                        None,
                    ));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        mut resp: Response<Incoming>,
        c: Conn,
        lease: Lease,
        pool: &Pool,
        pinned: bool,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        settings: &super::Settings,
        (tls, trailers, connect): (bool, bool, bool),
        access: Option<Box<AccessPending>>,
    ) -> Response<Body> {
        let status = resp.status();
        if status.is_server_error() {
            pool.report_failure(&lease);
        } else {
            pool.report_success(&lease);
        }
        let backend = Arc::clone(lease.backend());
        self.count_backend_response(&backend, status_class(status));

        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        // A CONNECT's 2xx is the backend's end of the tunnel.
        let tunnel = switching || (connect && status.is_success());
        let mut lease = Some(lease);
        let mut checkin = None;
        match (tunnel, client_upgrade) {
            (true, Some(client_up)) => {
                let backend_up = hyper::upgrade::on(&mut resp);
                let held = lease.take();
                let id = backend.id();
                let kill = self.kill.clone();
                self.tasks.spawn(async move {
                    let _held = held;
                    let relay = async {
                        let (cu, bu) = futures::future::try_join(client_up, backend_up)
                            .await
                            .map_err(
                                |e| tracing::debug!(backend = %id, error = %e, "upgrade failed"),
                            )?;
                        let mut cu = TokioIo::new(cu);
                        let mut bu = TokioIo::new(bu);
                        if let Err(e) = tokio::io::copy_bidirectional(&mut cu, &mut bu).await {
                            tracing::debug!(backend = %id, error = %e, "upgraded connection ended");
                        }
                        Ok::<(), ()>(())
                    };
                    // An upgraded connection is a client connection: the end of the
                    // drain period ends it too.
                    tokio::select! {
                        _ = relay => {}
                        _ = kill.cancelled() => {}
                    }
                });
                drop(c);
            }
            _ => checkin = Some((c, Arc::clone(&settings.client))),
        }

        let (mut parts, body) = resp.into_parts();
        // The version is hop-by-hop (RFC 9110 §6.2): a client speaking HTTP/1.1 to this
        // hop is answered in HTTP/1.1 whatever the backend spoke (hyper answers an
        // HTTP/1.0 client in HTTP/1.0 itself); `Via` names the one received.
        let received = std::mem::replace(&mut parts.version, Version::HTTP_11);
        // `Trailer` announces the trailer fields; hyper relays trailers to an
        // HTTP/1.1 client only for the fields it names, so it stays for clients
        // that accept trailers (`TE: trailers`, or HTTP/2).
        let announced = if trailers && parts.headers.contains_key(TRAILER) {
            parts.headers.get_all(TRAILER).iter().cloned().collect()
        } else {
            Vec::new()
        };
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        for v in announced {
            parts.headers.append(TRAILER, v);
        }
        if settings.http.via {
            headers::add_via(&mut parts.headers, received);
        }
        if let Some(name) = settings.http.sticky_cookie.as_deref() {
            if !pinned {
                if let Some(v) =
                    headers::sticky_set_cookie(name, &sticky::cookie_value(&backend), tls)
                {
                    parts.headers.append(SET_COOKIE, v);
                }
            }
        }
        let body = Relayed {
            inner: body,
            lease,
            checkin,
            access,
        }
        .boxed();
        Response::from_parts(parts, body)
    }
}
