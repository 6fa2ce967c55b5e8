//! Configuration: TOML read into serde `Raw*` structs (unknown keys rejected, spans
//! kept), then validated into the [`model`] that the roles consume. Every error names
//! `FILE:LINE:COL` so `portico check` and a refused reload point at the culprit.

mod error;
mod files;
mod model;
mod raw;
mod validate;
mod zone_check;

use std::path::Path;

pub use error::{clip, clip_message, ConfigError, ConfigErrors, MAX_ECHO, MAX_MESSAGE};
pub use model::*;

/// Reads and validates the config file at `path`, then opens and parses every file it
/// names (certificates, keys, CA bundles), each problem reported at the line naming
/// it. The one loader behind `portico check`, `run` and reload, so they cannot
/// disagree. An unreadable config file is reported as an error at line 1, column 1
/// so callers print every failure the same way.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_text(&text, path),
        Err(e) => Err(ConfigErrors::whole_file(
            path,
            format!("cannot read config file: {e}"),
        )),
    }
}

/// [`load`] for config text already read: [`parse`], then the named files.
pub fn load_text(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let (parsed, files) = parse_refs(text, path);
    // Files are checked even when validation found problems, so one run of
    // `portico check` lists everything to fix.
    match (parsed, files.check(text, path)) {
        (Ok(config), Ok(())) => Ok(config),
        (Ok(_), Err(e)) | (Err(e), Ok(())) => Err(e),
        (Err(e), Err(more)) => Err(e.merged(more)),
    }
}

/// Validates config `text` without touching any file (the named certificates and
/// keys are not opened; [`load`] does that); `path` is used in error messages and
/// kept in [`Config::path`] so a reload re-reads the same file.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    parse_refs(text, path).0
}

/// serde stops at the first problem, so an unknown key on a line of its own is
/// recorded, commented out (columns unchanged) and the text parsed again: one run
/// reports every typo'd key and, once the rest parses, the validation errors too.
///
/// Also returns the files the config names (as far as validation got), unopened.
fn parse_refs(text: &str, path: &Path) -> (Result<Config, ConfigErrors>, files::FileRefs) {
    let mut c = error::Collector::new(text, path);
    let mut current = text.to_string();
    // Bounded: each round removes one line.
    for _ in 0..64 {
        let e = match toml::from_str::<raw::RawConfig>(&current) {
            Ok(raw) => {
                let (validated, files) = validate::validate(raw, text, path);
                let result = match validated {
                    Ok(config) if !c.has_errors() => Ok(config),
                    Ok(_) => Err(c.finish()),
                    Err(more) => Err(c.finish_with(more)),
                };
                return (result, files);
            }
            Err(e) => e,
        };
        let span = e.span().unwrap_or(0..0);
        c.err(span.clone(), serde_message(e.message()));
        match blank_unknown_key_line(&current, &e, span.start) {
            Some(next) => current = next,
            None => break,
        }
    }
    (Err(c.finish()), files::FileRefs::default())
}

/// toml's message on one line; for an unknown key close to a known one, a
/// "did you mean" instead of the full list of keys.
fn serde_message(message: &str) -> String {
    let message = message.trim().replace('\n', "; ");
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((key, expected)) = rest.split_once('`') else {
        return message;
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (edit_distance(key, k), k))
        .min();
    match best {
        Some((d, k)) if d <= 2 && d < key.len() => {
            format!("unknown field `{key}`; did you mean `{k}`?")
        }
        _ => message,
    }
}

/// Levenshtein distance, for typo suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// For an "unknown field" error whose key starts a single-line `key = value`
/// line, returns the text with that line commented out; otherwise `None` (the
/// error may hide others, but guessing further would report phantoms).
fn blank_unknown_key_line(text: &str, e: &toml::de::Error, at: usize) -> Option<String> {
    if !e.message().starts_with("unknown field") {
        return None;
    }
    let start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    if !text[start..at].trim().is_empty() {
        return None; // the key is inside an inline table
    }
    let end = text[at..].find('\n').map(|i| at + i).unwrap_or(text.len());
    let line = &text[at..end];
    // The whole key/value must be on this line, or removing it breaks the syntax.
    toml::from_str::<toml::Table>(line).ok()?;
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..at]);
    out.push('#');
    out.push_str(&text[at + line.chars().next()?.len_utf8()..]);
    Some(out)
}

#[cfg(test)]
mod tests;
