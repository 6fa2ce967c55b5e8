//! A tiny bounded DNS load tool for comparing the UDP fast path with hickory's own UDP
//! loop on one machine (not a benchmark harness; `bench/` owns that).
//!
//! ```text
//! dnsload serve fast|hickory [ADDR] [EXTRA]  # smtp.gslb.example.test + EXTRA more names
//! dnsload load ADDR [N] [WINDOW] [NAME] [edns]  # N queries, WINDOW outstanding, prints qps
//! ```
//!
//! The load side uses one connected UDP socket with `sendmmsg`/`recvmmsg` batches so
//! the client is not the bottleneck; a query unanswered for 200 ms counts as lost.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use gss::select::{HealthView, SiteView};
use gss::server::DnsServer;
use gss::udp::UdpMode;
use gss::zone::{render, ZoneTemplate};
use gss::Snapshot;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use shared::config::{AllDown, Failback, GssConfig, NameConfig, Policy, SoaConfig};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 32;

fn config(listen: SocketAddr, extra: usize) -> GssConfig {
    let zone = "gslb.example.test";
    let mut cfg = GssConfig {
        listen,
        zone: zone.into(),
        ttl: 20,
        nameservers: vec![format!("ns1.{zone}")],
        soa: SoaConfig {
            ttl: 300,
            ..SoaConfig::defaults(zone, format!("ns1.{zone}"))
        },
        sites: vec![],
        names: vec![NameConfig {
            fqdn: format!("smtp.{zone}"),
            policy: Policy::Failover,
            sites: vec!["dc1".into(), "dc2".into()],
            weights: BTreeMap::new(),
            answers: BTreeMap::from([
                ("dc1".to_string(), vec!["192.0.2.1".parse().unwrap()]),
                ("dc2".to_string(), vec!["198.51.100.1".parse().unwrap()]),
            ]),
            failback: Failback::Manual,
            all_down: AllDown::First,
            clients: vec![],
            ttl: 20,
        }],
        records: vec![],
        server_id: None,
        server_version: None,
        dnssec: None,
        role: Default::default(),
        quorum: None,
    };
    for i in 0..extra {
        let mut n = cfg.names[0].clone();
        n.fqdn = format!("name{i}.{zone}");
        cfg.names.push(n);
    }
    cfg
}

async fn serve(mode: &str, listen: SocketAddr, extra: usize) -> Result<(), String> {
    let cfg = config(listen, extra);
    let tpl = Arc::new(ZoneTemplate::new(&cfg).map_err(|e| e.to_string())?);
    let view = HealthView::from_pairs([("dc1", SiteView::up()), ("dc2", SiteView::up())]);
    let t0 = Instant::now();
    let zone = render(tpl, &view, tokio::time::Instant::now(), None);
    let snap = Snapshot::new(zone, view);
    println!(
        "rendered {} fast-path keys in {:?}",
        snap.fill_table().len(),
        t0.elapsed()
    );
    let zone = Arc::new(ArcSwap::from_pointee(snap));
    let mode = match mode {
        "fast" => UdpMode::default(),
        "hickory" => UdpMode::Hickory,
        other => return Err(format!("mode {other:?}: fast or hickory")),
    };
    let server = DnsServer::bind(listen, zone, mode, CancellationToken::new())
        .await
        .map_err(|e| e.to_string())?;
    println!("serving {mode:?} on {}", server.local_addr());
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    server.shutdown().await;
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn load(server: SocketAddr, n: u64, window: usize, name: &str, edns: bool) -> Result<(), String> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    let qname = Name::from_ascii(name).map_err(|e| e.to_string())?;
    m.add_query(Query::query(qname, RecordType::A));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    let template = m.to_vec().map_err(|e| e.to_string())?;
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.connect(server).map_err(|e| e.to_string())?;
    // Large windows must not overflow our own receive buffer (that is not the
    // server losing queries).
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let fd = sock.as_raw_fd();
    let window = window.clamp(1, 60_000);
    let mut tx = vec![template.clone(); BATCH];
    let mut rx = vec![[0u8; 2048]; BATCH];
    let mut outstanding = vec![false; 65536];
    let (mut sent, mut received, mut lost, mut inflight) = (0u64, 0u64, 0u64, 0usize);
    let mut next_id = 0u16;
    let start = Instant::now();
    while received + lost < n {
        // Fill the window.
        while inflight < window && sent < n {
            let k = BATCH.min(window - inflight).min((n - sent) as usize);
            // SAFETY: zeroed iovec/mmsghdr are valid; pointers set below point into
            // `tx`, which outlives the call.
            let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; k];
            // SAFETY: as above.
            let mut hdr: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; k];
            for i in 0..k {
                while outstanding[usize::from(next_id)] {
                    next_id = next_id.wrapping_add(1);
                }
                tx[i][..2].copy_from_slice(&next_id.to_be_bytes());
                outstanding[usize::from(next_id)] = true;
                next_id = next_id.wrapping_add(1);
                iov[i].iov_base = tx[i].as_mut_ptr().cast();
                iov[i].iov_len = tx[i].len();
                hdr[i].msg_hdr.msg_iov = &mut iov[i];
                hdr[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `hdr` holds k initialised headers for a connected socket.
            let r = unsafe { libc::sendmmsg(fd, hdr.as_mut_ptr(), k as libc::c_uint, 0) };
            if r < 0 {
                return Err(format!("sendmmsg: errno {}", errno()));
            }
            // Unsent ones are released again.
            for t in tx.iter().take(k).skip(r as usize) {
                outstanding[usize::from(u16::from_be_bytes([t[0], t[1]]))] = false;
            }
            sent += r as u64;
            inflight += r as usize;
        }
        // SAFETY: zeroed iovec/mmsghdr are valid; pointers point into `rx`.
        let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
        // SAFETY: as above.
        let mut hdr: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        for i in 0..BATCH {
            iov[i].iov_base = rx[i].as_mut_ptr().cast();
            iov[i].iov_len = rx[i].len();
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdr` holds BATCH headers pointing into `rx`'s buffers.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            match errno() {
                libc::EAGAIN | libc::EINTR => {
                    // 200 ms of silence: everything in flight is lost.
                    lost += inflight as u64;
                    inflight = 0;
                    outstanding.iter_mut().for_each(|o| *o = false);
                    continue;
                }
                e => return Err(format!("recvmmsg: errno {e}")),
            }
        }
        for (i, h) in hdr.iter().enumerate().take(r as usize) {
            if h.msg_len < 12 {
                continue;
            }
            let id = usize::from(u16::from_be_bytes([rx[i][0], rx[i][1]]));
            if outstanding[id] {
                outstanding[id] = false;
                received += 1;
                inflight -= 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{received} answered, {lost} lost in {secs:.2}s: {:.0} qps (window {window})",
        received as f64 / secs
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let result = match args.first().map(String::as_str) {
        Some("serve") => tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                let listen = arg(2, "127.0.0.1:5399").parse().map_err(|e| format!("{e}"));
                let extra = arg(3, "0").parse().map_err(|e| format!("{e}"));
                listen.and_then(|l| rt.block_on(serve(&arg(1, "fast"), l, extra?)))
            }),
        Some("load") => (|| {
            let server: SocketAddr = arg(1, "127.0.0.1:5399").parse().map_err(|e| format!("{e}"))?;
            let n: u64 = arg(2, "1000000").parse().map_err(|e| format!("{e}"))?;
            let window: usize = arg(3, "200").parse().map_err(|e| format!("{e}"))?;
            let name = arg(4, "smtp.gslb.example.test.");
            load(server, n, window, &name, arg(5, "") == "edns")
        })(),
        _ => Err("usage: dnsload serve fast|hickory [ADDR] [EXTRA] | dnsload load ADDR [N] [WINDOW] [NAME] [edns]".into()),
    };
    if let Err(e) = result {
        eprintln!("dnsload: {e}");
        std::process::exit(1);
    }
}
