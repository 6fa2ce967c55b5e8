//! The status page in a real browser (Debian's headless Chromium, driven over the
//! DevTools protocol): it renders VIPs, backends, sites, DNS answers and events from
//! the running process, redraws a backend going down within one refresh interval of
//! Portico noticing, and logs no console error or exception. A screenshot is kept in
//! `target/test-artifacts/status-page.png`.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, free_udp_tcp_port, poll, tool, Echo, Portico, TempDir};
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// The page's refresh interval in this test (`?refresh=` seconds).
const REFRESH: Duration = Duration::from_secs(1);

fn eval_string(tab: &Tab, js: &str) -> Option<String> {
    let v = tab.evaluate(js, false).ok()?.value?;
    v.as_str().map(str::to_string)
}

/// A backend's state as the page shows it now.
fn shown_state(tab: &Tab, backend: &str) -> Option<String> {
    eval_string(
        tab,
        &format!(
            r#"(() => {{ const r = document.querySelector('[data-backend="{backend}"]'); return r ? r.dataset.state : null; }})()"#
        ),
    )
}

#[test]
fn status_page_renders_and_follows_a_backend_going_down() {
    let Some(chromium) = tool("chromium") else {
        return;
    };
    let e1 = Echo::start();
    let e2 = Echo::start();
    let keepalive = Echo::start();
    let dir = TempDir::new("page");
    let (vip, http, dns) = (free_port(), free_port(), free_udp_tcp_port());
    let config = format!(
        r#"
[admin]
socket = "{sock}"

[http]
listen = "127.0.0.1:{http}"

[[vip]]
name = "imap"
listen = "127.0.0.1:{vip}"
backends = [ {{ name = "e1", address = "{a1}" }}, {{ name = "e2", address = "{a2}" }} ]
probe = {{ kind = "tcp", interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

{gss}"#,
        gss = common::one_site_gss(dns, keepalive.addr, "imap", "192.0.2.10"),
        sock = dir.path("admin.sock").display(),
        a1 = e1.addr,
        a2 = e2.addr,
    );
    let p = Portico::start(&dir, &config);
    let backend_state = |name: &str| {
        p.ctl("show backends imap")
            .lines()
            .find(|l| l.starts_with(&format!("imap/{name} ")))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    };
    poll(Duration::from_secs(10), || {
        (backend_state("e1").as_deref() == Some("up")).then_some(())
    })
    .expect("e1 up");

    let profile = dir.path("chromium-profile");
    let args: Vec<&OsStr> = [
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let browser = Browser::new(LaunchOptions {
        path: Some(chromium),
        headless: true,
        sandbox: false,
        window_size: Some((1280, 900)),
        user_data_dir: Some(profile),
        args,
        idle_browser_timeout: Duration::from_secs(60),
        ..LaunchOptions::default()
    })
    .expect("chromium starts");
    let tab = browser.new_tab().expect("tab");
    let problems: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let problems = Arc::clone(&problems);
        tab.add_event_listener(Arc::new(move |event: &Event| {
            let problem = match event {
                Event::RuntimeExceptionThrown(e) => Some(format!("exception: {:?}", e.params)),
                Event::RuntimeConsoleAPICalled(e)
                    if format!("{:?}", e.params.Type).contains("Error") =>
                {
                    Some(format!("console.error: {:?}", e.params.args))
                }
                Event::LogEntryAdded(e)
                    if format!("{:?}", e.params.entry.level).contains("Error") =>
                {
                    Some(format!("log: {}", e.params.entry.text))
                }
                _ => None,
            };
            if let Some(p) = problem {
                problems.lock().unwrap_or_else(|e| e.into_inner()).push(p);
            }
        }))
        .expect("listener");
    }
    tab.enable_runtime().expect("runtime domain");
    tab.enable_log().expect("log domain");
    let url = format!("http://127.0.0.1:{http}/?refresh={}", REFRESH.as_secs());
    tab.navigate_to(&url).expect("navigate");
    tab.wait_until_navigated().expect("loaded");

    // First render: every section filled from the running process.
    poll(Duration::from_secs(10), || {
        (shown_state(&tab, "imap/e1").as_deref() == Some("up")).then_some(())
    })
    .expect("the page shows e1 up");
    assert_eq!(shown_state(&tab, "imap/e2").as_deref(), Some("up"));
    let stale_badge = eval_string(
        &tab,
        r#"getComputedStyle(document.getElementById('stale')).display"#,
    );
    assert_eq!(
        stale_badge.as_deref(),
        Some("none"),
        "no 'unavailable' banner while serving"
    );
    let site = eval_string(
        &tab,
        r#"document.querySelector('[data-site="dc1"]').dataset.state"#,
    );
    assert_eq!(site.as_deref(), Some("up"));
    let answer = eval_string(
        &tab,
        r#"document.querySelector('[data-name="imap.gslb.example.test"]').textContent"#,
    )
    .unwrap_or_default();
    assert!(answer.contains("192.0.2.10"), "{answer}");
    let events = eval_string(
        &tab,
        r#"String(document.querySelectorAll('#events li').length)"#,
    );
    assert!(
        events.is_some_and(|n| n.parse::<usize>().unwrap_or(0) > 0),
        "events listed"
    );

    // e1 dies: once Portico says so, the page follows within one refresh.
    drop(e1);
    poll(Duration::from_secs(10), || {
        (backend_state("e1").as_deref() == Some("down")).then_some(())
    })
    .expect("portico marks e1 down");
    let noticed = Instant::now();
    poll(REFRESH * 3, || {
        (shown_state(&tab, "imap/e1").as_deref() == Some("down")).then_some(())
    })
    .expect("the page shows e1 down");
    let lag = noticed.elapsed();
    assert!(
        lag <= REFRESH + Duration::from_millis(500),
        "the page took {lag:?} to show the change"
    );
    let check = eval_string(
        &tab,
        r#"document.querySelector('[data-backend="imap/e1"] .check').textContent"#,
    )
    .unwrap_or_default();
    assert!(
        check.starts_with("fail:"),
        "the probe's reason is shown: {check}"
    );

    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&out).expect("artifact dir");
    std::fs::write(out.join("status-page.png"), &png).expect("write screenshot");
    assert!(
        png.len() > 10_000,
        "a real screenshot ({} bytes)",
        png.len()
    );

    let problems = problems.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(problems.is_empty(), "console problems: {problems:?}");
}
