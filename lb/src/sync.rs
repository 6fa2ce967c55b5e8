//! The one way the lb takes a std lock (see [`shared::sync`]).

pub(crate) use shared::sync::lock;
