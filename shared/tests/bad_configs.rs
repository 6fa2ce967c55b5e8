//! Every file in `tests/bad/` is a realistic broken config whose leading comment
//! lists the errors it must produce, one `# expect: LINE:COL: fragment` per line.
//! The loader must report each of them at exactly that position. The same files
//! drive the CLI's `portico check` test, so they double as its fixtures.

use std::path::{Path, PathBuf};

/// One expected error: position and a fragment of the message.
struct Expect {
    line: usize,
    col: usize,
    fragment: String,
}

/// Reads the `# expect:` lines from the file's leading comment block.
fn expectations(path: &Path, text: &str) -> Vec<Expect> {
    let mut out = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let Some(rest) = line.strip_prefix("# expect:") else {
            continue;
        };
        let mut parts = rest.trim_start().splitn(3, ':');
        let (Some(l), Some(c), Some(fragment)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("{}: malformed expect line {line:?}", path.display());
        };
        let parse = |s: &str| -> usize {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{}: bad number in {line:?}", path.display()))
        };
        out.push(Expect {
            line: parse(l),
            col: parse(c),
            fragment: fragment.trim().to_string(),
        });
    }
    out
}

fn bad_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_bad_config_reports_its_errors_at_the_right_place() {
    let files = bad_files();
    assert!(
        files.len() >= 10,
        "expected a set of bad configs, found {files:?}"
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable fixture");
        let expects = expectations(path, &text);
        assert!(
            !expects.is_empty(),
            "{} has no `# expect: LINE:COL: fragment` line",
            path.display()
        );
        let errors = match shared::config::load(path) {
            Ok(_) => {
                failures.push(format!("{}: accepted, but it is broken", path.display()));
                continue;
            }
            Err(e) => e,
        };
        let rendered = errors.to_string();
        for x in &expects {
            let found = errors
                .iter()
                .any(|e| e.line == x.line && e.col == x.col && e.message.contains(&x.fragment));
            let prefix = format!("{}:{}:{}: ", path.display(), x.line, x.col);
            if !found || !rendered.lines().any(|l| l.starts_with(&prefix)) {
                failures.push(format!(
                    "{}: expected {}:{}: {:?}; got:\n{rendered}",
                    path.display(),
                    x.line,
                    x.col,
                    x.fragment
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_are_reported_in_file_order() {
    for path in bad_files() {
        if let Err(e) = shared::config::load(&path) {
            let positions: Vec<(usize, usize)> = e.iter().map(|e| (e.line, e.col)).collect();
            let mut sorted = positions.clone();
            sorted.sort();
            assert_eq!(positions, sorted, "{}", path.display());
        }
    }
}
