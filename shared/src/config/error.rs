//! Config errors as operators see them: `FILE:LINE:COL: message`, one per line,
//! in file order, the same whether they come from the TOML parser, serde (unknown
//! key, wrong type) or validation, so `portico check` and a refused `reload` point
//! at the exact spot to fix.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file, located by 1-based line and column (columns count
/// characters, not bytes, so they match what an editor shows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {message}", file.display())]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column in characters.
    pub col: usize,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// Every problem found in a config file; a config is rejected as a whole so that
/// one run of `portico check` shows everything to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// A single error at line 1, column 1 (unreadable file and the like).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
            message: clip_message(&message.into()),
        }])
    }

    /// These errors and `more`, in file order.
    pub fn merged(mut self, more: ConfigErrors) -> ConfigErrors {
        self.0.extend(more.0);
        self.0.sort_by_key(|e| (e.line, e.col));
        self.0.dedup();
        self
    }

    /// Iterates over the errors in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never the case for an `Err` from the loader).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Longest stretch of echoed input (a quoted name, key or value) an error message
/// keeps: enough to recognise it, never a megabyte of it.
pub const MAX_ECHO: usize = 80;

/// Longest error message kept whole (characters); longer ones are cut.
pub const MAX_MESSAGE: usize = 1000;

/// `s` cut to at most `max` characters, the cut marked with `…`.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..end])
        }
    }
}

/// An error message with every quoted stretch (`"..."` or `` `...` ``), which is
/// where messages echo input, cut to [`MAX_ECHO`] characters, and the whole to
/// [`MAX_MESSAGE`]: operators see which value is wrong without it drowning the
/// terminal or the admin reply.
pub fn clip_message(message: &str) -> String {
    if message.chars().count() <= MAX_ECHO {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE * 4));
    let mut quote: Option<char> = None;
    let mut run = String::new();
    for ch in message.chars() {
        match quote {
            Some(q) if ch == q => {
                out.push_str(&clip(&run, MAX_ECHO));
                run.clear();
                out.push(ch);
                quote = None;
            }
            Some(_) => run.push(ch),
            None => {
                out.push(ch);
                if ch == '"' || ch == '`' {
                    quote = Some(ch);
                }
            }
        }
    }
    out.push_str(&clip(&run, MAX_ECHO));
    clip(&out, MAX_MESSAGE)
}

/// Collects errors while validating, turning byte offsets into line:col.
pub(crate) struct Collector<'a> {
    text: &'a str,
    file: &'a Path,
    /// Byte offset at which each line starts.
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(text: &'a str, file: &'a Path) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Collector {
            text,
            file,
            line_starts,
            errors: Vec::new(),
        }
    }

    /// 1-based (line, col) of a byte offset; offsets past the end clamp to it, and
    /// the end of a file that ends in a newline is shown as the end of its last
    /// line (where an editor puts "unexpected end of file").
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        if offset == self.text.len() && self.text.ends_with('\n') {
            offset -= 1;
        }
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text[start..offset].chars().count();
        (line + 1, col + 1)
    }

    /// Records an error at the start of `span`.
    pub(crate) fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = self.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: clip_message(&message.into()),
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The collected errors plus `more`, in file order.
    pub(crate) fn finish_with(mut self, more: ConfigErrors) -> ConfigErrors {
        self.errors.extend(more.0);
        self.finish()
    }

    /// The collected errors in file order (stable for errors at the same spot).
    pub(crate) fn finish(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| (e.line, e.col));
        self.errors.dedup();
        ConfigErrors(self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        let c = Collector::new(text, Path::new("f.toml"));
        assert_eq!(c.position(0), (1, 1));
        assert_eq!(c.position(4), (1, 5));
        assert_eq!(c.position(6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(c.position(12), (2, 6));
        assert_eq!(c.position(999), (2, 9));
        assert_eq!(c.position(text.len()), (2, 9));
    }

    #[test]
    fn echoed_input_is_clipped() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ééééé", 3), "éé…");
        let name = "v".repeat(1 << 20);
        let msg = clip_message(&format!("invalid VIP name \"{name}\": use 1-64 letters"));
        assert_eq!(
            msg,
            format!("invalid VIP name \"{}…\": use 1-64 letters", "v".repeat(79))
        );
        let msg = clip_message(&format!("unknown field `{name}`, expected `name`"));
        assert!(msg.ends_with("…`, expected `name`"), "{msg}");
        // An unterminated quote and unquoted floods are capped all the same.
        assert!(clip_message(&format!("\"{name}")).chars().count() <= MAX_ECHO + 1);
        assert!(clip_message(&name).chars().count() <= MAX_MESSAGE);
    }

    #[test]
    fn display_is_file_line_col_message() {
        let e = ConfigErrors(vec![
            ConfigError {
                file: "a.toml".into(),
                line: 3,
                col: 7,
                message: "bad".into(),
            },
            ConfigError {
                file: "a.toml".into(),
                line: 4,
                col: 1,
                message: "worse".into(),
            },
        ]);
        assert_eq!(e.to_string(), "a.toml:3:7: bad\na.toml:4:1: worse");
    }
}
