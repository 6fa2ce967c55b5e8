//! One way to write the TOML the end-to-end tests run `portico` with, so a VIP's
//! shape (listener, backends, probe, options) is said once per test instead of a
//! page of `format!` each test file copied and adjusted.
//!
//! ```ignore
//! let cfg = Config::admin(&dir)
//!     .http(status_port)
//!     .vip(Vip::new("smtp", format!("127.0.0.1:{port}"))
//!         .backend("mx1", mx1.addr())
//!         .probe("smtp", FAST)
//!         .with("proxy_protocol = \"v2\""))
//!     .render();
//! ```

use std::fmt::Display;

use super::TempDir;

/// Probe timing for tests that wait for verdicts: 200 ms apart, down after two misses.
pub const FAST: &str = r#"interval = "200ms", timeout = "150ms", rise = 1, fall = 2"#;

/// Probe timing for real daemons (Postfix, Dovecot, nginx), which answer slower.
pub const REAL: &str = r#"interval = "300ms", timeout = "250ms", rise = 1, fall = 2"#;

/// A whole config: top-level keys, then tables in the order added.
#[derive(Default)]
pub struct Config {
    top: Vec<String>,
    tables: Vec<String>,
}

impl Config {
    /// A config whose admin socket is `dir/admin.sock` (where [`super::Portico`]
    /// looks for it).
    pub fn admin(dir: &TempDir) -> Config {
        Config::default().table(format!(
            "[admin]\nsocket = \"{}\"",
            dir.path("admin.sock").display()
        ))
    }

    /// A top-level key (`drain_timeout = "20s"`), placed before every table.
    pub fn top(mut self, line: impl Into<String>) -> Config {
        self.top.push(line.into());
        self
    }

    /// The status/metrics listener on 127.0.0.1:`port`.
    pub fn http(self, port: u16) -> Config {
        self.table(format!("[http]\nlisten = \"127.0.0.1:{port}\""))
    }

    /// One `[[vip]]`.
    pub fn vip(self, vip: Vip) -> Config {
        self.table(vip.render())
    }

    /// Any other table, as written (a `[gss]` section, `[cluster]`).
    pub fn table(mut self, toml: impl Into<String>) -> Config {
        self.tables.push(toml.into());
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.top {
            out.push_str(l);
            out.push('\n');
        }
        for t in &self.tables {
            out.push('\n');
            out.push_str(t.trim_matches('\n'));
            out.push('\n');
        }
        out
    }
}

/// One `[[vip]]` table.
pub struct Vip {
    name: String,
    listen: String,
    mode: Option<String>,
    backends: Vec<String>,
    probe: Option<String>,
    lines: Vec<String>,
}

impl Vip {
    /// A `tcp` VIP (the default mode) called `name` listening on `listen`.
    pub fn new(name: &str, listen: impl Display) -> Vip {
        Vip {
            name: name.to_string(),
            listen: listen.to_string(),
            mode: None,
            backends: Vec::new(),
            probe: None,
            lines: Vec::new(),
        }
    }

    /// `mode = "http"` (or `"https"`).
    pub fn mode(mut self, mode: &str) -> Vip {
        self.mode = Some(mode.to_string());
        self
    }

    pub fn backend(mut self, name: &str, address: impl Display) -> Vip {
        self.backends
            .push(format!("{{ name = \"{name}\", address = \"{address}\" }}"));
        self
    }

    pub fn weighted(mut self, name: &str, address: impl Display, weight: u32) -> Vip {
        self.backends.push(format!(
            "{{ name = \"{name}\", address = \"{address}\", weight = {weight} }}"
        ));
        self
    }

    /// `probe = { kind = "KIND", REST }`, e.g. `.probe("smtp", FAST)` or
    /// `.probe("http", &format!("path = \"/health\", {REAL}"))`.
    pub fn probe(mut self, kind: &str, rest: &str) -> Vip {
        self.probe = Some(format!("{{ kind = \"{kind}\", {rest} }}"));
        self
    }

    /// Any other key of the table, as written (`proxy_protocol = "v2"`).
    pub fn with(mut self, line: impl Into<String>) -> Vip {
        self.lines.push(line.into());
        self
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "[[vip]]\nname = \"{}\"\nlisten = \"{}\"\n",
            self.name, self.listen
        );
        if let Some(m) = &self.mode {
            out.push_str(&format!("mode = \"{m}\"\n"));
        }
        for l in &self.lines {
            out.push_str(l.trim_end());
            out.push('\n');
        }
        out.push_str(&format!("backends = [ {} ]\n", self.backends.join(", ")));
        if let Some(p) = &self.probe {
            out.push_str(&format!("probe = {p}\n"));
        }
        out
    }
}
