//! `portico check`: every example config validates, and each bad config's errors are
//! printed as `FILE:LINE:COL: message` with exit status 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn tomls(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_configs_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let files = tomls(&dir);
    assert!(
        files.iter().any(|f| f.ends_with("demo.toml")),
        "config/demo.toml exists"
    );
    for file in files {
        let out = Command::new(common::bin())
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} should be valid:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn bad_configs_name_line_and_column() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shared/tests/bad");
    let files = tomls(&dir);
    assert!(
        files.len() >= 5,
        "a set of bad configs exists in {}",
        dir.display()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(str::trim)
            .collect();
        assert!(
            !expects.is_empty(),
            "{} lists its expected errors",
            file.display()
        );
        let out = Command::new(common::bin())
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", file.display());
        for want in expects {
            let (pos, fragment) = want.split_once(": ").unwrap_or((want, ""));
            let prefix = format!("{}:{pos}: ", file.display());
            assert!(
                stderr
                    .lines()
                    .any(|l| l.starts_with(&prefix) && l.contains(fragment)),
                "{}: expected a line starting {prefix:?} containing {fragment:?} in:\n{stderr}",
                file.display()
            );
        }
    }
}

#[test]
fn missing_file_is_an_error_with_position() {
    let out = Command::new(common::bin())
        .args(["check", "--config", "/nonexistent/portico.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("/nonexistent/portico.toml:1:1: "),
        "{stderr}"
    );
}
