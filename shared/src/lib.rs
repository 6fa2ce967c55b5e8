//! Everything both roles stand on: the config model, protocol probes, the rise/fall
//! health state machine, the admin socket protocol, the event log, status types,
//! the status/metrics HTTP listener and the cluster layer (membership and
//! authenticated key exchange between Portico nodes). This crate knows neither the lb
//! nor the gss; they plug into it (admin handlers, status sources) from above.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod dnssec;
pub mod events;
pub mod fleet;
pub mod handover;
pub mod health;
pub mod intent;
pub mod probe;
pub mod proxy_protocol;
pub mod status;
pub mod status_server;
pub mod sync;
pub mod tls;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
