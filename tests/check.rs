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
        if out.status.success() {
            continue;
        }
        // The production example names certificates and CAs under /etc/portico (and
        // an OCSP response under /var/lib/portico) that this machine lacks: those, and only those, are reported, each at the line
        // and column that names it.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let text = std::fs::read_to_string(&file).unwrap();
        for line in stderr.lines() {
            let rest = line
                .strip_prefix(&format!("{}:", file.display()))
                .unwrap_or_else(|| panic!("{}: unexpected {line:?}", file.display()));
            let mut parts = rest.splitn(3, ':');
            let (l, c, msg) = (
                parts.next().and_then(|n| n.parse::<usize>().ok()).unwrap(),
                parts.next().and_then(|n| n.parse::<usize>().ok()).unwrap(),
                parts.next().unwrap(),
            );
            let named = msg
                .split('"')
                .nth(1)
                .filter(|p| p.starts_with("/etc/portico/") || p.starts_with("/var/lib/portico/"))
                .unwrap_or_else(|| {
                    panic!(
                        "{} should be valid but for its files: {line}",
                        file.display()
                    )
                });
            let src_line = text.lines().nth(l - 1).unwrap();
            let at: String = src_line.chars().skip(c - 1).collect();
            assert!(
                at.starts_with(&format!("\"{named}\"")),
                "{line}: column {c} of line {l} is {at:?}"
            );
        }
    }
}

fn write_config(dir: &common::TempDir, text: &str) -> PathBuf {
    let path = dir.path("portico.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A certificate file that does not exist is found by `check`, at the line naming it,
/// and `run` refuses the config with the very same line (one loader for both).
#[test]
fn check_and_run_report_a_missing_certificate_at_its_line() {
    let dir = common::TempDir::new("check-files");
    let missing = dir.path("missing.pem");
    let config = write_config(
        &dir,
        &format!(
            r#"[[vip]]
name = "web"
listen = "127.0.0.1:{}"
mode = "https"
tls = {{ cert = "{m}", key = "{m}" }}
backends = [ {{ name = "w1", address = "127.0.0.1:8080" }} ]
"#,
            common::free_port(),
            m = missing.display()
        ),
    );
    let want = format!(
        "{}:5:16: tls cert \"{}\": ",
        config.display(),
        missing.display()
    );
    for cmd in ["check", "run"] {
        let out = Command::new(common::bin())
            .args([cmd, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(
            stderr.lines().any(|l| l.starts_with(&want)),
            "{cmd}: expected {want:?} in:\n{stderr}"
        );
    }
}

/// A megabyte of VIP name comes back as a short, clipped quote, not a megabyte.
#[test]
fn check_does_not_echo_huge_values() {
    let dir = common::TempDir::new("check-echo");
    let name = "n".repeat(1 << 20);
    let config = write_config(
        &dir,
        &format!(
            "[[vip]]\nname = \"{name}\"\nlisten = \"127.0.0.1:1\"\nbackends = [ {{ name = \"b\", address = \"127.0.0.1:0\" }} ]\n"
        ),
    );
    let out = Command::new(common::bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        &stderr[..stderr.len().min(300)]
    );
    assert!(stderr.len() < 4096, "{} bytes of errors", stderr.len());
    assert!(stderr.contains("port 0"), "{stderr}");
    assert!(stderr.contains('…'), "{stderr}");
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

/// A reload reports a file problem the way `check` does, at the line naming it, and
/// the running config keeps serving.
#[test]
fn reload_reports_a_missing_ca_at_its_line() {
    let dir = common::TempDir::new("reload-files");
    let vip = |probe: &str| {
        format!(
            "[admin]\nsocket = \"{}\"\n\n[[vip]]\nname = \"smtp\"\nlisten = \"127.0.0.1:{}\"\nbackends = [ {{ name = \"mx1\", address = \"127.0.0.1:{}\" }} ]\n{probe}\n",
            dir.path("admin.sock").display(),
            common::free_port(),
            common::free_port()
        )
    };
    let portico = common::Portico::start(&dir, &vip(""));
    let missing = dir.path("no-such-ca.pem");
    let probe = format!(
        "probe = {{ kind = \"smtp\", tls = true, ca = \"{}\" }}",
        missing.display()
    );
    std::fs::write(&portico.config, vip(&probe)).unwrap();
    let (ok, out) = portico.ctl_raw(&["reload"]).unwrap();
    assert!(!ok, "{out}");
    let want = format!(
        "{}:8:43: probe ca \"{}\": ",
        portico.config.display(),
        missing.display()
    );
    assert!(out.contains(&want), "expected {want:?} in {out}");
    assert!(portico.ctl("show vips").starts_with("smtp "));
}

/// The cluster secret is read by `check` as by `run`: a missing or short file is an
/// error at the line naming it.
#[test]
fn check_reports_a_short_or_missing_cluster_secret_at_its_line() {
    let dir = common::TempDir::new("check-secret");
    let short = dir.path("short.key");
    std::fs::write(&short, "hunter2\n").unwrap();
    let missing = dir.path("missing.key");
    for (file, reason) in [
        (&short, "secret is 7 bytes; use at least 16"),
        (&missing, "No such file"),
    ] {
        let config = write_config(
            &dir,
            &format!(
                r#"[[vip]]
name = "smtp"
listen = "127.0.0.1:{}"
backends = [ {{ name = "mx1", address = "127.0.0.1:12525" }} ]

[cluster]
id = "mail"
node = "a"
secret_file = "{}"

[[cluster.member]]
id = "a"
address = "127.0.0.1:{}"
"#,
                common::free_port(),
                file.display(),
                common::free_port()
            ),
        );
        let out = Command::new(common::bin())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let want = format!(
            "{}:9:15: cluster secret_file \"{}\": ",
            config.display(),
            file.display()
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&want) && l.contains(reason)),
            "expected {want:?} … {reason:?} in:\n{stderr}"
        );
    }
}
