//! Shared helpers of the lb integration tests: VIP configs built from the model
//! structs, scripted probes, and small line-protocol clients with bounded waits.
// Shared by several test crates: each uses a part, and `pub` is how they reach it.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use lb::{Lb, LbOptions};
use shared::admin::{Command, Peer, Reply};
use shared::config::{
    BackendConfig, Balance, EjectionConfig, HttpVipConfig, MailProtocol, ProbeConfig, ProbeKind,
    ProbeTiming, VipConfig, VipMode,
};
use shared::events::EventLog;
use shared::probe::Probe;
use shared::testing::SwitchProbe;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Upper bound on any single network wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn timing(interval_ms: u64, timeout_ms: u64, rise: u32, fall: u32) -> ProbeTiming {
    ProbeTiming {
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise,
        fall,
    }
}

/// A `mode = "tcp"` VIP on an ephemeral loopback port with round robin, 2 retries and
/// a slow TCP probe.
pub fn vip(name: &str, protocol: MailProtocol, backends: &[(&str, SocketAddr)]) -> VipConfig {
    let mut probe = ProbeConfig::new(ProbeKind::Tcp);
    probe.timing = timing(60_000, 1_000, 2, 2);
    VipConfig {
        name: name.to_string(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        mode: VipMode::Tcp,
        balance: Balance::RoundRobin,
        proxy_protocol: None,
        accept_proxy: false,
        protocol,
        backends: backends
            .iter()
            .map(|(n, a)| BackendConfig {
                name: n.to_string(),
                address: *a,
                weight: 1,
                backup: false,
            })
            .collect(),
        probe,
        retries: 2,
        connect_timeout: Duration::from_secs(2),
        greeting_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_connections: None,
        max_connections_per_source: None,
        min_healthy: 1,
        ejection: EjectionConfig {
            consecutive_failures: 5,
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(300),
            max_percent: 50,
            reset_after: Duration::from_secs(60),
        },
        tls: None,
        http: HttpVipConfig::default(),
        access_log: false,
        announce: None,
    }
}

/// Options whose probes all follow `flag`.
pub fn scripted(flag: Arc<AtomicBool>) -> LbOptions {
    LbOptions {
        probes: Arc::new(move |_cfg, _addr| {
            Ok(Arc::new(SwitchProbe(flag.clone())) as Arc<dyn Probe>)
        }),
        ..LbOptions::default()
    }
}

pub async fn start(vips: &[VipConfig], options: LbOptions) -> (Lb, Arc<EventLog>) {
    let events = Arc::new(EventLog::default());
    let lb = Lb::start_with(vips, events.clone(), options)
        .await
        .expect("lb starts");
    (lb, events)
}

pub fn addr(lb: &Lb, vip: &str) -> SocketAddr {
    lb.local_addr(vip).expect("vip bound")
}

/// Runs one admin command line through the lb's handler.
pub async fn admin(lb: &Lb, line: &str) -> Reply {
    let cmd: Command = shared::admin::protocol::parse(line).expect("parses");
    let handler = lb.admin();
    let fut = handler
        .handle(&cmd, Peer { uid: Some(1000) })
        .expect("lb owns the command");
    fut.await
}

pub fn data(reply: Reply) -> Vec<String> {
    match reply {
        Reply::Data(lines) => lines,
        other => panic!("expected data, got {other:?}"),
    }
}

/// Polls `cond` every 20 ms for at most `bound`; returns the elapsed time when it held.
pub async fn eventually(bound: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < bound {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A line-oriented client.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Client {
            reader: BufReader::new(s),
        }
    }

    /// Reads one line (with CRLF); empty string on EOF.
    pub async fn line(&mut self) -> String {
        let mut l = String::new();
        tokio::time::timeout(WAIT, self.reader.read_line(&mut l))
            .await
            .expect("line in time")
            .expect("read line");
        l
    }

    pub async fn send(&mut self, s: &str) {
        tokio::time::timeout(WAIT, self.reader.get_mut().write_all(s.as_bytes()))
            .await
            .expect("write in time")
            .expect("write");
    }
}
