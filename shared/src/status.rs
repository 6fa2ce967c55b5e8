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
