//! The `/status` JSON document (SPEC): what an lb reports of its VIPs and a gss of its
//! sites. The gss's `lb_status` keepalive parses the same types, so they live here.

use serde::{Deserialize, Serialize};

/// The whole `/status` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Every VIP of the lb role (empty when it does not run).
    #[serde(default)]
    pub vips: Vec<VipStatus>,
    /// Every site of the gss role (empty when it does not run).
    #[serde(default)]
    pub sites: Vec<SiteStatus>,
}

/// One VIP's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    /// VIP name.
    pub name: String,
    /// At least `min_healthy` backends up and in rotation.
    pub up: bool,
    /// Backends up and in rotation.
    pub healthy: usize,
    /// All backends.
    pub total: usize,
    /// Per backend.
    #[serde(default)]
    pub backends: Vec<BackendStatus>,
}

/// One backend's health and admin state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Backend name.
    pub name: String,
    /// `up`, `down` or `ejected`.
    pub state: String,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    /// Active proxied connections.
    pub active: u64,
}

/// One site's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// Site name.
    pub name: String,
    /// Effective state (health and override).
    pub up: bool,
    /// `"down"`, `"up"` or null.
    #[serde(rename = "override")]
    pub override_state: Option<String>,
}

/// The status page's data (`GET /page.json`): everything an operator looks at first,
/// in one document so the page renders one consistent moment. Not part of the SPEC's
/// `/status` contract; it may grow.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PageDoc {
    /// Every VIP with its backends.
    pub vips: Vec<VipPage>,
    /// Every site with its keepalives.
    pub sites: Vec<SitePage>,
    /// What each site-selected name answers now.
    pub names: Vec<NamePage>,
    /// The most recent events, newest last.
    pub events: Vec<String>,
}

/// One VIP on the status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VipPage {
    /// VIP name.
    pub name: String,
    /// Bound listen address.
    pub listen: String,
    /// `tcp`, `http` or `https`.
    pub mode: String,
    /// At least `min_healthy` backends up and in rotation.
    pub up: bool,
    /// Backends up and in rotation.
    pub healthy: usize,
    /// Client connections open.
    pub active: u64,
    /// Per backend, config order.
    pub backends: Vec<BackendPage>,
}

/// One backend on the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendPage {
    /// Backend name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// `up`, `down`, `unknown` or `ejected`.
    pub state: String,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    /// Current weight.
    pub weight: u32,
    /// Proxied connections open.
    pub active: u64,
    /// The last probe: `pending`, `ok` or `fail:REASON`.
    pub check: String,
}

/// One site on the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SitePage {
    /// Site name.
    pub name: String,
    /// Effective state.
    pub up: bool,
    /// `up`, `down` or null.
    #[serde(rename = "override")]
    pub override_state: Option<String>,
    /// Keepalives passing.
    pub passing: usize,
    /// Keepalives configured.
    pub keepalives: usize,
    /// Since when the site is in its state (RFC 3339).
    pub since: String,
}

/// One site-selected name on the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamePage {
    /// Fully qualified name.
    pub name: String,
    /// The answer a client without a client rule gets, as `explain` words it.
    pub answer: String,
}
