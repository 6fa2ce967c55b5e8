//! Header rewriting between client and backend, pure and unit-tested: hop-by-hop
//! removal (RFC 9110 §7.6.1), the forwarding headers backends log and build URLs from
//! (`X-Forwarded-For`/`-Proto`/`-Host` and RFC 7239 `Forwarded`), `Via`, and the
//! sticky cookie lookup.
//!
//! Order matters for safety: hop-by-hop headers are stripped *before* the forwarding
//! headers are appended, so a client sending `Connection: X-Forwarded-For` can remove
//! an upstream proxy's entry but never ours.

use std::net::IpAddr;
use std::sync::Mutex;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::header::{CONNECTION, COOKIE, FORWARDED, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The trimmed, non-empty comma-separated tokens of every `name` header, as sent
/// (compare them with `eq_ignore_ascii_case`); no allocation.
fn tokens<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// True when the message asks to switch protocols (`Connection: upgrade` plus an
/// `Upgrade` header), the only case where `Upgrade` survives the hop. An offer of
/// `h2c` is never relayed: the backends speak HTTP/1.1 to this hop, and a client
/// that wants HTTP/2 gets it from the proxy itself (ALPN or prior knowledge).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && tokens(headers, &CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"))
        && !tokens(headers, &UPGRADE).any(|t| t.eq_ignore_ascii_case("h2c"))
}

/// Whether `v` is a valid `Host` value or `:authority` for a request to this proxy:
/// `host [ ":" port ]` of RFC 3986 (a reg-name, an IPv4 address or a bracketed
/// IPv6 literal; no userinfo, path or whitespace) and at most 255 bytes. Checked on
/// the bytes hyper already holds, without copying.
pub fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() || v.len() > 255 {
        return false;
    }
    let (host, port) = if v[0] == b'[' {
        let Some(end) = v.iter().position(|&c| c == b']') else {
            return false;
        };
        let inner = &v[1..end];
        let ok = !inner.is_empty()
            && inner
                .iter()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'))
            && std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
        if !ok {
            return false;
        }
        match &v[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&v[..0], port),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&c| c == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &v[..0]),
        }
    };
    let reg_name = |c: &u8| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            )
    };
    let host_ok = v[0] == b'[' || (!host.is_empty() && host.iter().all(reg_name));
    let port_ok = port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    // `host:` with an empty port is allowed by RFC 3986, but only where a colon
    // was written.
    host_ok && port_ok
}

/// Joins several `Cookie` headers into one, separated by "; " (RFC 9113 §8.2.3:
/// HTTP/2 clients may split cookies into crumbs, and an HTTP/1.1 backend expects a
/// single line). One header, the usual case, is left alone without allocating.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = Vec::with_capacity(first.len() * 2);
    for v in headers.get_all(COOKIE) {
        let v = v.as_bytes();
        if v.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(COOKIE, v);
    }
}

/// What a request's `Transfer-Encoding` means to this proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferCoding {
    /// None (a `Content-Length` body, or none).
    Absent,
    /// Exactly one coding, `chunked`: the only one relayed.
    Chunked,
    /// Anything else (`gzip, chunked`, `identity, chunked`, ...): never rewritten
    /// into a plain chunked body the backend would misread; answered 501 (RFC 9112
    /// §6.1).
    Unsupported,
}

/// Classifies the request's `Transfer-Encoding` (every header line, every coding).
pub fn transfer_coding(headers: &HeaderMap) -> TransferCoding {
    if !headers.contains_key(TRANSFER_ENCODING) {
        return TransferCoding::Absent;
    }
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&c| c == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    match (codings.next(), codings.next()) {
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => TransferCoding::Chunked,
        _ => TransferCoding::Unsupported,
    }
}

/// Whether the client accepts trailers (`TE: trailers`, RFC 9110 §10.1.4), read before
/// the hop-by-hop headers are stripped.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    tokens(headers, &TE).any(|t| t.eq_ignore_ascii_case("trailers"))
}

const HOP_BY_HOP_COUNT: usize = 7;
/// The fixed hop-by-hop headers (besides those `Connection` names).
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every header it
/// names, `Keep-Alive`, `Proxy-Connection`, `TE` (except `trailers`, which is
/// end-to-end in meaning), `Trailer`, `Transfer-Encoding` and `Upgrade`. With
/// `upgrade`, `Upgrade` is kept and `Connection: upgrade` re-added so the next hop
/// sees the protocol switch.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry a handful of headers and at most `Connection`: one pass
    // over the names (standard names compare as enum tags) finds which of the fixed
    // set are present, and only those are looked up for removal.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        if upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    // Headers `Connection` names, beyond the fixed set. `Connection: host` would strip
    // the request target: never honoured.
    let mut named: Vec<HeaderName> = Vec::new();
    for t in tokens(headers, &CONNECTION) {
        if t.eq_ignore_ascii_case("host")
            || t.eq_ignore_ascii_case("keep-alive")
            || t.eq_ignore_ascii_case("close")
        {
            continue;
        }
        if let Ok(h) = HeaderName::from_bytes(t.as_bytes()) {
            if !(upgrade && h == UPGRADE) {
                named.push(h);
            }
        }
    }
    let te_trailers = tokens(headers, &TE).any(|t| t.eq_ignore_ascii_case("trailers"));
    for h in named {
        headers.remove(h);
    }
    for (h, there) in HOP_BY_HOP.iter().zip(present) {
        // `Upgrade` goes below, unless the message switches protocols.
        if there && *h != UPGRADE {
            headers.remove(h);
        }
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Writes the RFC 7239 node: IPv4 bare, IPv6 bracketed and quoted.
fn write_forwarded_node(out: &mut String, ip: IpAddr) {
    use std::fmt::Write as _;
    let _ = match ip {
        IpAddr::V4(v4) => write!(out, "{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => write!(out, "{v4}"),
            None => write!(out, "\"[{v6}]\""),
        },
    };
}

/// Writes the client address as `X-Forwarded-For` carries it (IPv4-mapped IPv6
/// unwrapped).
fn write_xff_node(out: &mut String, ip: IpAddr) {
    use std::fmt::Write as _;
    let _ = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => write!(out, "{v4}"),
            None => write!(out, "{v6}"),
        },
        IpAddr::V4(v4) => write!(out, "{v4}"),
    };
}

/// Writes a `Forwarded` parameter value: a token as is, anything else quoted (RFC
/// 7230 quoted-string with `"` and `\` escaped).
fn write_forwarded_value(out: &mut String, v: &str) {
    let is_tchar = |c: u8| matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'..=b'`' | b'|' | b'~');
    if !v.is_empty() && v.bytes().all(is_tchar) {
        out.push_str(v);
    } else {
        out.reserve(v.len() + 2);
        out.push('"');
        // Runs without `"` or `\` are copied whole.
        let mut rest = v;
        while let Some(i) = rest.find(['"', '\\']) {
            out.push_str(&rest[..i]);
            out.push('\\');
            out.push_str(&rest[i..=i]);
            rest = &rest[i + 1..];
        }
        out.push_str(rest);
        out.push('"');
    }
}

/// A header value made from `s` without another copy (validated like `from_str`).
fn value_of(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// Replaces every value of `name` with one comma-separated header: the existing
/// values (an incoming chain may arrive split over several header lines) followed by
/// `ours`.
fn append_list(headers: &mut HeaderMap, name: HeaderName, ours: &str) {
    let mut joined = String::new();
    for v in headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        let v = v.trim();
        if !v.is_empty() {
            joined.push_str(v);
            joined.push_str(", ");
        }
    }
    if joined.is_empty() {
        // Nothing to join: the owned value, without a copy.
        if let Ok(v) = HeaderValue::from_str(ours) {
            headers.insert(name, v);
        }
        return;
    }
    joined.push_str(ours);
    if let Some(v) = value_of(joined) {
        headers.insert(name, v);
    } else if let Ok(v) = HeaderValue::from_str(ours) {
        headers.insert(name, v);
    }
}

/// The forwarding headers' parts that depend only on the client connection,
/// rendered once per connection rather than formatted for every request on it.
#[derive(Debug)]
pub struct Forwarding {
    /// The client as `X-Forwarded-For` carries it.
    xff: HeaderValue,
    /// `for=…;proto=…`: the `Forwarded` element without its `host`.
    forwarded: String,
    /// `X-Forwarded-Proto`.
    proto: Option<HeaderValue>,
    /// The last request's `Host` and the `Forwarded` value rendered for it: requests
    /// on one connection nearly always name the same host.
    last: Mutex<Option<(HeaderValue, HeaderValue)>>,
}

impl Forwarding {
    /// The parts for a client at `ip` that reached the VIP over `proto`.
    pub fn new(ip: IpAddr, proto: &str) -> Self {
        let mut xff = String::with_capacity(48);
        write_xff_node(&mut xff, ip);
        let xff = value_of(xff).unwrap_or_else(|| HeaderValue::from_static("unknown"));
        let mut forwarded = String::with_capacity(64);
        forwarded.push_str("for=");
        write_forwarded_node(&mut forwarded, ip);
        forwarded.push_str(";proto=");
        write_forwarded_value(&mut forwarded, proto);
        let proto = match proto {
            "http" => Some(HeaderValue::from_static("http")),
            "https" => Some(HeaderValue::from_static("https")),
            other => HeaderValue::from_str(other).ok(),
        };
        Forwarding {
            xff,
            forwarded,
            proto,
            last: Mutex::new(None),
        }
    }

    /// Puts the client in `X-Forwarded-For` and `Forwarded`: appended to the chain
    /// the request brought with `append` (the peer is a proxy whose word is trusted),
    /// replacing it otherwise (a client on the Internet can write anything there).
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are always set to this request's
    /// (client-supplied values describe this hop, which only the proxy knows).
    pub fn apply(&self, headers: &mut HeaderMap, host: Option<&HeaderValue>, append: bool) {
        if append && headers.contains_key(X_FORWARDED_FOR) {
            let ours = self.xff.to_str().unwrap_or("unknown");
            append_list(headers, X_FORWARDED_FOR, ours);
        } else {
            headers.insert(X_FORWARDED_FOR, self.xff.clone());
        }
        let ours = self.forwarded_for(host);
        if append && headers.contains_key(FORWARDED) {
            append_list(headers, FORWARDED, ours.to_str().unwrap_or(&self.forwarded));
        } else {
            headers.insert(FORWARDED, ours);
        }
        if let Some(v) = &self.proto {
            headers.insert(X_FORWARDED_PROTO, v.clone());
        }
        match host {
            Some(v) => {
                headers.insert(X_FORWARDED_HOST, v.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }

    /// Our `Forwarded` element for a request to `host`, from the cache when the
    /// connection's previous request named the same host.
    fn forwarded_for(&self, host: Option<&HeaderValue>) -> HeaderValue {
        let mut last = crate::sync::lock(&self.last);
        if let (Some((h, v)), Some(host)) = (last.as_ref(), host) {
            if h == host {
                return v.clone();
            }
        }
        let host_str = host.and_then(|h| h.to_str().ok());
        let mut fwd =
            String::with_capacity(self.forwarded.len() + 8 + host_str.map_or(0, str::len));
        fwd.push_str(&self.forwarded);
        if let Some(h) = host_str {
            fwd.push_str(";host=");
            write_forwarded_value(&mut fwd, h);
        }
        let v = value_of(fwd).unwrap_or_else(|| HeaderValue::from_static("for=unknown"));
        if let Some(host) = host {
            *last = Some((host.clone(), v.clone()));
        }
        v
    }
}

/// Appends this hop to `Via` (`1.1 portico`, `2 portico`).
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let v = match version {
        http::Version::HTTP_2 => "2 portico",
        http::Version::HTTP_10 => "1.0 portico",
        _ => "1.1 portico",
    };
    append_list(headers, VIA, v);
}

/// The value of cookie `name` in the request's `Cookie` headers (HTTP/2 clients may
/// split cookies over several headers).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// Removes cookie `name` from the request's `Cookie` headers (other cookies keep
/// their order; a header left empty goes), so the sticky cookie, which only this hop
/// reads, is not handed to the backend application as one of its own.
pub fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let is_ours = |pair: &str| pair.split_once('=').is_some_and(|(k, _)| k.trim() == name);
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if !values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(';').any(is_ours))
    {
        return;
    }
    headers.remove(COOKIE);
    for v in values {
        let Ok(text) = v.to_str() else {
            headers.append(COOKIE, v);
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty() && !is_ours(p))
            .collect();
        if kept.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.append(COOKIE, v);
        }
    }
}

/// `NAME=VALUE; Path=/; HttpOnly` (+ `; Secure` for HTTPS VIPs): a session cookie
/// that pins the browser to one backend.
pub fn sticky_set_cookie(name: &str, value: &str, secure: bool) -> Option<HeaderValue> {
    let mut s = format!("{name}={value}; Path=/; HttpOnly");
    if secure {
        s.push_str("; Secure");
    }
    HeaderValue::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_removed_including_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "3"),
            ("host", "mail.example"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept", "host"]);
    }

    #[test]
    fn te_trailers_survives_and_host_is_never_stripped() {
        let mut h = map(&[
            ("te", "trailers, deflate"),
            ("connection", "host, te"),
            ("host", "a"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get(TE).expect("te"), "trailers");
        assert_eq!(h.get("host").expect("host"), "a");
    }

    #[test]
    fn upgrade_kept_when_upgrading() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(UPGRADE).expect("upgrade"), "websocket");
        assert_eq!(h.get(CONNECTION).expect("connection"), "upgrade");
        assert!(h.contains_key("sec-websocket-key"));
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarding_appends_to_chains() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.2, 10.0.0.1"),
            ("forwarded", "for=203.0.113.7;proto=https"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil"),
        ]);
        Forwarding::new("192.0.2.9".parse().expect("ip"), "https").apply(
            &mut h,
            Some(&HeaderValue::from_static("mail.example.com:8443")),
            true,
        );
        assert_eq!(
            h.get(X_FORWARDED_FOR).expect("xff"),
            "203.0.113.7, 198.51.100.2, 10.0.0.1, 192.0.2.9"
        );
        assert_eq!(
            h.get(FORWARDED).expect("fwd"),
            "for=203.0.113.7;proto=https, for=192.0.2.9;proto=https;host=\"mail.example.com:8443\""
        );
        assert_eq!(h.get(X_FORWARDED_PROTO).expect("proto"), "https");
        assert_eq!(
            h.get(X_FORWARDED_HOST).expect("host"),
            "mail.example.com:8443"
        );
    }

    #[test]
    fn one_connection_renders_each_host_correctly() {
        // The per-connection cache must never hand one host's `Forwarded` value to a
        // request for another host, nor leak a previous request's header.
        let f = Forwarding::new("192.0.2.9".parse().expect("ip"), "http");
        let a = HeaderValue::from_static("a.example");
        let b = HeaderValue::from_static("b.example:8080");
        for (host, want) in [
            (Some(&a), "for=192.0.2.9;proto=http;host=a.example"),
            (Some(&a), "for=192.0.2.9;proto=http;host=a.example"),
            (Some(&b), "for=192.0.2.9;proto=http;host=\"b.example:8080\""),
            (None, "for=192.0.2.9;proto=http"),
            (Some(&a), "for=192.0.2.9;proto=http;host=a.example"),
        ] {
            let mut h = map(&[("x-forwarded-host", "stale")]);
            f.apply(&mut h, host, true);
            assert_eq!(h.get(FORWARDED).expect("fwd"), want);
            assert_eq!(h.get(X_FORWARDED_FOR).expect("xff"), "192.0.2.9");
            assert_eq!(h.get(X_FORWARDED_HOST), host);
        }
    }

    #[test]
    fn forwarded_values_escape_quotes_and_backslashes() {
        let mut out = String::new();
        write_forwarded_value(&mut out, "a\"b\\c:1");
        assert_eq!(out, "\"a\\\"b\\\\c:1\"");
        out.clear();
        write_forwarded_value(&mut out, "mail.example.com");
        assert_eq!(out, "mail.example.com");
    }

    #[test]
    fn upgrade_alone_is_stripped_and_clean_heads_untouched() {
        let mut h = map(&[("upgrade", "websocket"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key(UPGRADE));
        assert_eq!(h.len(), 1);
        let mut clean = map(&[("host", "a"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut clean, false);
        assert_eq!(clean.len(), 2);
        strip_hop_by_hop(&mut clean, true);
        assert_eq!(clean.get(CONNECTION).expect("connection"), "upgrade");
    }

    #[test]
    fn sticky_cookie_is_removed_and_the_others_kept() {
        let mut h = map(&[
            ("cookie", "a=1; portico=00ff; b=2"),
            ("cookie", "portico=00ff"),
            ("cookie", "c=3"),
        ]);
        remove_cookie(&mut h, "portico");
        let got: Vec<&str> = h
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(got, ["a=1; b=2", "c=3"]);
        let mut untouched = map(&[("cookie", "portico_x=1;a=2")]);
        remove_cookie(&mut untouched, "portico");
        assert_eq!(untouched.get(COOKIE).expect("cookie"), "portico_x=1;a=2");
    }

    #[test]
    fn ipv6_forwarded_is_quoted_and_bracketed() {
        let mut h = HeaderMap::new();
        Forwarding::new("2001:db8::1".parse().expect("ip"), "http").apply(
            &mut h,
            Some(&HeaderValue::from_static("webmail")),
            true,
        );
        assert_eq!(h.get(X_FORWARDED_FOR).expect("xff"), "2001:db8::1");
        assert_eq!(
            h.get(FORWARDED).expect("fwd"),
            "for=\"[2001:db8::1]\";proto=http;host=webmail"
        );
        let mut h = HeaderMap::new();
        Forwarding::new("::ffff:192.0.2.1".parse().expect("ip"), "http").apply(&mut h, None, true);
        assert_eq!(h.get(X_FORWARDED_FOR).expect("xff"), "192.0.2.1");
        assert_eq!(h.get(FORWARDED).expect("fwd"), "for=192.0.2.1;proto=http");
        assert!(!h.contains_key(X_FORWARDED_HOST));
    }

    #[test]
    fn via_and_cookies() {
        let mut h = map(&[("via", "1.1 edge")]);
        add_via(&mut h, http::Version::HTTP_2);
        assert_eq!(h.get(VIA).expect("via"), "1.1 edge, 2 portico");
        let h = map(&[("cookie", "a=1; PORTICO_ID=abc"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, "PORTICO_ID"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "PORTICO"), None);
        assert_eq!(
            sticky_set_cookie("S", "v", true).expect("hv"),
            "S=v; Path=/; HttpOnly; Secure"
        );
    }

    #[test]
    fn host_values() {
        for ok in [
            "mail.example.com",
            "mail.example.com:8443",
            "192.0.2.1",
            "192.0.2.1:80",
            "[2001:db8::1]",
            "[::1]:443",
            "xn--bcher-kva.example",
            "a:",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "user@mail.example.com",
            "mail.example.com/x",
            "a b",
            "a:b:c",
            "[2001:db8::1",
            "[zz]",
            "[::1]x",
            "a:123456",
            ":80",
            "a\tb",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
        assert!(!valid_host(&[b'a'; 256]));
    }

    #[test]
    fn cookie_crumbs_join_into_one_line() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2; c=3"), ("cookie", "d=4")]);
        join_cookies(&mut h);
        let got: Vec<&HeaderValue> = h.get_all(COOKIE).iter().collect();
        assert_eq!(got, ["a=1; b=2; c=3; d=4"]);
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one.get(COOKIE).expect("cookie"), "a=1");
    }

    #[test]
    fn only_a_lone_chunked_coding_is_relayed() {
        assert_eq!(transfer_coding(&map(&[])), TransferCoding::Absent);
        assert_eq!(
            transfer_coding(&map(&[("transfer-encoding", "Chunked")])),
            TransferCoding::Chunked
        );
        for bad in [
            &[("transfer-encoding", "gzip, chunked")][..],
            &[("transfer-encoding", "identity, chunked")][..],
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ][..],
            &[("transfer-encoding", "chunked, chunked")][..],
            &[("transfer-encoding", "")][..],
        ] {
            assert_eq!(
                transfer_coding(&map(bad)),
                TransferCoding::Unsupported,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn h2c_is_not_an_upgrade_and_forwarding_can_replace() {
        let h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ]);
        assert!(!is_upgrade(&h));
        let mut h = h;
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")]);
        Forwarding::new("192.0.2.9".parse().expect("ip"), "http").apply(&mut h, None, false);
        assert_eq!(h.get(X_FORWARDED_FOR).expect("xff"), "192.0.2.9");
        assert_eq!(h.get(FORWARDED).expect("fwd"), "for=192.0.2.9;proto=http");
        assert!(accepts_trailers(&map(&[("te", "trailers")])));
        assert!(!accepts_trailers(&map(&[("te", "gzip")])));
    }
}
