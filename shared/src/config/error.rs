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
            message: message.into(),
        }])
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
            message: message.into(),
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
