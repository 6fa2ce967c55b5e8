//! Configuration: TOML read into serde `Raw*` structs (unknown keys rejected, spans
//! kept), then validated into the [`model`] that the roles consume. Every error names
//! `FILE:LINE:COL` so `portico check` and a refused reload point at the culprit.

mod error;
mod model;
mod raw;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

/// Reads and validates the config file at `path`. An unreadable file is reported
/// as an error at line 1, column 1 so callers print every failure the same way.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors::whole_file(
            path,
            format!("cannot read config file: {e}"),
        )),
    }
}

/// Validates config `text`; `path` is used in error messages and kept in
/// [`Config::path`] so a reload re-reads the same file.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let mut c = error::Collector::new(text, path);
            let span = e.span().unwrap_or(0..0);
            c.err(span, e.message().trim().replace('\n', "; "));
            return Err(c.finish());
        }
    };
    validate::validate(raw, text, path)
}

#[cfg(test)]
mod tests;
