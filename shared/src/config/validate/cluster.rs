//! The `[cluster]` section (members, secret, timers) and the gss settings that only
//! make sense against it (`role = "witness"`, `quorum`).

use std::collections::HashSet;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::files::FileKind;
use crate::config::model::*;
use crate::config::raw::*;

impl Validator<'_> {
    pub(super) fn cluster(&mut self, rc: &Spanned<RawCluster>) -> ClusterConfig {
        let c = rc.get_ref();
        self.ident(&c.id, "cluster id");
        self.ident(&c.node, "cluster node");
        let secret_file = self.file(&c.secret_file, "cluster secret_file", FileKind::Secret);
        let gossip_interval = self.positive_duration(
            &c.gossip_interval,
            Duration::from_millis(500),
            "cluster gossip_interval",
        );
        let stale_after = self.positive_duration(
            &c.stale_after,
            Duration::from_secs(5),
            "cluster stale_after",
        );
        if let Some(v) = &c.stale_after {
            if stale_after < gossip_interval * 2 {
                self.err(
                    v.span(),
                    format!(
                        "stale_after ({}) must be at least two gossip intervals ({}); a healthy peer's views would go stale between exchanges",
                        super::fmt_dur(stale_after),
                        super::fmt_dur(gossip_interval * 2)
                    ),
                );
            }
        }
        let mut members = Vec::new();
        let mut ids = HashSet::new();
        for rm in &c.member {
            let m = rm.get_ref();
            self.ident(&m.id, "cluster member");
            if !ids.insert(m.id.get_ref().clone()) {
                self.err(
                    m.id.span(),
                    format!(
                        "duplicate cluster member \"{}\"; member ids must be unique",
                        m.id.get_ref()
                    ),
                );
            }
            let address = match self.addr(&m.address, "member address") {
                Some(a) if a.ip().is_unspecified() || a.port() == 0 => {
                    self.err(
                        m.address.span(),
                        "a member address is where peers reach it: give a concrete IP and port, not 0.0.0.0 or port 0",
                    );
                    a
                }
                Some(a) => a,
                None => ([0, 0, 0, 0], 0).into(),
            };
            if let Some(p) = &m.pod {
                self.ident(p, "pod");
            }
            members.push(MemberConfig {
                id: m.id.get_ref().clone(),
                address,
                vantage: m.vantage.as_ref().map(|v| *v.get_ref()).unwrap_or(true),
                pod: m.pod.as_ref().map(|p| p.get_ref().clone()),
            });
        }
        if members.is_empty() {
            self.err(
                c.id.span(),
                "[cluster] lists no members; add one [[cluster.member]] per node, this one included",
            );
        }
        let own = members.iter().find(|m| &m.id == c.node.get_ref()).cloned();
        if own.is_none() && !members.is_empty() {
            self.err(
                c.node.span(),
                format!(
                    "node \"{}\" is not one of the [[cluster.member]] ids; list this node among the members",
                    c.node.get_ref()
                ),
            );
        }
        let listen = match &c.listen {
            Some(l) => self.listener(l, "[cluster]".to_string()),
            None => match &own {
                Some(m) => {
                    let span = c
                        .member
                        .iter()
                        .find(|rm| rm.get_ref().id.get_ref() == &m.id)
                        .map(|rm| rm.get_ref().address.span())
                        .unwrap_or(0..0);
                    self.listeners.push((
                        m.address,
                        span,
                        "[cluster] (this node's member address)".to_string(),
                    ));
                    m.address
                }
                None => ([0, 0, 0, 0], 0).into(),
            },
        };
        ClusterConfig {
            id: c.id.get_ref().clone(),
            node: c.node.get_ref().clone(),
            listen,
            secret_file,
            gossip_interval,
            stale_after,
            members,
        }
    }

    /// `role` and `quorum` of `[gss]` against the cluster they vote in.
    pub(super) fn gss_vote(
        &mut self,
        g: &RawGss,
        cluster: Option<&ClusterConfig>,
    ) -> (GssRole, Option<u32>) {
        let role = self.opt_choice(
            &g.role,
            "gss role",
            &[("server", GssRole::Server), ("witness", GssRole::Witness)],
            GssRole::Server,
        );
        if let (Some(r), None) = (&g.role, cluster) {
            if role == GssRole::Witness {
                self.err(
                    r.span(),
                    "a witness publishes its views to the cluster: add a [cluster] section",
                );
            }
        }
        let vantage = cluster.map(|c| c.vantage_points().count()).unwrap_or(1);
        if let Some(c) = cluster {
            if !c.vantage_points().any(|m| m.id == c.node)
                && c.members.iter().any(|m| m.id == c.node)
            {
                if let Some(r) = &g.role {
                    self.err(
                        r.span(),
                        format!("this node (\"{}\") runs the gss but its member entry says vantage = false", c.node),
                    );
                }
            }
        }
        let quorum = match &g.quorum {
            None => None,
            Some(q) if cluster.is_none() => {
                self.err(
                    q.span(),
                    "quorum counts vantage points of a [cluster]; without one this gss decides alone (add [cluster] or remove quorum)",
                );
                None
            }
            Some(q) => {
                let n = *q.get_ref();
                let v = vantage as i64;
                if n < 1 || n > v {
                    self.err(
                        q.span(),
                        format!("quorum must be between 1 and the {v} vantage points of [cluster], got {n}"),
                    );
                    None
                } else if n != 1 && n * 2 <= v {
                    self.err(
                        q.span(),
                        format!(
                            "quorum {n} of {v} vantage points is not a majority: two sides of a cut could both reach it; use {} or more, or 1 (each node decides alone)",
                            v / 2 + 1
                        ),
                    );
                    None
                } else {
                    u32::try_from(n).ok()
                }
            }
        };
        (role, quorum)
    }
}
