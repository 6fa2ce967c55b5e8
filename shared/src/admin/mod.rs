//! The admin socket: a line protocol on a Unix stream socket. [`protocol`] parses a
//! line into a [`Command`] and renders a [`Reply`]; [`server`] accepts connections and
//! dispatches each command to the role handlers plugged in by the binary.

pub mod protocol;
pub mod server;

pub use protocol::{BackendId, Command, Reply, SiteOverride};
pub use server::{AdminHandler, HandlerFuture, Peer};
