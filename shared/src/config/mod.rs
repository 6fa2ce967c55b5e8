//! Configuration: TOML read into serde `Raw*` structs (unknown keys rejected, spans
//! kept), then validated into the [`model`] that the roles consume. Every error names
//! `FILE:LINE:COL` so `portico check` and a refused reload point at the culprit.

mod model;

pub use model::*;
