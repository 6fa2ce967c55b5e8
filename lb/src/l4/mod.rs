//! The L4 side of the lb: the accept loop and per-client task of a `mode = "tcp"`
//! VIP (`tcp`), the byte relay (`copy`, with `splice` for bulk), the judging of a
//! server-speaks-first backend's greeting (`greeting`) and the protocol refusals
//! (`refuse`). Nothing outside this module imports it but the supervisor.

pub(crate) mod copy;
pub mod greeting;
pub(crate) mod refuse;
pub(crate) mod splice;
pub(crate) mod tcp;
