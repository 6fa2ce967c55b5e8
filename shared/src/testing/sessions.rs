//! The fakes' protocol conversations, one function per [`FakeKind`]. Each runs over an
//! already accepted (and, when configured, PROXY-checked and TLS-wrapped) stream and
//! records what happened in the shared [`Stats`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{lock, Behaviour, FakeKind, RequestInfo, SessionCtx};
use crate::probe::conn::BoxIo;
use crate::probe::lines::LineConn;
use crate::probe::ProbeError;

/// Longest line the fakes accept (SMTP DATA lines may be long).
const FAKE_MAX_LINE: usize = 64 * 1024;
/// How long a PROXY-expecting fake waits for the header (Dovecot's default is 3s).
const PROXY_TIMEOUT: Duration = Duration::from_secs(3);

type Conn = LineConn<BoxIo>;
type Res = Result<(), ProbeError>;

/// Serves one accepted connection to the end.
pub(super) async fn serve(mut stream: TcpStream, ctx: &SessionCtx) {
    if ctx.options.expect_proxy && read_proxy_header(&mut stream, ctx).await.is_none() {
        return;
    }
    let io: BoxIo = match &ctx.options.implicit_tls {
        Some(cfg) if ctx.behaviour != Behaviour::Hang => {
            match tokio_rustls::TlsAcceptor::from(Arc::clone(cfg))
                .accept(stream)
                .await
            {
                Ok(tls) => Box::new(tls),
                Err(_) => return,
            }
        }
        _ => Box::new(stream),
    };
    if ctx.behaviour == Behaviour::Hang {
        hang(io).await;
        return;
    }
    let _ = match ctx.kind {
        FakeKind::Smtp => smtp(io, ctx).await,
        FakeKind::Imap => imap(io, ctx).await,
        FakeKind::Pop3 => pop3(io, ctx).await,
        FakeKind::Http | FakeKind::Mapi => http(io, ctx).await,
        FakeKind::Echo => echo(io, ctx).await,
    };
}

/// Reads a PROXY header byte by byte (so nothing after it is consumed); `None` drops
/// the connection, as Postfix and Dovecot do with a missing or bad header.
async fn read_proxy_header(stream: &mut TcpStream, ctx: &SessionCtx) -> Option<()> {
    let mut buf = Vec::with_capacity(64);
    let read = async {
        loop {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
            match crate::proxy_protocol::parse(&buf) {
                Ok(Some((header, _))) => return Some(header),
                Ok(None) if buf.len() < 16 + 65535 => continue,
                _ => return None,
            }
        }
    };
    let header = tokio::time::timeout(PROXY_TIMEOUT, read).await.ok()??;
    *lock(&ctx.stats.last_proxy) = Some(header);
    Some(())
}

/// Accepts and says nothing; input is read and discarded until the peer leaves.
async fn hang(mut io: BoxIo) {
    let mut sink = [0u8; 1024];
    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
}

async fn upgrade(conn: Conn, cfg: &Arc<rustls::ServerConfig>) -> Result<Conn, ProbeError> {
    let io = conn.into_inner()?;
    let tls = tokio_rustls::TlsAcceptor::from(Arc::clone(cfg))
        .accept(io)
        .await
        .map_err(|e| ProbeError::Tls(e.to_string()))?;
    Ok(LineConn::with_cap(Box::new(tls), FAKE_MAX_LINE))
}

fn verb_of(line: &str) -> (String, &str) {
    let line = line.trim_end();
    match line.split_once(' ') {
        Some((v, rest)) => (v.to_ascii_uppercase(), rest),
        None => (line.to_ascii_uppercase(), ""),
    }
}

async fn smtp(io: BoxIo, ctx: &SessionCtx) -> Res {
    let mut c = LineConn::with_cap(io, FAKE_MAX_LINE);
    let banner = &ctx.banner;
    if ctx.behaviour == Behaviour::BadGreeting {
        c.send(b"554 5.3.2 busy\r\n", "greeting").await?;
        loop {
            let (verb, _) = verb_of(&c.read_line("command").await?);
            if verb == "QUIT" {
                ctx.stats.bump(&ctx.stats.completed);
                return c.send(b"221 2.0.0 Bye\r\n", "QUIT").await;
            }
            c.send(b"503 5.5.1 Error: busy\r\n", "command").await?;
        }
    }
    c.send(format!("220 {banner} ESMTP\r\n").as_bytes(), "greeting")
        .await?;
    let mut starttls = ctx.options.starttls.clone();
    loop {
        let line = c.read_line("command").await?;
        if ctx.behaviour == Behaviour::DieMidSession {
            return Ok(());
        }
        let (verb, _) = verb_of(&line);
        match verb.as_str() {
            "EHLO" => {
                let mut r = format!("250-{banner}\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n");
                if starttls.is_some() {
                    r.push_str("250-STARTTLS\r\n");
                }
                r.push_str("250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n");
                c.send(r.as_bytes(), "EHLO").await?;
            }
            "HELO" => {
                c.send(format!("250 {banner}\r\n").as_bytes(), "HELO")
                    .await?
            }
            "STARTTLS" => match starttls.take() {
                Some(cfg) => {
                    c.send(b"220 2.0.0 Ready to start TLS\r\n", "STARTTLS")
                        .await?;
                    c = upgrade(c, &cfg).await?;
                }
                None => {
                    c.send(b"502 5.5.1 STARTTLS not available\r\n", "STARTTLS")
                        .await?
                }
            },
            "MAIL" => c.send(b"250 2.1.0 Ok\r\n", "MAIL").await?,
            "RCPT" => c.send(b"250 2.1.5 Ok\r\n", "RCPT").await?,
            "DATA" => {
                c.send(b"354 End data with <CR><LF>.<CR><LF>\r\n", "DATA")
                    .await?;
                while c.read_line("DATA").await? != "." {}
                ctx.stats.bump(&ctx.stats.messages);
                let n = ctx.stats.messages.load(std::sync::atomic::Ordering::SeqCst);
                c.send(
                    format!("250 2.0.0 Ok: queued as {banner}-{n}\r\n").as_bytes(),
                    "DATA",
                )
                .await?;
            }
            "RSET" | "NOOP" => c.send(b"250 2.0.0 Ok\r\n", "command").await?,
            "VRFY" => c.send(b"252 2.0.0 Cannot VRFY\r\n", "VRFY").await?,
            "QUIT" => {
                ctx.stats.bump(&ctx.stats.completed);
                c.send(b"221 2.0.0 Bye\r\n", "QUIT").await?;
                c.shutdown().await;
                return Ok(());
            }
            _ => {
                c.send(b"502 5.5.2 Error: command not recognized\r\n", "command")
                    .await?
            }
        }
    }
}

async fn imap(io: BoxIo, ctx: &SessionCtx) -> Res {
    let mut c = LineConn::with_cap(io, FAKE_MAX_LINE);
    let banner = &ctx.banner;
    if ctx.behaviour == Behaviour::BadGreeting {
        c.send(b"* BYE busy\r\n", "greeting").await?;
        c.shutdown().await;
        return Ok(());
    }
    c.send(format!("* OK {banner} ready\r\n").as_bytes(), "greeting")
        .await?;
    let mut starttls = ctx.options.starttls.clone();
    loop {
        let line = c.read_line("command").await?;
        if ctx.behaviour == Behaviour::DieMidSession {
            return Ok(());
        }
        let Some((tag, rest)) = line.split_once(' ') else {
            c.send(b"* BAD missing command\r\n", "command").await?;
            continue;
        };
        let (verb, _) = verb_of(rest);
        match verb.as_str() {
            "CAPABILITY" => {
                let tls = if starttls.is_some() { " STARTTLS" } else { "" };
                let r = format!(
                    "* CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+{tls} AUTH=PLAIN\r\n{tag} OK CAPABILITY completed\r\n"
                );
                c.send(r.as_bytes(), "CAPABILITY").await?;
            }
            "STARTTLS" => match starttls.take() {
                Some(cfg) => {
                    c.send(
                        format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes(),
                        "STARTTLS",
                    )
                    .await?;
                    c = upgrade(c, &cfg).await?;
                }
                None => {
                    c.send(
                        format!("{tag} BAD STARTTLS not available\r\n").as_bytes(),
                        "STARTTLS",
                    )
                    .await?
                }
            },
            "NOOP" | "LOGIN" | "ID" | "SELECT" | "EXAMINE" => {
                c.send(
                    format!("{tag} OK {verb} completed\r\n").as_bytes(),
                    "command",
                )
                .await?
            }
            "LOGOUT" => {
                ctx.stats.bump(&ctx.stats.completed);
                let r = format!("* BYE {banner} logging out\r\n{tag} OK LOGOUT completed\r\n");
                c.send(r.as_bytes(), "LOGOUT").await?;
                c.shutdown().await;
                return Ok(());
            }
            _ => {
                c.send(
                    format!("{tag} BAD unknown command\r\n").as_bytes(),
                    "command",
                )
                .await?
            }
        }
    }
}

async fn pop3(io: BoxIo, ctx: &SessionCtx) -> Res {
    let mut c = LineConn::with_cap(io, FAKE_MAX_LINE);
    let banner = &ctx.banner;
    if ctx.behaviour == Behaviour::BadGreeting {
        c.send(b"-ERR busy\r\n", "greeting").await?;
        c.shutdown().await;
        return Ok(());
    }
    c.send(format!("+OK {banner} ready\r\n").as_bytes(), "greeting")
        .await?;
    let mut starttls = ctx.options.starttls.clone();
    loop {
        let line = c.read_line("command").await?;
        if ctx.behaviour == Behaviour::DieMidSession {
            return Ok(());
        }
        let (verb, _) = verb_of(&line);
        match verb.as_str() {
            "CAPA" => {
                let tls = if starttls.is_some() { "STLS\r\n" } else { "" };
                let r = format!("+OK Capability list follows\r\nUSER\r\nUIDL\r\n{tls}.\r\n");
                c.send(r.as_bytes(), "CAPA").await?;
            }
            "STLS" => match starttls.take() {
                Some(cfg) => {
                    c.send(b"+OK Begin TLS negotiation\r\n", "STLS").await?;
                    c = upgrade(c, &cfg).await?;
                }
                None => c.send(b"-ERR STLS not available\r\n", "STLS").await?,
            },
            "USER" | "PASS" | "NOOP" | "RSET" => c.send(b"+OK\r\n", "command").await?,
            "STAT" => c.send(b"+OK 0 0\r\n", "STAT").await?,
            "QUIT" => {
                ctx.stats.bump(&ctx.stats.completed);
                c.send(format!("+OK {banner} signing off\r\n").as_bytes(), "QUIT")
                    .await?;
                c.shutdown().await;
                return Ok(());
            }
            _ => c.send(b"-ERR unknown command\r\n", "command").await?,
        }
    }
}

async fn echo(mut io: BoxIo, ctx: &SessionCtx) -> Res {
    if ctx.behaviour == Behaviour::BadGreeting {
        return Ok(());
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = io
            .read(&mut buf)
            .await
            .map_err(|e| ProbeError::Io(e.to_string()))?;
        if n == 0 {
            ctx.stats.bump(&ctx.stats.completed);
            let _ = io.shutdown().await;
            return Ok(());
        }
        if ctx.behaviour == Behaviour::DieMidSession {
            return Ok(());
        }
        io.write_all(&buf[..n])
            .await
            .map_err(|e| ProbeError::Io(e.to_string()))?;
    }
}

async fn http(mut io: BoxIo, ctx: &SessionCtx) -> Res {
    if ctx.behaviour == Behaviour::DieMidSession {
        // Read the request head, then vanish without an answer.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            match io.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        return Ok(());
    }
    let ctx2 = ctx.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = ctx2.clone();
        async move { Ok::<_, Infallible>(respond(req, &ctx).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await
        .map_err(|e| ProbeError::Io(e.to_string()))
}

async fn respond(req: Request<Incoming>, ctx: &SessionCtx) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    // Drain the request body so keep-alive works; its content is not used.
    let _ = body.collect().await;
    *lock(&ctx.stats.last_request) = Some(RequestInfo {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
    });
    ctx.stats.bump(&ctx.stats.requests);
    let bad = ctx.behaviour == Behaviour::BadGreeting;
    let mut builder = Response::builder()
        .header("x-backend", ctx.banner.as_str())
        .header("content-type", "text/plain");
    let status;
    if ctx.kind == FakeKind::Mapi {
        status = if bad {
            200
        } else {
            ctx.options.http_status.unwrap_or(200)
        };
        builder = builder.header("x-responsecode", if bad { "9" } else { "0" });
        for name in ["x-requesttype", "x-requestid", "x-clientinfo"] {
            if let Some(v) = parts.headers.get(name) {
                builder = builder.header(name, v.clone());
            }
        }
    } else {
        status = if bad {
            503
        } else {
            ctx.options.http_status.unwrap_or(200)
        };
    }
    let body = if bad {
        "busy".to_string()
    } else {
        ctx.banner.clone()
    };
    ctx.stats.bump(&ctx.stats.completed);
    builder
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
