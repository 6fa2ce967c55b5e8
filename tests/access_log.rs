//! `access_log = true`: one `portico::access` JSON line per L7 request (backend,
//! status, method, host, path, body bytes) and per L4 connection (backend, bytes each
//! way, how it ended), read back from the running binary's `--log-format json` output.

mod common;

use std::net::TcpStream;
use std::time::Duration;

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
    let config = format!(
        r#"[admin]
socket = "{sock}"

[[vip]]
name = "imap"
listen = "127.0.0.1:{pt}"
access_log = true
backends = [ {{ name = "imap1", address = "{e}" }} ]
probe = {{ kind = "tcp", interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[vip]]
name = "webmail"
mode = "http"
listen = "127.0.0.1:{pw}"
access_log = true
backends = [ {{ name = "web1", address = "{w}" }} ]
probe = {{ kind = "tcp", interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}
"#,
        sock = dir.path("admin.sock").display(),
        e = echo.addr,
        w = web.addr,
    );
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
