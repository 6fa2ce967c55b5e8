//! `access_log = true`: one `portico::access` JSON line per L7 request (backend,
//! status, method, host, path, body bytes) and per L4 connection (backend, bytes each
//! way, how it ended), read back from the running binary's `--log-format json` output.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::config::{Config, Vip, FAST};
use common::{
    echo_roundtrip, free_port, poll, request_in_flight, Echo, Portico, SlowHttp, TempDir,
};

/// The access lines logged so far, parsed.
fn access_lines(p: &Portico) -> Vec<serde_json::Value> {
    p.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "portico::access")
        .collect()
}

#[test]
fn requests_and_connections_are_logged_with_backend_status_and_bytes() {
    let echo = Echo::start();
    let web = SlowHttp::start();
    let dir = TempDir::new("access-log");
    let (pt, pw) = (free_port(), free_port());
    let config = Config::admin(&dir)
        .vip(
            Vip::new("imap", format!("127.0.0.1:{pt}"))
                .with("access_log = true")
                .backend("imap1", echo.addr)
                .probe("tcp", FAST),
        )
        .vip(
            Vip::new("webmail", format!("127.0.0.1:{pw}"))
                .mode("http")
                .with("access_log = true")
                .backend("web1", web.addr)
                .probe("tcp", FAST),
        )
        .render();
    let p = Portico::start_with(&dir, &config, &[], &["--log-format", "json"]);

    // L7: one request, answered by the backend once it has arrived.
    let request = request_in_flight(
        pw,
        b"GET /owa/?ae=Folder HTTP/1.1\r\nHost: webmail.example.test\r\nConnection: close\r\n\r\n",
    );
    web.arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("the request reached the backend");
    web.release_one();
    let reply = request.join().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // L4: one session with a 6-byte line each way.
    {
        let mut s = TcpStream::connect(("127.0.0.1", pt)).unwrap();
        assert!(echo_roundtrip(&mut s, b"hello\n"));
    }

    let lines = poll(Duration::from_secs(10), || {
        let lines = access_lines(&p);
        let req = lines.iter().any(|l| l["vip"] == "webmail");
        let conn = lines.iter().any(|l| l["vip"] == "imap");
        (req && conn).then_some(lines)
    })
    .unwrap_or_else(|| panic!("no access lines for both VIPs:\n{}", p.log_text()));

    let req = lines.iter().find(|l| l["vip"] == "webmail").unwrap();
    assert_eq!(req["backend"], "web1", "{req}");
    assert_eq!(req["status"], 200, "{req}");
    assert_eq!(req["method"], "GET", "{req}");
    assert_eq!(req["host"], "webmail.example.test", "{req}");
    assert_eq!(req["path"], "/owa/?ae=Folder", "{req}");
    assert_eq!(req["bytes"], 4, "the backend's body was 4 bytes: {req}");
    assert_eq!(req["aborted"], false, "{req}");
    assert_eq!(req["retries"], 0, "{req}");
    assert!(
        req["client"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{req}"
    );
    assert!(req["duration_ms"].as_u64().is_some(), "{req}");

    let conn = lines.iter().find(|l| l["vip"] == "imap").unwrap();
    assert_eq!(conn["backend"], "imap1", "{conn}");
    assert_eq!(conn["to_backend"], 6, "{conn}");
    assert_eq!(conn["to_client"], 6, "{conn}");
    assert_eq!(conn["end"], "closed", "{conn}");
}

/// Writes `bytes` to the VIP and reads its answer until it closes (or 5 s pass).
fn exchange(port: u16, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn refused_requests_and_client_faults_are_logged_and_counted_as_client_errors() {
    let web = SlowHttp::start();
    let dir = TempDir::new("access-log-refused");
    let (ph, pw) = (free_port(), free_port());
    let config = Config::admin(&dir)
        .http(ph)
        .vip(
            Vip::new("webmail", format!("127.0.0.1:{pw}"))
                .mode("http")
                .with("access_log = true")
                .with("max_headers = 20")
                .backend("web1", web.addr)
                .probe("tcp", FAST),
        )
        .render();
    let p = Portico::start_with(&dir, &config, &[], &["--log-format", "json"]);
    assert!(common::wait_listening(
        format!("127.0.0.1:{pw}").parse().unwrap(),
        Duration::from_secs(10)
    ));

    // Refused by the proxy: two Host headers.
    let r = exchange(
        pw,
        b"GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Refused by hyper before the proxy saw a request: a broken head, too many headers.
    let r = exchange(pw, b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..30 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = exchange(pw, many.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // The client's broken upload, after the request reached the backend.
    let r = exchange(
        pw,
        b"POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n-1\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");

    let lines = poll(Duration::from_secs(10), || {
        let lines = access_lines(&p);
        (lines.iter().filter(|l| l["vip"] == "webmail").count() >= 4).then_some(lines)
    })
    .unwrap_or_else(|| panic!("expected four access lines:\n{}", p.log_text()));
    let find = |f: &dyn Fn(&serde_json::Value) -> bool| {
        lines
            .iter()
            .find(|l| f(l))
            .unwrap_or_else(|| panic!("no such line in {lines:#?}"))
            .clone()
    };
    let host = find(&|l| l["path"] == "/a");
    assert_eq!(host["status"], 400, "{host}");
    assert_eq!(host["backend"], "-", "{host}");
    assert_eq!(host["method"], "GET", "{host}");
    let unparsed = lines
        .iter()
        .filter(|l| l["method"] == "-" && l["status"] == 400)
        .count();
    assert_eq!(
        unparsed, 1,
        "only the broken head is logged as one: {lines:#?}"
    );
    let head = find(&|l| l["method"] == "-" && l["status"] == 400);
    assert_eq!(head["backend"], "-", "{head}");
    let large = find(&|l| l["status"] == 431);
    assert_eq!(large["backend"], "-", "{large}");
    let upload = find(&|l| l["path"] == "/upload");
    assert_eq!(upload["status"], 400, "{upload}");
    assert_eq!(upload["method"], "POST", "{upload}");

    let (code, metrics) =
        common::http_get(format!("127.0.0.1:{ph}").parse().unwrap(), "/metrics").unwrap();
    assert_eq!(code, 200);
    for reason in ["bad_host", "bad_head", "head_too_large", "body"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("portico_http_client_errors_total{")
                    && l.contains("vip=\"webmail\"")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "no client error counted for {reason}:\n{metrics}"
        );
    }
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("portico_http_responses_total{") && l.contains("class=\"5xx\"")),
        "a client's fault is never a 5xx:\n{metrics}"
    );
}
