//! The DNS server's sockets: binds UDP and TCP on the same port and runs them
//! ([`crate::udp`], [`crate::tcp`]) over the supervisor's snapshot until shutdown,
//! which waits for every task and thread it started.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use shared::handover::{Inherited, SocketEntry, SocketKind};

use crate::error::GssError;
use crate::snapshot::Snapshot;
use crate::udp::{reuseport_socket, UdpMode};

/// A running DNS server.
pub struct DnsServer {
    tasks: TaskTracker,
    addr: SocketAddr,
    cancel: CancellationToken,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    /// Duplicates of the sockets' descriptors for a handover to an upgraded process;
    /// they live exactly as long as the server.
    handover: Vec<(SocketEntry, OwnedFd)>,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` (the same port for both, also when `listen` asks
    /// for port 0) and starts serving from `snap`: TCP through [`crate::tcp`], UDP
    /// as `mode` says. `cancel` (or [`DnsServer::shutdown`]) stops it.
    pub async fn bind(
        listen: SocketAddr,
        snap: Arc<ArcSwap<Snapshot>>,
        mode: UdpMode,
        cancel: CancellationToken,
    ) -> Result<DnsServer, GssError> {
        DnsServer::bind_inherited(listen, snap, mode, cancel, None).await
    }

    /// As [`DnsServer::bind`], taking the sockets a predecessor handed over for
    /// `listen` when there are (binary upgrade: no query is lost in between).
    pub async fn bind_inherited(
        listen: SocketAddr,
        snap: Arc<ArcSwap<Snapshot>>,
        mode: UdpMode,
        cancel: CancellationToken,
        inherited: Option<&Inherited>,
    ) -> Result<DnsServer, GssError> {
        let bind_err = |e: std::io::Error| GssError::Bind(listen, e.to_string());
        let taken = inherited.and_then(|i| {
            let udp = i.take_udp("dns", listen);
            let tcp = i.take_tcp("dns", listen)?;
            let tcp = TcpListener::from_std(tcp).ok()?;
            (!udp.is_empty()).then_some((udp, tcp))
        });
        let mut attempt = 0;
        let (udp, tcp) = match taken {
            Some(t) => t,
            None => loop {
                attempt += 1;
                let udp: Vec<std::net::UdpSocket> = match mode {
                    UdpMode::Hickory => {
                        let s = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
                        s.set_nonblocking(true).map_err(bind_err)?;
                        vec![s]
                    }
                    UdpMode::Fast(n) => {
                        let first = reuseport_socket(listen).map_err(bind_err)?;
                        let addr = first.local_addr().map_err(bind_err)?;
                        let mut v = vec![first];
                        for _ in 1..n.max(1) {
                            v.push(reuseport_socket(addr).map_err(bind_err)?);
                        }
                        v
                    }
                };
                let addr = udp[0].local_addr().map_err(bind_err)?;
                match TcpListener::bind(addr).await {
                    Ok(tcp) => break (udp, tcp),
                    Err(e) if listen.port() == 0 && attempt < 20 => {
                        tracing::debug!(error = %e, "tcp port {} taken, retrying", addr.port());
                    }
                    Err(e) => return Err(bind_err(e)),
                }
            },
        };
        let addr = udp[0].local_addr().map_err(bind_err)?;
        let mut handover = Vec::with_capacity(udp.len() + 1);
        let entry = |kind| SocketEntry {
            role: "dns".to_string(),
            kind,
            configured: listen,
            local: addr,
        };
        for s in &udp {
            handover.push((
                entry(SocketKind::Udp),
                s.as_fd().try_clone_to_owned().map_err(bind_err)?,
            ));
        }
        handover.push((
            entry(SocketKind::Tcp),
            tcp.as_fd().try_clone_to_owned().map_err(bind_err)?,
        ));
        let pktinfo = addr.ip().is_unspecified();
        let cancel = cancel.child_token();
        let tasks = TaskTracker::new();
        let mut udp_threads = Vec::new();
        match mode {
            UdpMode::Hickory => {
                for s in udp {
                    let s = UdpSocket::from_std(s).map_err(bind_err)?;
                    tasks.spawn(crate::udp::serve_udp(s, snap.clone(), cancel.clone()));
                }
            }
            UdpMode::Fast(_) => {
                for (i, s) in udp.into_iter().enumerate() {
                    let (z, c) = (snap.clone(), cancel.clone());
                    let t = std::thread::Builder::new()
                        .name(format!("gss-udp-{i}"))
                        .spawn(move || crate::udp::serve_socket(s, z, c, pktinfo))
                        .map_err(|e| {
                            cancel.cancel();
                            bind_err(e)
                        })?;
                    udp_threads.push(t);
                }
            }
        }
        tasks.spawn(crate::tcp::serve(tcp, snap, cancel.clone(), tasks.clone()));
        Ok(DnsServer {
            tasks,
            addr,
            cancel,
            udp_threads,
            handover,
        })
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A duplicate of every socket, described for a handover.
    pub fn handover_sockets(&self) -> std::io::Result<Vec<(SocketEntry, OwnedFd)>> {
        self.handover
            .iter()
            .map(|(e, fd)| Ok((e.clone(), fd.try_clone()?)))
            .collect()
    }

    /// Stops serving and waits for the server's tasks and the UDP threads (each sees
    /// the cancellation within [`crate::udp::POLL`]).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.handover.clear();
        self.tasks.close();
        self.tasks.wait().await;
        let threads = std::mem::take(&mut self.udp_threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::debug!(error = %e, "joining gss UDP threads");
        }
    }
}

impl Drop for DnsServer {
    /// Stops the UDP threads even when the server is dropped without a shutdown.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
