//! The lb role: one listener per VIP, backend pools with health and admin state,
//! selection algorithms, the L4 proxy and (later) the L7 proxy.

pub mod backend;
pub mod balance;
pub mod metrics;
pub mod outlier;
pub mod pool;
pub mod refuse;
