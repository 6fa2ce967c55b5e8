//! Bulk transfers through the L4 relay (splice(2) through pooled pipes): 64 MiB each
//! way arrives intact and in order with matching byte counters, and a half-close is
//! forwarded while the other direction still has bytes in flight.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use shared::config::MailProtocol;
use shared::testing::metrics::CountingRecorder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BLOCK: usize = 64 * 1024;
const BIG: Duration = Duration::from_secs(120);

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Block `k` of the stream identified by `seed`: no two blocks alike, so a lost,
/// duplicated or reordered block is caught.
fn block(seed: u64, k: u64, out: &mut [u8]) {
    for (j, w) in out.chunks_exact_mut(8).enumerate() {
        let v = splitmix(seed ^ (k << 16) ^ j as u64);
        w.copy_from_slice(&v.to_le_bytes());
    }
}

async fn send(w: &mut (impl AsyncWrite + Unpin), seed: u64, blocks: u64) {
    let mut buf = vec![0u8; BLOCK];
    for k in 0..blocks {
        block(seed, k, &mut buf);
        w.write_all(&buf).await.expect("write");
    }
}

/// Reads exactly `blocks` blocks of `seed`'s stream and then EOF.
async fn expect(r: &mut (impl AsyncRead + Unpin), seed: u64, blocks: u64) {
    let mut want = vec![0u8; BLOCK];
    let mut got = vec![0u8; BLOCK];
    for k in 0..blocks {
        r.read_exact(&mut got).await.expect("read");
        block(seed, k, &mut want);
        assert!(got == want, "block {k} of stream {seed:x} intact");
    }
    assert_eq!(
        r.read(&mut got).await.expect("read"),
        0,
        "EOF after the stream"
    );
}

/// A backend accepting one connection and handing it to `f`.
async fn backend<F, Fut>(f: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let h = tokio::spawn(async move {
        let (s, _) = l.accept().await.expect("accept");
        f(s).await;
    });
    (addr, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_arrive_intact_and_are_counted() {
    let rec = CountingRecorder::global();
    const BLOCKS: u64 = 1024; // 64 MiB
    let (baddr, bh) = backend(|s| async move {
        let (mut r, mut w) = s.into_split();
        let up = async { expect(&mut r, 0xC11E, BLOCKS).await };
        let down = async {
            send(&mut w, 0xBAC4, BLOCKS).await;
            w.shutdown().await.expect("shutdown");
        };
        tokio::join!(up, down);
    })
    .await;
    let (lb, _e) = start(
        &[vip("bulk", MailProtocol::None, &[("b", baddr)])],
        scripted(Arc::new(AtomicBool::new(true))),
    )
    .await;
    let s = TcpStream::connect(addr(&lb, "bulk"))
        .await
        .expect("connect");
    let (mut r, mut w) = s.into_split();
    let up = async {
        send(&mut w, 0xC11E, BLOCKS).await;
        w.shutdown().await.expect("shutdown");
    };
    let down = async { expect(&mut r, 0xBAC4, BLOCKS).await };
    tokio::time::timeout(BIG, async { tokio::join!(up, down) })
        .await
        .expect("transfer in time");
    tokio::time::timeout(WAIT, bh)
        .await
        .expect("backend done")
        .expect("backend checks passed");
    eventually(WAIT, || lb.active_connections() == 0)
        .await
        .expect("connection released");
    let total = BLOCKS * BLOCK as u64;
    assert_eq!(
        rec.sum(
            lb::metrics::BYTES_TOTAL,
            &[("vip", "bulk"), ("direction", "to_backend")]
        ),
        total
    );
    assert_eq!(
        rec.sum(
            lb::metrics::BYTES_TOTAL,
            &[("vip", "bulk"), ("direction", "to_client")]
        ),
        total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_forwarded_while_the_other_direction_is_in_flight() {
    let rec = CountingRecorder::global();
    const UP: u64 = 64; // 4 MiB, then FIN
    const HALF: u64 = 256; // 16 MiB before and 16 MiB after the client's FIN
    let (baddr, bh) = backend(|s| async move {
        let (mut r, mut w) = s.into_split();
        let mut buf = vec![0u8; BLOCK];
        // Stream the first half while the client's bytes and FIN arrive...
        let up = async { expect(&mut r, 0x5EED, UP).await };
        let first = async {
            for k in 0..HALF {
                block(0xD0D0, k, &mut buf);
                w.write_all(&buf).await.expect("write");
            }
        };
        tokio::join!(up, first);
        // ...and the second half only after the FIN came through.
        for k in HALF..2 * HALF {
            block(0xD0D0, k, &mut buf);
            w.write_all(&buf).await.expect("write");
        }
        w.shutdown().await.expect("shutdown");
    })
    .await;
    let (lb, _e) = start(
        &[vip("halfclose", MailProtocol::None, &[("b", baddr)])],
        scripted(Arc::new(AtomicBool::new(true))),
    )
    .await;
    let s = TcpStream::connect(addr(&lb, "halfclose"))
        .await
        .expect("connect");
    let (mut r, mut w) = s.into_split();
    let up = async {
        send(&mut w, 0x5EED, UP).await;
        w.shutdown().await.expect("half-close");
    };
    let down = async { expect(&mut r, 0xD0D0, 2 * HALF).await };
    tokio::time::timeout(BIG, async { tokio::join!(up, down) })
        .await
        .expect("transfer in time");
    tokio::time::timeout(WAIT, bh)
        .await
        .expect("backend done")
        .expect("backend checks passed");
    eventually(WAIT, || lb.active_connections() == 0)
        .await
        .expect("connection released");
    assert_eq!(
        rec.sum(
            lb::metrics::BYTES_TOTAL,
            &[("vip", "halfclose"), ("direction", "to_backend")]
        ),
        UP * BLOCK as u64
    );
    assert_eq!(
        rec.sum(
            lb::metrics::BYTES_TOTAL,
            &[("vip", "halfclose"), ("direction", "to_client")]
        ),
        2 * HALF * BLOCK as u64
    );
}
