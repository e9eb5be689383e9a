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
    (
        "--from-manifest",
        Some("MANIFEST"),
        &["copy", "final", "verify"],
    ),
    ("--content", None, &["copy", "final", "verify"]),
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
            let names = match takers.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            let want = format!("lmpi: {flag} is for --pass {names} only");
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

fn lmpi_args(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    lmpi(Launch::Alone, &args)
}

/// A mistyped option or value keeps clap's suggestion, on the one line.
#[test]
fn usage_errors_keep_the_suggestion() {
    for (args, want) in [
        (
            &["--pas", "copy"][..],
            "a similar argument exists: '--pass'",
        ),
        (&["--pass", "cpy"], "a similar value exists: 'copy'"),
        (&["ctll"], "a similar subcommand exists: 'ctl'"),
    ] {
        let out = lmpi_args(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("lmpi: "), "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// --help opens with every pass and the subcommands, and documents the
/// environment and the signals.
#[test]
fn help_covers_every_pass_the_environment_and_signals() {
    let out = lmpi_args(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let h = String::from_utf8_lossy(&out.stdout);
    let opening = h.split("Usage:").next().unwrap();
    for word in PASSES.iter().copied().chain(["lmpi track", "lmpi ctl"]) {
        assert!(
            opening.contains(word),
            "--help's opening lacks {word}:\n{opening}"
        );
    }
    for word in [
        "LMPI_JOB_ID",
        "LMPI_RESOLVE",
        "LMPI_CONFIG",
        "SIGUSR1",
        "Exit status",
    ] {
        assert!(h.contains(word), "--help lacks {word}");
    }
}

/// --version names the commit when built from a git checkout.
#[test]
fn version_names_the_commit() {
    let out = lmpi_args(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(concat!("lmpi ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output();
    match head {
        Ok(o) if o.status.success() => {
            let commit = String::from_utf8_lossy(&o.stdout).trim().to_string();
            assert!(v.contains(&commit), "{v} lacks the commit {commit}");
        }
        _ if in_ci() => panic!("git is needed to check the version's commit"),
        _ => eprintln!("skipped the commit check: no git checkout"),
    }
}

/// The man page and the completion scripts come out of the binary.
#[test]
fn man_page_and_completions_are_produced() {
    let out = lmpi_args(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(man.contains(".TH lmpi 1"), "{man}");
    for word in ["final", "verify", "LMPI_JOB_ID", "SIGUSR1", "max\\-delete"] {
        assert!(man.contains(word), "the man page lacks {word}");
    }
    if have("groff") {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("lmpi.1");
        std::fs::write(&page, man.as_bytes()).unwrap();
        let o = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o));
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef lmpi"),
        ("fish", "complete -c lmpi"),
    ] {
        let out = lmpi_args(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("max-delete"), "{shell} lacks --max-delete");
    }
    if have("bash") {
        let out = lmpi_args(&["completions", "bash"]);
        let o = std::process::Command::new("bash")
            .args(["-n", "-c"])
            .arg(String::from_utf8_lossy(&out.stdout).as_ref())
            .output()
            .unwrap();
        assert!(o.status.success(), "bash -n: {}", text(&o));
    }
}

/// One broker may serve several jobs: a command that changes a job needs
/// --job (or --all); status and ping still ask every job.
#[test]
fn ctl_commands_that_change_a_job_need_job_or_all() {
    for cmd in ["stop", "start", "pool-grow"] {
        let mut args: Vec<&OsStr> = vec![OsStr::new("ctl"), OsStr::new(cmd)];
        if cmd == "pool-grow" {
            args.push(OsStr::new("2"));
        }
        let out = lmpi(Launch::Alone, &args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("ctl {cmd}: give --job ID")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
