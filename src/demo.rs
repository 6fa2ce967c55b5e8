//! `portico demo`: the whole product on loopback with nothing installed. It reads the
//! embedded `config/demo.toml` (the same file `portico run` accepts), starts an
//! in-process fake backend for every backend address in it (SMTP, IMAP, POP3, HTTP
//! webmail, MAPI, speaking the VIP's probe protocol), prints what to try, and runs the
//! lb and gss until Ctrl-C.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use shared::config::{Config, ProbeKind, VipMode};
use shared::testing::{Behaviour, FakeKind, FakeOptions, FakeServer};
use tokio::sync::oneshot;

/// The demo config, embedded so the demo runs from any directory.
pub(crate) const DEMO_TOML: &str = include_str!("../config/demo.toml");

/// Starts one fake per backend; the banner names the VIP and backend so a client can
/// see which node answered.
async fn start_backends(config: &Config) -> anyhow::Result<Vec<FakeServer>> {
    let mut seen = BTreeSet::new();
    let mut fakes = Vec::new();
    for vip in &config.vips {
        for b in &vip.backends {
            if !seen.insert(b.address) {
                continue;
            }
            let options = FakeOptions::new().banner(format!("{}/{}", vip.name, b.name));
            let fake = FakeServer::try_start_at(
                b.address,
                FakeKind::for_probe(vip.probe.kind),
                Behaviour::Good,
                options,
            )
            .await
            .with_context(|| format!("demo backend {}/{} on {}", vip.name, b.name, b.address))?;
            fakes.push(fake);
        }
    }
    Ok(fakes)
}

/// What to paste into another terminal, derived from the config itself.
pub(crate) fn instructions(config: &Config, exe: &str) -> String {
    let mut out = String::from("\nPortico demo is running. Try, in another terminal:\n\n");
    if let Some(gss) = &config.gss {
        let (host, port) = (gss.listen.ip(), gss.listen.port());
        for name in gss.names.iter().take(2) {
            out += &format!("  dig @{host} -p {port} +norec {} A\n", name.fqdn);
        }
    }
    let find = |mode: VipMode, kind: ProbeKind| {
        config
            .vips
            .iter()
            .find(|v| v.mode == mode && v.probe.kind == kind)
            .map(|v| (v.name.clone(), v.listen))
    };
    if let Some((_, addr)) = find(VipMode::Tcp, ProbeKind::Smtp) {
        out += &format!(
            "  swaks --server {} --port {} --from demo@example.test --to user@example.test\n",
            addr.ip(),
            addr.port()
        );
    }
    let web: Option<(String, SocketAddr)> = find(VipMode::Http, ProbeKind::Http);
    if let Some((_, addr)) = &web {
        out += &format!("  curl -si http://{addr}/\n");
    }
    if let Some(http) = &config.http {
        out += &format!("  curl -s http://{}/status\n", http.listen);
    }
    if let Some(admin) = &config.admin {
        let ctl = format!("{exe} ctl --socket {}", admin.socket.display());
        out += &format!("  {ctl} show backends\n");
        if let Some(vip) = config.vips.first() {
            if let Some(b) = vip.backends.first() {
                out += &format!("  {ctl} drain {}/{}\n", vip.name, b.name);
                out += &format!("  {ctl} ready {}/{}\n", vip.name, b.name);
            }
        }
        if let Some(gss) = &config.gss {
            if let (Some(site), Some(name)) = (gss.sites.first(), gss.names.first()) {
                let short = name.fqdn.split('.').next().unwrap_or(&name.fqdn);
                out += &format!(
                    "  {ctl} site down {}      # then dig again: answers move\n",
                    site.name
                );
                out += &format!("  {ctl} explain {short}\n");
                out += &format!("  {ctl} site auto {}\n", site.name);
            }
        }
        out += &format!("  {ctl} show events\n");
    }
    out += "\nCtrl-C stops it.\n";
    out
}

/// Runs the demo until SIGINT/SIGTERM.
pub(crate) async fn run() -> anyhow::Result<()> {
    let config = shared::config::parse(DEMO_TOML, Path::new("config/demo.toml"))
        .map_err(|e| anyhow::anyhow!("embedded demo config: {e}"))?;
    let _fakes = start_backends(&config).await?;
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "portico".to_string());
    let (tx, rx) = oneshot::channel();
    let text = instructions(&config, &exe);
    let printer = tokio::spawn(async move {
        if rx.await.is_ok() {
            println!("{text}");
        }
    });
    let result = crate::app::run(config, Some(tx)).await;
    printer.abort();
    result
}
