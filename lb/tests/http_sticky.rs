//! Cookie stickiness: a new client is pinned with `Set-Cookie`, pinned clients stay on
//! their node, a drained node keeps its pinned clients while taking no new ones, and a
//! node in maint or failing its probes loses them to a healthy node (re-pinned); the
//! sticky cookie itself is never forwarded to the backend application.

mod http_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http_support::*;
use lb::{AdminState, Health};
use shared::config::ProbeTiming;
use shared::testing::SwitchProbe;

async fn named(name: &'static str) -> TestBackend {
    backend(move |_req| async move { Response::new(body(name)) }).await
}

fn cookie_of(got: &Got) -> Option<String> {
    let sc = got.header("set-cookie")?;
    let first = sc.split(';').next()?.trim().to_string();
    Some(first)
}

#[tokio::test]
async fn sticky_sessions_survive_drain_and_move_on_maint_or_down() {
    let a = named("a").await;
    let b = named("b").await;
    let mut cfg = vip_config(
        "http",
        &[("a", a.addr), ("b", b.addr)],
        "sticky = { cookie = \"PORTICO_ID\" }",
    );
    cfg.probe.timing = ProbeTiming {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        rise: 1,
        fall: 1,
    };
    let healthy = [
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    ];
    let p = start_with_probes(&cfg, |i| Arc::new(SwitchProbe(healthy[i].clone()))).await;

    // A new client is pinned.
    let first = get(p.addr, "/owa/", &[]).await;
    let set = first.header("set-cookie").expect("set-cookie");
    assert!(set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    let cookie = cookie_of(&first).expect("cookie");
    let home = first.text();
    let other = if home == "a" { "b" } else { "a" };

    // Pinned clients stay, and are not re-pinned.
    for _ in 0..10 {
        let got = get(
            p.addr,
            "/owa/",
            &[("cookie", &format!("lang=en; {cookie}"))],
        )
        .await;
        assert_eq!(got.text(), home);
        assert!(got.header("set-cookie").is_none());
    }

    // Drain: pinned clients keep their node; new clients go elsewhere.
    let home_backend = p.pool.get(&home).expect("home").clone();
    home_backend.set_admin(AdminState::Drain, "test");
    for _ in 0..5 {
        assert_eq!(get(p.addr, "/", &[("cookie", &cookie)]).await.text(), home);
        let fresh = get(p.addr, "/", &[]).await;
        assert_eq!(fresh.text(), other, "a drained node takes no new client");
        assert!(fresh.header("set-cookie").is_some());
    }

    // Maint: pinned clients move and are re-pinned.
    home_backend.set_admin(AdminState::Maint, "test");
    let moved = get(p.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(moved.text(), other);
    let new_cookie = cookie_of(&moved).expect("re-pinned");
    assert_ne!(new_cookie, cookie);

    // Down (probe fails): the same.
    home_backend.set_admin(AdminState::Ready, "test");
    assert!(
        eventually(Duration::from_secs(5), || home_backend.health()
            == Health::Up)
        .await,
        "checker restarted after maint"
    );
    assert_eq!(get(p.addr, "/", &[("cookie", &cookie)]).await.text(), home);
    let home_index = if home == "a" { 0 } else { 1 };
    healthy[home_index].store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || home_backend.health()
            == Health::Down)
        .await,
        "probe marks it down"
    );
    let moved = get(p.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(moved.text(), other);
    assert!(moved.header("set-cookie").is_some());
}

#[tokio::test]
async fn the_sticky_cookie_is_not_forwarded_to_backends() {
    // The application behind the VIP sees its own cookies only.
    let echo = backend(|req| async move {
        let cookies: Vec<String> = req
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        Response::new(body(cookies.join(" | ")))
    })
    .await;
    let cfg = vip_config(
        "http",
        &[("a", echo.addr)],
        "sticky = { cookie = \"PORTICO_ID\" }",
    );
    let p = start(&cfg).await;
    let first = get(p.addr, "/", &[("cookie", "lang=en")]).await;
    assert_eq!(first.text(), "lang=en");
    let cookie = cookie_of(&first).expect("pinned");
    let pinned = get(
        p.addr,
        "/",
        &[("cookie", &format!("lang=en; {cookie}; theme=dark"))],
    )
    .await;
    assert_eq!(pinned.text(), "lang=en; theme=dark");
    assert!(pinned.header("set-cookie").is_none(), "still pinned");
    let only_ours = get(p.addr, "/", &[("cookie", &cookie)]).await;
    assert_eq!(only_ours.text(), "");
}
