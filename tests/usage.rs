//! The command line as an admin meets it: options a pass does not use are
//! refused (one line, exit 2, nothing touched) while a shared config file's
//! keys are not.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;

use common::*;

const PASSES: [&str; 5] = ["copy", "delete", "dirtime", "final", "verify"];

/// Each pass-only option, its value (if it takes one) and the passes that take it.
const PASS_ONLY: [(&str, Option<&str>, &[&str]); 8] = [
    ("--from-manifest", Some("MANIFEST"), &["verify"]),
    ("--content", None, &["verify"]),
    ("--sample", Some("0.5"), &["verify"]),
    ("--max-delete", Some("5"), &["delete", "final"]),
    ("--allow-empty-source", None, &["delete", "final"]),
    ("--require-mountpoints", None, &["delete", "final"]),
    ("--check-xattrs", None, &["copy", "final"]),
    ("--changes", Some("JOURNAL"), &["final"]),
];

fn run(pass: &str, src: &Path, dst: &Path, extra: &[&OsStr]) -> Output {
    let mut args: Vec<&OsStr> = ["--pass", pass, "-q", "--error-log", "/dev/null"]
        .into_iter()
        .map(OsStr::new)
        .collect();
    args.extend([OsStr::new("--source"), src.as_os_str()]);
    args.extend([OsStr::new("--target"), dst.as_os_str()]);
    args.extend(extra);
    lmpi(Launch::Alone, &args)
}

fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

/// Every option outside its passes is one line naming it and the passes
/// that take it, exit 2, and the target is not touched; inside them it is
/// not refused.
#[test]
fn each_pass_refuses_the_options_it_does_not_use() {
    let (tmp, src, dst) = src_and_dst();
    std::fs::write(src.join("f"), b"data").unwrap();
    let manifest = tmp.path().join("m");
    std::fs::write(&manifest, b"").unwrap();
    let journal = tmp.path().join("journal");
    for (flag, value, takers) in PASS_ONLY {
        let value = value.map(|v| match v {
            "MANIFEST" => manifest.as_os_str(),
            "JOURNAL" => journal.as_os_str(),
            v => OsStr::new(v),
        });
        let extra: Vec<&OsStr> = std::iter::once(OsStr::new(flag)).chain(value).collect();
        for pass in PASSES {
            let before = listing(&dst);
            let out = run(pass, &src, &dst, &extra);
            let err = String::from_utf8_lossy(&out.stderr);
            if takers.contains(&pass) {
                assert!(
                    !err.contains("is for --pass"),
                    "{pass} {flag}: {}",
                    text(&out)
                );
                continue;
            }
            let want = format!("lmpi: {flag} is for --pass {} only", takers.join(" or "));
            assert_eq!(out.status.code(), Some(2), "{pass} {flag}: {}", text(&out));
            assert_eq!(err.trim_end(), want, "{pass} {flag}");
            assert_eq!(listing(&dst), before, "{pass} {flag} touched the target");
        }
        // What the passes that take the option copied goes, for the next one.
        std::fs::remove_dir_all(&dst).unwrap();
        std::fs::create_dir(&dst).unwrap();
    }
}

/// A config file may set keys that only some passes use: every pass runs
/// with it (one file serves the whole migration).
#[test]
fn config_keys_of_other_passes_are_not_refused() {
    let (tmp, src, dst) = src_and_dst();
    std::fs::write(src.join("f"), b"data").unwrap();
    let cfg = tmp.path().join("shared.toml");
    std::fs::write(
        &cfg,
        "verify_content = true\nverify_sample = 0.5\ncheck_xattrs = true\nrequire_mountpoints = false\n",
    )
    .unwrap();
    for pass in ["copy", "dirtime", "verify", "delete", "final"] {
        let out = run(pass, &src, &dst, &[OsStr::new("--config"), cfg.as_os_str()]);
        assert_eq!(out.status.code(), Some(0), "{pass}: {}", text(&out));
    }
}
