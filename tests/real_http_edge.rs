//! The L7 edge next to real peers: a backend's 103 Early Hints reaches the client
//! through Portico exactly as it does through HAProxy (before the final response,
//! while the backend still holds it), over HTTP/1.1 and to curl over HTTP/2, and
//! with `allow_connect` a CONNECT crosses
//! Portico to a real forward proxy (tinyproxy) and tunnels to a TCP service, as it
//! does when sent to tinyproxy directly.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::real::haproxy;
use common::{free_port, poll, tool, wait_listening, Daemon, Echo, Portico, TempDir};

const LIMIT: Duration = Duration::from_secs(10);

/// A backend that answers each request with a 103 at once and its 200 only when the
/// test releases it (one permit per request).
fn hinting_backend() -> (SocketAddr, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Arc::new(Mutex::new(rx));
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let rx = Arc::clone(&rx);
            // Probes connect and leave; requests wait for their permit.
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(LIMIT));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let hint = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
                if s.write_all(hint).is_err() {
                    return;
                }
                let released = rx.lock().map(|r| r.recv_timeout(LIMIT).is_ok());
                if released.unwrap_or(false) {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfinal",
                    );
                }
            });
        }
    });
    (addr, tx)
}

/// Reads from `s` until `out` contains `until`, or fails the test after [`LIMIT`].
fn read_until(s: &mut TcpStream, out: &mut Vec<u8>, until: &[u8]) {
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut buf = [0u8; 1024];
    while !out.windows(until.len()).any(|w| w == until) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => panic!(
                "waited for {:?}, got {:?}",
                String::from_utf8_lossy(until),
                String::from_utf8_lossy(out)
            ),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A GET through the front at `port`: the interim block that arrived while the
/// backend held its final response (status line and lower-cased fields), then the
/// final response's status line and body.
fn hinted_get(port: u16, release: &mpsc::Sender<()>) -> (Vec<String>, String, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.write_all(b"GET /page HTTP/1.1\r\nHost: webmail.example.test\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    read_until(&mut c, &mut out, b"\r\n\r\n");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (interim, early_rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(early_rest.is_empty(), "nothing after the 103 yet: {text:?}");
    let interim: Vec<String> = interim
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l.to_string()
            } else {
                l.to_ascii_lowercase()
            }
        })
        .collect();
    release.send(()).expect("backend");
    let mut rest = Vec::new();
    read_until(&mut c, &mut rest, b"final");
    let rest = String::from_utf8_lossy(&rest).into_owned();
    let status = rest.lines().next().unwrap_or("").to_string();
    let body = rest.rsplit_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (interim, status, body)
}

fn http_vip(dir: &TempDir, vip: u16, backend: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[admin]
socket = "{sock}"

[[vip]]
name = "web"
mode = "http"
listen = "127.0.0.1:{vip}"
backends = [ {{ name = "b1", address = "{backend}" }} ]
probe = {{ kind = "tcp", interval = "300ms", timeout = "250ms", rise = 1, fall = 2 }}
{extra}
"#,
        sock = dir.path("admin.sock").display(),
    )
}

fn wait_up(portico: &Portico) {
    let up = poll(LIMIT, || {
        portico
            .ctl("show backends web")
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("up"))
            .then_some(())
    });
    assert!(up.is_some(), "{}", portico.ctl("show backends"));
}

#[test]
fn early_hints_reach_the_client_as_they_do_through_haproxy() {
    let dir = TempDir::new("early-hints");
    let (backend, release) = hinting_backend();
    let (vip, front) = (free_port(), free_port());
    let portico = Portico::start(&dir, &http_vip(&dir, vip, backend, ""));
    wait_up(&portico);

    let Some(_haproxy) = haproxy(
        &dir,
        &format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend web\n    bind 127.0.0.1:{front}\n    default_backend b\n\
             backend b\n    server b1 {backend}\n"
        ),
        front,
    ) else {
        return;
    };

    let reference = hinted_get(front, &release);
    assert_eq!(
        reference.0,
        [
            "HTTP/1.1 103 Early Hints",
            "link: </style.css>; rel=preload"
        ],
        "HAProxy relays the hint early"
    );
    let ours = hinted_get(vip, &release);
    assert_eq!(ours.0, reference.0, "the same interim response, as early");
    assert_eq!(ours.1, "HTTP/1.1 200 OK");
    assert_eq!((ours.1, ours.2), (reference.1, reference.2));
}

/// A GET by curl over HTTP/2 (prior knowledge) through the front at `port`: the
/// response lines curl printed (`-v`: status lines, lower-cased fields) before the
/// final response, then the final status line and the body. The backend is released
/// only once curl has printed a `link` field (curl prints no empty line after an
/// HTTP/2 interim response), so whatever came with it arrived early.
fn curl_h2_hinted_get(
    curl: &Path,
    port: u16,
    release: &mpsc::Sender<()>,
) -> (Vec<String>, String, String) {
    let mut child = Command::new(curl)
        .args(["-sS", "-v", "--http2-prior-knowledge", "-m", "10"])
        .args(["-H", "Host: webmail.example.test"])
        .arg(format!("http://127.0.0.1:{port}/page"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            // Response lines, `< ` stripped.
            let Some(l) = line.strip_prefix('<').map(str::trim) else {
                continue;
            };
            let l = if l.starts_with("HTTP/") {
                l.to_string()
            } else {
                l.to_ascii_lowercase()
            };
            if !l.is_empty() && tx.send(l).is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    while !got.iter().any(|l: &String| l.starts_with("link:")) {
        match lines.recv_timeout(LIMIT) {
            Ok(l) => got.push(l),
            Err(_) => panic!("no early link field from curl in time: {got:?}"),
        }
    }
    release.send(()).expect("backend");
    let mut body = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut body)
        .expect("body");
    got.extend(lines.iter());
    let _ = reader.join();
    assert!(
        child.wait().expect("curl").success(),
        "curl failed: {got:?}"
    );
    let at = got
        .iter()
        .position(|l| {
            l.starts_with("HTTP/")
                && l.split_whitespace()
                    .nth(1)
                    .is_some_and(|code| !code.starts_with('1'))
        })
        .unwrap_or(got.len());
    let status = got.get(at).cloned().unwrap_or_default();
    got.truncate(at);
    (got, status, body)
}

#[test]
fn early_hints_reach_curl_over_http2() {
    let Some(curl) = tool("curl") else {
        return;
    };
    let dir = TempDir::new("early-hints-h2");
    let (backend, release) = hinting_backend();
    let vip = free_port();
    let portico = Portico::start(&dir, &http_vip(&dir, vip, backend, ""));
    wait_up(&portico);

    let (early, status, body) = curl_h2_hinted_get(&curl, vip, &release);
    assert_eq!(
        early,
        ["HTTP/2 103", "link: </style.css>; rel=preload"],
        "the hint, while the backend holds its final response"
    );
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/2 200", "final"));
}

#[test]
fn connect_tunnels_through_to_a_real_forward_proxy() {
    let Some(tinyproxy) = tool("tinyproxy") else {
        return;
    };
    let dir = TempDir::new("connect-tinyproxy");
    let echo = Echo::start();
    let proxy_port = free_port();
    let conf = dir.path("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {proxy_port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 16\nAllow 127.0.0.1\nLogLevel Info\n"
        ),
    )
    .unwrap();
    let _tinyproxy = Daemon::spawn(
        Command::new(tinyproxy)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    assert!(wait_listening(proxy, LIMIT), "tinyproxy did not start");

    let vip = free_port();
    let portico = Portico::start(&dir, &http_vip(&dir, vip, proxy, "allow_connect = true"));
    wait_up(&portico);

    let tunnel = |port: u16| -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let target = echo.addr;
        c.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .expect("write");
        let mut head = Vec::new();
        read_until(&mut c, &mut head, b"\r\n\r\n");
        let head = String::from_utf8_lossy(&head).into_owned();
        for line in ["ehlo client.example.test\r\n", "quit\r\n"] {
            c.write_all(line.as_bytes()).expect("write");
            let mut echoed = Vec::new();
            read_until(&mut c, &mut echoed, line.as_bytes());
        }
        head.lines().next().unwrap_or("").to_string()
    };
    let direct = tunnel(proxy_port);
    assert!(direct.contains(" 200 "), "tinyproxy tunnels: {direct}");
    let ours = tunnel(vip);
    assert!(ours.starts_with("HTTP/1.1 200"), "{ours}");

    // Without the option the same CONNECT is refused before tinyproxy sees it.
    drop(portico);
    let dir2 = TempDir::new("connect-refused");
    let vip2 = free_port();
    let portico = Portico::start(&dir2, &http_vip(&dir2, vip2, proxy, ""));
    wait_up(&portico);
    let mut c = TcpStream::connect(("127.0.0.1", vip2)).expect("connect");
    c.write_all(format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", echo.addr).as_bytes())
        .expect("write");
    let mut head = Vec::new();
    read_until(&mut c, &mut head, b"\r\n\r\n");
    assert!(
        head.starts_with(b"HTTP/1.1 405 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
}
