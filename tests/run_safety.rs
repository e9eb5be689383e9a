//! Run-level safety: one job per target (the target's lock), mount points
//! required before a delete, and `--max-delete` as one global cap.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn args<'a>(pass: &'a str, src: &'a Path, dst: &'a Path) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("--pass"),
        OsStr::new(pass),
        OsStr::new("--source"),
        src.as_os_str(),
        OsStr::new("--target"),
        dst.as_os_str(),
        OsStr::new("-q"),
    ]
}

/// A copy slowed down by the latency shim (every metadata call sleeps), so
/// a second job can meet it.
fn slow_copy(src: &Path, dst: &Path, job: &str) -> Child {
    Command::new(bin())
        .args(args("copy", src, dst))
        .args(["--threads", "2"])
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_SLOW_ALL", "1")
        .env("LMPI_FAULT_SLOW_US", "20000")
        .env("LMPI_JOB_ID", job)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lmpi")
}

/// Wait until the job's lock names it.
fn wait_for_lock(dst: &Path, job: &str, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        let held = std::fs::read_to_string(dst.join(".lmpi.lock")).unwrap_or_default();
        if held.contains(&format!("job {job} ")) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "{job} ended early");
        assert!(t0.elapsed() < Duration::from_secs(30), "no lock: {held:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tree(src: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let p = src.join(format!("d{d}"));
        std::fs::create_dir_all(&p).unwrap();
        for f in 0..files {
            std::fs::write(p.join(format!("f{f}")), b"x").unwrap();
        }
    }
}

#[test]
fn a_second_job_on_the_same_target_refuses() {
    let (_tmp, src, dst) = src_and_dst();
    tree(&src, 4, 30);
    let mut first = slow_copy(&src, &dst, "first");
    wait_for_lock(&dst, "first", &mut first);
    let out = lmpi(Launch::Alone, &args("copy", &src, &dst));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(".lmpi.lock")
            && err.contains("job first")
            && err.contains("--force-concurrent"),
        "{err}"
    );
    // Other ranks of a job never refuse; a whole second job does.
    if have("mpirun") {
        let out = lmpi(Launch::Mpirun(2), &args("delete", &src, &dst));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("job first"), "{}", text(&out));
    }
    // A dry run changes nothing and takes no lock.
    let mut dry = args("delete", &src, &dst);
    dry.push(OsStr::new("--dry-run"));
    let out = lmpi(Launch::Alone, &dry);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let st = first.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(
        !dst.join(".lmpi.lock").exists(),
        "the lock is removed at the end"
    );
    let diffs = compare_trees(&src, &dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_killed_holder_frees_the_target() {
    let (_tmp, src, dst) = src_and_dst();
    tree(&src, 4, 30);
    let mut first = slow_copy(&src, &dst, "killed");
    wait_for_lock(&dst, "killed", &mut first);
    first.kill().unwrap(); // SIGKILL: no clean-up ran
    first.wait().unwrap();
    assert!(dst.join(".lmpi.lock").exists());
    for pass in ["copy", "delete", "dirtime"] {
        let launch = if have("mpirun") {
            Launch::Mpirun(3)
        } else {
            Launch::Alone
        };
        let out = lmpi(launch, &args(pass, &src, &dst));
        assert_eq!(out.status.code(), Some(0), "{pass}: {}", text(&out));
    }
    assert!(!dst.join(".lmpi.lock").exists());
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn the_lock_file_is_never_copied_deleted_or_followed() {
    let (tmp, src, dst) = src_and_dst();
    tree(&src, 1, 3);
    // A source that was once a target may hold a lock file: not copied.
    std::fs::write(src.join(".lmpi.lock"), b"job old host h pid 1\n").unwrap();
    let (code, rep, out) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(total(&rep, "files"), 3, "{rep}");
    assert!(!dst.join(".lmpi.lock").exists());
    // A symlink planted as the lock is not followed: one line, exit 2.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    std::os::unix::fs::symlink(&victim, dst.join(".lmpi.lock")).unwrap();
    let out = lmpi(Launch::Alone, &args("copy", &src, &dst));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    std::fs::remove_file(dst.join(".lmpi.lock")).unwrap();
    // --force-concurrent takes no lock at all.
    let (code, _, out) = pass(Launch::Alone, "delete", &src, &dst, &["--force-concurrent"]);
    assert_eq!(code, 0, "{}", text(&out));
    assert!(src.join(".lmpi.lock").exists());
}

fn count_entries(p: &Path) -> usize {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            1 + if e.file_type().unwrap().is_dir() {
                count_entries(&e.path())
            } else {
                0
            }
        })
        .sum()
}

/// An unmounted source is not an empty one: a stray file in the mount
/// point passed the empty-source check and the delete emptied the target.
#[test]
fn require_mountpoints_refuses_an_unmounted_root() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let Some(_dst) = TmpfsMount::at(&tmp.path().join("dst"), "size=8m") else {
        return;
    };
    let dst = tmp.path().join("dst");
    {
        let Some(_m) = TmpfsMount::at(&src, "size=8m") else {
            return;
        };
        tree(&src, 10, 20);
        let (code, _, out) = pass(Launch::Alone, "copy", &src, &dst, &[]);
        assert_eq!(code, 0, "{}", text(&out));
        // Mounted: the delete runs.
        let (code, _, out) = pass(
            Launch::Alone,
            "delete",
            &src,
            &dst,
            &["--require-mountpoints"],
        );
        assert_eq!(code, 0, "{}", text(&out));
    }
    std::fs::write(src.join("stray"), b"s").unwrap();
    assert_eq!(count_entries(&dst), 210);
    let (code, _, out) = pass(
        Launch::Alone,
        "delete",
        &src,
        &dst,
        &["--require-mountpoints"],
    );
    assert_eq!(code, 3, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a mount point") && err.contains("src"),
        "{err}"
    );
    assert_eq!(count_entries(&dst), 210);
    // The same from the config: the key, and `[lustre] mode = "require"`.
    for cfg in [
        "require_mountpoints = true\n",
        "[lustre]\nmode = \"require\"\n",
    ] {
        let file = tmp.path().join("lmpi.toml");
        std::fs::write(&file, cfg).unwrap();
        let launch = if have("mpirun") {
            Launch::Mpirun(2)
        } else {
            Launch::Alone
        };
        let (code, _, out) = pass(
            launch,
            "final",
            &src,
            &dst,
            &["--config", file.to_str().unwrap()],
        );
        assert_eq!(code, 3, "{cfg}: {}", text(&out));
        assert_eq!(count_entries(&dst), 210);
    }
}

/// A target with exactly 124 entries the source lacks: a doomed subtree
/// (1 + 3 directories, 90 files), 20 stray files at the root and 10 in a
/// kept directory.
fn target_with_124_due(src: &Path, dst: &Path) {
    for side in [src, dst] {
        std::fs::create_dir_all(side.join("keep")).unwrap();
        std::fs::write(side.join("keep/k"), b"k").unwrap();
    }
    for a in 0..3 {
        let p = dst.join(format!("gone/a{a}"));
        std::fs::create_dir_all(&p).unwrap();
        for f in 0..30 {
            std::fs::write(p.join(format!("f{f}")), b"x").unwrap();
        }
    }
    for i in 0..20 {
        std::fs::write(dst.join(format!("stray{i}")), b"s").unwrap();
    }
    for i in 0..10 {
        std::fs::write(dst.join(format!("keep/stray{i}")), b"s").unwrap();
    }
}

/// --max-delete N is one cap for the whole job: all 124 go when N >= 124,
/// none (exit 5, one line saying how many) when N < 124, at any rank count.
#[test]
fn max_delete_is_one_global_cap() {
    let mut launches = vec![Launch::Alone];
    if have("mpirun") {
        launches.push(Launch::Mpirun(3));
    }
    for launch in launches {
        for pass in ["delete", "final"] {
            for cap in [123u64, 124, 125] {
                let (_tmp, src, dst) = src_and_dst();
                target_with_124_due(&src, &dst);
                assert_eq!(count_entries(&dst), 2 + 124);
                let n = cap.to_string();
                let (code, rep, out) = pass_with(
                    launch,
                    pass,
                    &src,
                    &dst,
                    &["--max-delete", &n, "--batch-size", "7"],
                );
                let what = format!("{pass} {launch:?} N={cap}: {}", text(&out));
                if cap < 124 {
                    assert_eq!(code, 5, "{what}");
                    assert_eq!(total(&rep, "deleted"), 0, "{what}");
                    assert_eq!(count_entries(&dst), 2 + 124, "{what}");
                    let err = String::from_utf8_lossy(&out.stderr);
                    assert!(
                        err.contains("124 entries due") && err.contains("cap 123"),
                        "{what}"
                    );
                    if let Launch::Alone = launch {
                        assert_eq!(err.trim_end().lines().count(), 1, "{what}");
                    }
                } else {
                    assert_eq!(code, 0, "{what}");
                    assert_eq!(total(&rep, "deleted"), 124, "{what}");
                    assert_eq!(count_entries(&dst), 2, "{what}");
                }
            }
        }
    }
}

fn pass_with(
    launch: Launch,
    pass: &str,
    src: &Path,
    dst: &Path,
    extra: &[&str],
) -> (i32, serde_json::Value, std::process::Output) {
    common::pass(launch, pass, src, dst, extra)
}
