//! The cluster layer over real UDP on loopback: members see each other's keys, and
//! datagrams with a wrong secret or from a node outside the member list are dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shared::cluster::Cluster;
use shared::config::{ClusterConfig, MemberConfig};
use tokio::time::Instant;

fn free_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr")
}

fn secret(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write secret");
    p
}

fn cfg(node: &str, members: &[(&str, SocketAddr)], secret_file: PathBuf) -> ClusterConfig {
    let me = members.iter().find(|(id, _)| *id == node).map(|m| m.1);
    ClusterConfig {
        id: "lab".into(),
        node: node.into(),
        listen: me.unwrap_or_else(free_port),
        secret_file,
        gossip_interval: Duration::from_millis(100),
        stale_after: Duration::from_secs(1),
        members: members
            .iter()
            .map(|(id, address)| MemberConfig {
                id: id.to_string(),
                address: *address,
                vantage: true,
                pod: None,
            })
            .collect(),
    }
}

/// Polls `f` every 20 ms until it holds or `within` passes.
async fn until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[tokio::test]
async fn forged_and_stranger_datagrams_are_rejected_while_members_agree() {
    let dir = std::env::temp_dir().join(format!("portico-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = secret(&dir, "good", "0123456789abcdef0123456789abcdef\n");
    let bad = secret(&dir, "bad", "ffffffffffffffffffffffffffffffff\n");
    let (a, b, c) = (free_port(), free_port(), free_port());
    let members = [("a", a), ("b", b), ("c", c)];

    let na = Cluster::start(&cfg("a", &members, good.clone()))
        .await
        .expect("a");
    let nb = Cluster::start(&cfg("b", &members, good.clone()))
        .await
        .expect("b");
    // "c" is a configured member id, but this process does not know the secret.
    let forger = Cluster::start(&cfg("c", &members, bad))
        .await
        .expect("forger");
    // "mallory" knows the secret but is not in anyone's member list.
    let mallory_addr = free_port();
    let mut mallory_members = members.to_vec();
    mallory_members.push(("mallory", mallory_addr));
    let stranger = Cluster::start(&cfg("mallory", &mallory_members, good))
        .await
        .expect("stranger");

    na.publish("view/dc1", "up".into());
    forger.publish("view/dc1", "down".into());
    stranger.publish("view/dc1", "down".into());

    let rb = nb.watch();
    let seen = until(Duration::from_secs(10), || {
        rb.borrow()
            .member("a")
            .is_some_and(|m| m.keys.get("view/dc1").map(String::as_str) == Some("up"))
    })
    .await;
    assert!(seen, "b never saw a's key: {:?}", rb.borrow());
    // The forger and the stranger gossip to b's seed address every round.
    let rejected = until(Duration::from_secs(10), || nb.rejected() >= 4).await;
    assert!(rejected, "b rejected only {} datagrams", nb.rejected());
    let view = rb.borrow().clone();
    let c_view = view.member("c").expect("c is configured");
    assert!(
        c_view.keys.is_empty() && c_view.last_contact.is_none(),
        "{c_view:?}"
    );
    assert!(view.member("mallory").is_none());
    // The failure detector marks a live after a few heartbeats, not at the first key.
    let alive = until(Duration::from_secs(10), || {
        nb.show()
            .iter()
            .any(|l| l.starts_with("a ") && l.contains(" alive "))
    })
    .await;
    assert!(alive, "{:?}", nb.show());

    for n in [na, nb, forger, stranger] {
        n.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
