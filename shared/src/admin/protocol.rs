//! Parsing of admin command lines and rendering of replies, free of I/O.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// `VIP/BACKEND` as typed by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendId {
    /// VIP name.
    pub vip: String,
    /// Backend name within the VIP.
    pub backend: String,
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vip, self.backend)
    }
}

/// Operator override of a site's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteOverride {
    /// Force down (DR drill).
    Down,
    /// Force up.
    Up,
    /// Release: health decides again (and releases a manual failback).
    Auto,
}

impl SiteOverride {
    /// The spelling used in commands and output.
    pub fn as_str(self) -> &'static str {
        match self {
            SiteOverride::Down => "down",
            SiteOverride::Up => "up",
            SiteOverride::Auto => "auto",
        }
    }
}

/// One parsed admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help`
    Help,
    /// `show vips`
    ShowVips,
    /// `show backends [VIP]`
    ShowBackends(Option<String>),
    /// `drain VIP/BACKEND`
    Drain(BackendId),
    /// `ready VIP/BACKEND`
    Ready(BackendId),
    /// `maint VIP/BACKEND`
    Maint(BackendId),
    /// `set weight VIP/BACKEND N`
    SetWeight(BackendId, u32),
    /// `wait drained VIP/BACKEND SECONDS`
    WaitDrained(BackendId, Duration),
    /// `show sites`
    ShowSites,
    /// `show dnssec`
    ShowDnssec,
    /// `site down|up|auto SITE`
    Site(String, SiteOverride),
    /// `explain NAME [CLIENT_IP]`
    Explain(String, Option<IpAddr>),
    /// `show events [N]`
    ShowEvents(usize),
    /// `show cluster`
    ShowCluster,
    /// `reload`
    Reload,
    /// `show bgp`
    ShowBgp,
    /// `withdraw VIP`: stop announcing the VIP's prefixes (leave the ECMP set)
    WithdrawVip(String),
    /// `announce VIP`: announce them again while the VIP is up
    AnnounceVip(String),
}

impl Command {
    /// True for commands that change state; those are logged with the peer's uid.
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Command::Drain(_)
                | Command::Ready(_)
                | Command::Maint(_)
                | Command::SetWeight(..)
                | Command::Site(..)
                | Command::Reload
                | Command::WithdrawVip(_)
                | Command::AnnounceVip(_)
        )
    }
}

/// The text of `help`.
pub const HELP: &[&str] = &[
    "help                               this list",
    "show vips                          VIPs: name listen mode up/down healthy/total active",
    "show backends [VIP]                backends: VIP/BACKEND address state admin weight active checks",
    "drain VIP/BACKEND                  no new connections; established ones continue",
    "ready VIP/BACKEND                  back into rotation (health permitting)",
    "maint VIP/BACKEND                  out of rotation, probes stopped",
    "set weight VIP/BACKEND N           change a backend's weight",
    "wait drained VIP/BACKEND SECONDS   ok once it has no active connections",
    "show sites                         sites: name up/down override passing/total since",
    "show dnssec                        keys, states, signatures, next re-sign, DS for the parent",
    "site down|up|auto SITE             override a site's health, or release it",
    "explain NAME [CLIENT_IP]           the answer for NAME now, and why",
    "show events [N]                    last N state changes, oldest first",
    "show cluster                       cluster members: id address state last_contact",
    "reload                             re-read the config (as SIGHUP)",
    "show bgp                           BGP neighbors (state, uptime, last error) and prefixes (announced or not, why)",
    "withdraw VIP                       stop announcing the VIP's prefixes (maintenance)",
    "announce VIP                       announce them again while the VIP is up",
];

/// Longest accepted command line; longer input is garbage and closes the connection.
pub const MAX_LINE: usize = 4096;

fn backend_id(s: &str) -> Result<BackendId, String> {
    match s.split_once('/') {
        Some((vip, backend))
            if !vip.is_empty() && !backend.is_empty() && !backend.contains('/') =>
        {
            Ok(BackendId {
                vip: vip.to_string(),
                backend: backend.to_string(),
            })
        }
        _ => Err(format!("expected VIP/BACKEND, got {s:?}")),
    }
}

/// Parses one command line (surrounding whitespace ignored).
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let usage = |u: &str| Err(format!("usage: {u}"));
    match words.as_slice() {
        [] => Err("empty command; try `help`".to_string()),
        ["help"] => Ok(Command::Help),
        ["show", "vips"] => Ok(Command::ShowVips),
        ["show", "backends"] => Ok(Command::ShowBackends(None)),
        ["show", "backends", vip] => Ok(Command::ShowBackends(Some(vip.to_string()))),
        ["show", "sites"] => Ok(Command::ShowSites),
        ["show", "dnssec"] => Ok(Command::ShowDnssec),
        ["show", "cluster"] => Ok(Command::ShowCluster),
        ["show", "events"] => Ok(Command::ShowEvents(20)),
        ["show", "events", n] => n
            .parse()
            .map(Command::ShowEvents)
            .map_err(|_| format!("show events: {n:?} is not a count")),
        ["drain", id] => backend_id(id).map(Command::Drain),
        ["ready", id] => backend_id(id).map(Command::Ready),
        ["maint", id] => backend_id(id).map(Command::Maint),
        ["drain" | "ready" | "maint", ..] => usage("drain|ready|maint VIP/BACKEND"),
        ["set", "weight", id, n] => {
            let id = backend_id(id)?;
            let n = n
                .parse::<u32>()
                .map_err(|_| format!("set weight: {n:?} is not a whole number"))?;
            Ok(Command::SetWeight(id, n))
        }
        ["set", ..] => usage("set weight VIP/BACKEND N"),
        ["wait", "drained", id, secs] => {
            let id = backend_id(id)?;
            let secs = secs
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
                .ok_or_else(|| format!("wait drained: {secs:?} is not a number of seconds"))?;
            Ok(Command::WaitDrained(id, Duration::from_secs_f64(secs)))
        }
        ["wait", ..] => usage("wait drained VIP/BACKEND SECONDS"),
        ["site", action, site] => {
            let o = match *action {
                "down" => SiteOverride::Down,
                "up" => SiteOverride::Up,
                "auto" => SiteOverride::Auto,
                _ => return usage("site down|up|auto SITE"),
            };
            Ok(Command::Site(site.to_string(), o))
        }
        ["site", ..] => usage("site down|up|auto SITE"),
        ["explain", name] => Ok(Command::Explain(name.to_string(), None)),
        ["explain", name, ip] => {
            let ip = ip
                .parse()
                .map_err(|_| format!("explain: {ip:?} is not an IP address"))?;
            Ok(Command::Explain(name.to_string(), Some(ip)))
        }
        ["explain", ..] => usage("explain NAME [CLIENT_IP]"),
        ["reload"] => Ok(Command::Reload),
        ["show", "bgp"] => Ok(Command::ShowBgp),
        ["withdraw", vip] => Ok(Command::WithdrawVip(vip.to_string())),
        ["withdraw", ..] => usage("withdraw VIP"),
        ["announce", vip] => Ok(Command::AnnounceVip(vip.to_string())),
        ["announce", ..] => usage("announce VIP"),
        [first, ..] => Err(format!("unknown command {first:?}; try `help`")),
    }
}

/// A reply to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The command took effect.
    Ok,
    /// Data lines.
    Data(Vec<String>),
    /// The command failed; the message says why and what to do.
    Error(String),
}

impl Reply {
    /// A one-line error reply.
    pub fn error(msg: impl Into<String>) -> Self {
        Reply::Error(msg.into())
    }

    /// Renders the reply as sent on the wire, ending with a blank line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self {
            Reply::Ok => out.push_str("ok\n"),
            Reply::Data(lines) => {
                for l in lines {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            Reply::Error(e) => {
                // Errors quote what the operator typed; a 4 KB line must not come
                // back as a 4 KB (or, escaped, larger) reply. Clipped line by line,
                // so every config error of a refused reload still shows.
                out.push_str("error: ");
                let lines: Vec<String> = e.split('\n').map(crate::config::clip_message).collect();
                out.push_str(&lines.join(" "));
                out.push('\n');
            }
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let id = BackendId {
            vip: "smtp".into(),
            backend: "mx1".into(),
        };
        let cases = [
            ("help", Command::Help),
            ("show vips", Command::ShowVips),
            ("  show   backends  ", Command::ShowBackends(None)),
            (
                "show backends smtp",
                Command::ShowBackends(Some("smtp".into())),
            ),
            ("drain smtp/mx1", Command::Drain(id.clone())),
            ("ready smtp/mx1", Command::Ready(id.clone())),
            ("maint smtp/mx1", Command::Maint(id.clone())),
            ("set weight smtp/mx1 3", Command::SetWeight(id.clone(), 3)),
            (
                "wait drained smtp/mx1 1.5",
                Command::WaitDrained(id.clone(), Duration::from_millis(1500)),
            ),
            ("show sites", Command::ShowSites),
            ("show dnssec", Command::ShowDnssec),
            ("show cluster", Command::ShowCluster),
            (
                "site down dc1",
                Command::Site("dc1".into(), SiteOverride::Down),
            ),
            (
                "site auto dc1",
                Command::Site("dc1".into(), SiteOverride::Auto),
            ),
            ("explain smtp", Command::Explain("smtp".into(), None)),
            (
                "explain smtp 10.1.2.3",
                Command::Explain("smtp".into(), Some("10.1.2.3".parse().unwrap())),
            ),
            ("show events", Command::ShowEvents(20)),
            ("show events 5", Command::ShowEvents(5)),
            ("reload", Command::Reload),
            ("show bgp", Command::ShowBgp),
            ("withdraw smtp", Command::WithdrawVip("smtp".into())),
            ("announce smtp", Command::AnnounceVip("smtp".into())),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Ok(want), "{line}");
        }
    }

    #[test]
    fn rejects_malformed_lines_with_a_reason() {
        for (line, needle) in [
            ("", "empty"),
            ("frobnicate", "unknown command"),
            ("drain smtp", "VIP/BACKEND"),
            ("drain /mx1", "VIP/BACKEND"),
            ("drain a/b/c", "VIP/BACKEND"),
            ("set weight smtp/mx1 -1", "whole number"),
            ("wait drained smtp/mx1 forever", "seconds"),
            ("wait drained smtp/mx1 NaN", "seconds"),
            ("site sideways dc1", "usage"),
            ("explain smtp not-an-ip", "IP address"),
            ("show events lots", "count"),
        ] {
            let err = parse(line).expect_err(line);
            assert!(err.contains(needle), "{line:?}: {err}");
        }
    }

    #[test]
    fn renders_replies_with_terminating_blank_line() {
        assert_eq!(Reply::Ok.render(), "ok\n\n");
        assert_eq!(
            Reply::Data(vec!["a".into(), "b".into()]).render(),
            "a\nb\n\n"
        );
        assert_eq!(Reply::error("no\nway").render(), "error: no way\n\n");
    }

    #[test]
    fn error_replies_do_not_echo_whole_lines() {
        let long = "\u{7f}".repeat(MAX_LINE - 20);
        for line in [
            format!("{long} x"),
            format!("drain {long}"),
            format!("set weight a/b {long}"),
            format!("explain x {long}"),
        ] {
            let reply = Reply::Error(parse(&line).expect_err("malformed")).render();
            assert!(reply.len() < 600, "{} bytes: {}", reply.len(), &reply[..80]);
            assert!(reply.contains('…'), "{reply}");
        }
    }
}
