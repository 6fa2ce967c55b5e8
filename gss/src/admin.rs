//! The gss's share of the admin socket: `show sites`, `site down|up|auto SITE` and
//! `explain NAME [CLIENT_IP]`. Overrides are recorded in the event log (which also
//! writes them to the tracing log) with the operator's uid; `explain` runs the same
//! pure selection the answer renderer runs and prints its reasons.

use std::net::IpAddr;
use std::sync::Arc;

use shared::admin::{AdminHandler, Command, HandlerFuture, Peer, Reply};
use shared::status::{NamePage, SitePage};
use tokio::time::Instant;

use crate::select::{self, Client, Outcome};
use crate::supervisor::{Core, Gss};

impl Gss {
    /// The admin handler for `show sites`, `site ...` and `explain`.
    pub fn admin(&self) -> Arc<dyn AdminHandler> {
        Arc::new(GssAdmin::new(self.core().clone()))
    }

    /// Sites for the status page.
    pub fn page_sites(&self) -> Vec<SitePage> {
        self.core().page_sites()
    }

    /// Site-selected names with the answer a client matching no rule gets now, in
    /// the words of `explain`, for the status page.
    pub fn page_names(&self) -> Vec<NamePage> {
        let core = self.core();
        let snap = core.snapshot();
        snap.zone
            .tpl
            .cfg
            .names
            .iter()
            .map(|n| NamePage {
                name: n.fqdn.clone(),
                answer: explain(core, &n.fqdn, None)
                    .ok()
                    .and_then(|lines| lines.into_iter().next())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// Handles the gss admin commands; returns `None` for every other command.
pub struct GssAdmin {
    core: Arc<Core>,
}

impl GssAdmin {
    /// A handler over the running gss.
    pub fn new(core: Arc<Core>) -> Self {
        GssAdmin { core }
    }
}

impl AdminHandler for GssAdmin {
    fn handle<'a>(&'a self, cmd: &'a Command, peer: Peer) -> Option<HandlerFuture<'a>> {
        let reply = match cmd {
            Command::ShowSites => Reply::Data(self.core.show_sites()),
            Command::Site(site, o) => {
                let who = match peer.uid {
                    Some(uid) => format!("admin socket, uid {uid}"),
                    None => "admin socket".to_string(),
                };
                match self.core.set_override(site, *o, &who) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error(e.to_string()),
                }
            }
            Command::Explain(name, ip) => match explain(&self.core, name, *ip) {
                Ok(lines) => Reply::Data(lines),
                Err(e) => Reply::Error(e),
            },
            _ => return None,
        };
        Some(Box::pin(async move { reply }))
    }
}

/// The answer `client` would get for `name` now, and why.
pub fn explain(core: &Core, name: &str, client: Option<IpAddr>) -> Result<Vec<String>, String> {
    // One snapshot: the config, health and zone serial all of the same moment.
    let snap = core.snapshot();
    let (tpl, view, zone) = (&snap.zone.tpl, &snap.view, &snap.zone);
    let wanted = name.trim_end_matches('.').to_ascii_lowercase();
    let zone_name = tpl.cfg.zone.as_str();
    let cfg = tpl
        .cfg
        .names
        .iter()
        .find(|n| n.fqdn == wanted || n.fqdn == format!("{wanted}.{zone_name}"))
        .ok_or_else(|| {
            format!(
                "{name:?} is not a site-selected name of {zone_name}; names: {}",
                tpl.cfg
                    .names
                    .iter()
                    .map(|n| n.fqdn.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let who = match client {
        Some(ip) => Client::Addr(ip),
        None => Client::Unknown,
    };
    let sel = select::select(cfg, view, who, Instant::now());
    let addrs = |site: &str| {
        cfg.answers
            .get(site)
            .map(|v| {
                v.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "(no addresses)".to_string())
    };
    let mut lines = Vec::with_capacity(sel.reasons.len() + 3);
    let answer = match &sel.outcome {
        Outcome::Serve(sites) if sites.len() == 1 => {
            format!(
                "{} {} -> {} (site {}, ttl {})",
                cfg.fqdn,
                "A/AAAA",
                addrs(&sites[0].0),
                sites[0].0,
                cfg.ttl
            )
        }
        Outcome::Serve(sites) => {
            let total: u32 = sites.iter().map(|(_, w)| *w).sum();
            format!(
                "{} A/AAAA -> per query one of: {} (ttl {})",
                cfg.fqdn,
                sites
                    .iter()
                    .map(|(s, w)| format!("{} (site {s}, {w}/{total})", addrs(s)))
                    .collect::<Vec<_>>()
                    .join(", "),
                cfg.ttl
            )
        }
        Outcome::FailOpen(s) => format!(
            "{} A/AAAA -> {} (site {s}, fail-open: every site is down, ttl {})",
            cfg.fqdn,
            addrs(s),
            cfg.ttl
        ),
        Outcome::Servfail => format!("{} -> SERVFAIL (every site is down)", cfg.fqdn),
    };
    lines.push(answer);
    lines.push(match client {
        Some(ip) => format!(
            "client: {ip}{}",
            match sel.rule {
                Some(i) => format!(" matches client rule #{}", i + 1),
                None if cfg.clients.is_empty() => " (name has no client rules)".to_string(),
                None => " matches no client rule".to_string(),
            }
        ),
        None => {
            "client: not given (default order; pass CLIENT_IP to apply client rules)".to_string()
        }
    });
    lines.extend(sel.reasons);
    lines.push(format!("zone serial {}", zone.serial));
    Ok(lines)
}
