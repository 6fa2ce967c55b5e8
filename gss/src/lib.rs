//! The gss role: an authoritative DNS server for the delegated zone whose answers
//! follow the aggregate health of each site.
//!
//! Modules point one way (ARCHITECTURE.md, checked by `.ci/gss-deps`):
//! [`select`] and [`site`] decide; [`dnssec`] holds the keys and signs; [`zone`]
//! renders the answers and their signatures, made ahead (no sockets);
//! [`select`], [`quorum`] and [`site`] decide; [`zone`] renders the answers (no sockets);
//! [`respond`] turns zone × request bytes into reply bytes; [`fast`] pre-renders
//! them for UDP; [`snapshot`] publishes zone, health and table together; [`udp`] and
//! [`tcp`] serve sockets from the snapshot; [`server`] binds and stops them;
//! [`supervisor`] ([`Gss`], [`Core`]) owns every task, the health state and reloads;
//! [`admin`] is the operator's view of the supervisor.

pub mod admin;
pub mod dnssec;
pub mod error;
pub mod fast;
pub mod metrics;
pub mod quorum;
pub mod respond;
pub mod select;
pub mod serial;
pub mod server;
pub mod site;
pub mod snapshot;
pub mod supervisor;
pub mod tcp;
pub mod udp;
pub mod zone;

pub use error::{GssError, OverrideError};
pub use snapshot::Snapshot;
pub use supervisor::{default_probes, Core, Gss, GssOptions, Plan, ProbeFactory};
