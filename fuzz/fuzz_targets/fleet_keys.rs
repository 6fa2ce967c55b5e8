//! A peer's cluster keys as the fleet reads them (`shared::fleet::collect` for
//! `intent/...`, `shared::fleet::replicas` for `applied/...`): any keys and values
//! from any member are taken or skipped cleanly, what is taken fits its key, and
//! taking it again from this node's own encoding changes nothing.
//!
//! Input: lines `M KEY\tVALUE`, where the first byte picks the sending member.
#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shared::cluster::{ClusterView, MemberView};
use shared::config::{ClusterConfig, MemberConfig};
use shared::fleet::{collect, encode, replicas, tally, Scope};
use shared::intent::Key;

const MEMBERS: [(&str, Option<&str>); 4] = [
    ("lb1", Some("pod1")),
    ("lb2", Some("pod1")),
    ("lb9", Some("pod2")),
    ("gss1", None),
];

fn config(node: &str) -> ClusterConfig {
    ClusterConfig {
        id: "fuzz".into(),
        node: node.into(),
        listen: ([127, 0, 0, 1], 1).into(),
        secret_file: "k".into(),
        gossip_interval: Duration::from_millis(100),
        stale_after: Duration::from_secs(1),
        members: MEMBERS
            .iter()
            .map(|(id, pod)| MemberConfig {
                id: id.to_string(),
                address: ([127, 0, 0, 1], 1).into(),
                vantage: pod.is_none(),
                pod: pod.map(str::to_string),
            })
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut keys: BTreeMap<usize, BTreeMap<String, String>> = BTreeMap::new();
    for line in text.lines() {
        let Some(who) = line.bytes().next() else {
            continue;
        };
        let Some((k, v)) = line.get(1..).and_then(|l| l.split_once('\t')) else {
            continue;
        };
        keys.entry(usize::from(who) % MEMBERS.len())
            .or_default()
            .insert(k.trim_start().to_string(), v.to_string());
    }
    let now = tokio::time::Instant::now();
    let view = ClusterView {
        members: MEMBERS
            .iter()
            .enumerate()
            .map(|(i, (id, _))| MemberView {
                id: id.to_string(),
                address: ([127, 0, 0, 1], 1).into(),
                is_self: *id == "lb1",
                alive: true,
                last_contact: Some(now),
                keys: keys.remove(&i).unwrap_or_default(),
            })
            .collect(),
    };
    let scope = Scope::new(&config("lb1"));
    let taken = collect(&view, &scope);
    for (key, entry) in &taken {
        assert!(key.accepts(&entry.value), "{key} holds {:?}", entry.value);
    }
    // What lb2 would publish of the same entries comes back whole.
    let mine = encode(&taken, &Scope::new(&config("lb2")));
    let back = ClusterView {
        members: vec![MemberView {
            id: "lb2".into(),
            address: ([127, 0, 0, 1], 1).into(),
            is_self: false,
            alive: true,
            last_contact: Some(now),
            keys: mine,
        }],
    };
    assert_eq!(collect(&back, &scope), taken);
    // Progress values parse or count as silence.
    let rs = replicas(&view, &scope, now, Duration::from_secs(1), "smtp", "mx1", None);
    let key = Key::BackendAdmin {
        vip: "smtp".into(),
        backend: "mx1".into(),
    };
    let t = tally(&rs, &key, taken.get(&key).map(|e| &e.stamp));
    assert_eq!(t.total, rs.len());
    let _ = (t.show("drain"), t.command_reply(), t.drained_reply());
});
