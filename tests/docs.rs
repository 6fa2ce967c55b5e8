//! Documentation stays true: every metric the code records is documented in the
//! README, and every metric the alerting rules use is one the code records.

use std::collections::BTreeSet;
use std::path::Path;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("portico_") {
        let start = i + pos;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if before_ok {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Names passed as string literals to the metrics macros or defined as constants.
fn recorded_metrics() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["lb/src", "gss/src", "shared/src", "src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for quoted in line.split('"').skip(1).step_by(2) {
                if quoted.starts_with("portico_") && metric_names(quoted).contains(quoted) {
                    names.insert(quoted.to_string());
                }
            }
        }
    }
    names
}

#[test]
fn every_recorded_metric_is_documented_in_the_readme() {
    let recorded = recorded_metrics();
    assert!(
        recorded.len() >= 15,
        "found the metrics in the code: {recorded:?}"
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let documented = metric_names(&readme);
    let missing: Vec<_> = recorded.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "metrics missing from README.md: {missing:?}"
    );
}

#[test]
fn alert_rules_use_only_recorded_metrics() {
    let recorded = recorded_metrics();
    let rules =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alerts.yml"))
            .unwrap();
    let used = metric_names(&rules);
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            recorded.contains(base),
            "config/alerts.yml uses unknown metric {name}"
        );
    }
}
