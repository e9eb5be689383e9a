//! Faults and bad input: nothing lost on the source, nothing wrongly deleted on
//! the target, a clear report, and a rerun converges.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn lmpi_with_env(args: &[&OsStr], env: &[(&str, &OsStr)]) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run lmpi")
}

fn base_args<'a>(pass: &'a str, src: &'a Path, dst: &'a Path, elog: &'a Path) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("--pass"),
        OsStr::new(pass),
        OsStr::new("--source"),
        src.as_os_str(),
        OsStr::new("--target"),
        dst.as_os_str(),
        OsStr::new("--error-log"),
        elog.as_os_str(),
        OsStr::new("-q"),
    ]
}

fn dirs(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (s, d) = (tmp.join("src"), tmp.join("dst"));
    std::fs::create_dir_all(&s).unwrap();
    std::fs::create_dir_all(&d).unwrap();
    (s, d, tmp.join("errors.log"))
}

#[test]
fn eio_on_the_source_never_deletes() {
    // Only ENOENT means "not on the source": every other answer keeps the entry.
    for (errno, message) in [
        (libc::EIO, "Input/output error"),
        (libc::ESTALE, "Stale file handle"),
        (libc::ENOTCONN, "not connected"),
        (libc::EACCES, "Permission denied"),
    ] {
        let shim = shim();
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst, elog) = dirs(tmp.path());
        std::fs::write(src.join("keep"), b"k").unwrap();
        std::fs::create_dir_all(dst.join("eio-subtree/inner")).unwrap();
        std::fs::write(dst.join("eio-subtree/inner/f"), b"precious").unwrap();
        std::fs::write(dst.join("eio-file"), b"precious").unwrap();
        std::fs::write(dst.join("really-gone"), b"x").unwrap();
        std::fs::write(dst.join("keep"), b"k").unwrap();
        let errno_s = errno.to_string();
        let out = lmpi_with_env(
            &base_args("delete", &src, &dst, &elog),
            &[
                ("LD_PRELOAD", shim.as_os_str()),
                ("LMPI_FAULT_EIO", OsStr::new("eio-")),
                ("LMPI_FAULT_ERRNO", OsStr::new(&errno_s)),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{message}: {}", text(&out));
        assert!(
            dst.join("eio-subtree/inner/f").exists(),
            "deleted on {message}"
        );
        assert!(dst.join("eio-file").exists(), "deleted on {message}");
        assert!(
            !dst.join("really-gone").exists(),
            "ENOENT must still delete"
        );
        let log = std::fs::read_to_string(&elog).unwrap();
        assert!(
            log.contains("eio-file") && log.contains(message),
            "{message}: {log}"
        );
        // Without the fault, the rerun converges.
        let out = lmpi_with_env(&base_args("delete", &src, &dst, &elog), &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(!dst.join("eio-subtree").exists() && !dst.join("eio-file").exists());
    }
}

#[test]
fn unopenable_source_dir_protects_its_target_subtree() {
    let shim = shim();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, elog) = dirs(tmp.path());
    std::fs::create_dir_all(src.join("eio-dir")).unwrap();
    std::fs::create_dir_all(dst.join("eio-dir")).unwrap();
    std::fs::write(dst.join("eio-dir/only-on-target"), b"x").unwrap();
    let out = lmpi_with_env(
        &base_args("delete", &src, &dst, &elog),
        &[
            ("LD_PRELOAD", shim.as_os_str()),
            ("LMPI_FAULT_EIO", OsStr::new("eio-dir")),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(dst.join("eio-dir/only-on-target").exists());
}

/// openat2 answers here (Linux 5.6+, not refused by a seccomp filter).
fn kernel_has_openat2() -> bool {
    let how = [libc::O_RDONLY as u64 | libc::O_DIRECTORY as u64, 0, 0];
    // SAFETY: openat2(AT_FDCWD, "/", &how, 24): the path is a static C string
    // and `how` a live local of exactly the size passed (struct open_how is
    // three u64s); the kernel only reads both. A returned fd is closed at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            how.as_ptr(),
            std::mem::size_of_val(&how),
        )
    };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by openat2 and is ours alone.
        unsafe { libc::close(fd as i32) };
    }
    fd >= 0
}

/// A directory deeper than the root's children is opened with openat2 from
/// the root, by its whole relative path. The fault names that path (no
/// single name contains a '/'), so only openat2 sees it: this proves the shim
/// reaches openat2 (made through syscall(2)), which `bench/latency.sh` and
/// the tests of unopenable directories rely on.
#[test]
fn eio_opening_a_deep_directory_by_its_path() {
    if !kernel_has_openat2() {
        eprintln!("skipped: this kernel has no openat2 (lmpi opens one component at a time)");
        return;
    }
    let shim = shim();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, elog) = dirs(tmp.path());
    std::fs::create_dir_all(src.join("top/deep/deeper")).unwrap();
    std::fs::write(src.join("top/deep/deeper/f"), b"f").unwrap();
    std::fs::write(src.join("top/g"), b"g").unwrap();
    let out = lmpi_with_env(
        &base_args("copy", &src, &dst, &elog),
        &[
            ("LD_PRELOAD", shim.as_os_str()),
            ("LMPI_FAULT_EIO", OsStr::new("top/deep")),
            // The default resolver, whatever the caller's environment says.
            ("LMPI_RESOLVE", OsStr::new("")),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = std::fs::read_to_string(&elog).unwrap();
    assert!(
        log.contains("top/deep") && log.contains("Input/output error"),
        "{log}"
    );
    assert!(dst.join("top/g").exists(), "the rest is copied");
    assert!(!dst.join("top/deep/deeper/f").exists());
}

/// verify with a name it cannot read: one error line for it, and no
/// second, false line for the hardlink group the unread name belongs to.
#[test]
fn verify_skips_hardlink_counts_when_it_could_not_read_a_name() {
    let shim = shim();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, elog) = dirs(tmp.path());
    std::fs::write(src.join("a"), b"a").unwrap();
    std::fs::hard_link(src.join("a"), src.join("eio-b")).unwrap();
    for p in ["copy", "dirtime"] {
        let out = lmpi_with_env(&base_args(p, &src, &dst, &elog), &[]);
        assert_eq!(out.status.code(), Some(0), "{p}: {}", text(&out));
    }
    let out = lmpi_with_env(&base_args("verify", &src, &dst, &elog), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut args = base_args("verify", &src, &dst, &elog);
    args.retain(|a| *a != OsStr::new("-q"));
    let out = lmpi_with_env(
        &args,
        &[
            ("LD_PRELOAD", shim.as_os_str()),
            ("LMPI_FAULT_EIO", OsStr::new("eio-")),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = std::fs::read_to_string(&elog).unwrap();
    assert!(
        log.contains("eio-b") && log.contains("Input/output error"),
        "{log}"
    );
    assert!(!log.contains("hard links"), "{log}");
    assert!(
        text(&out).contains("hardlink counts were not checked"),
        "{}",
        text(&out)
    );
}

#[test]
fn files_vanishing_between_readdir_and_stat() {
    let shim = shim();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, elog) = dirs(tmp.path());
    for i in 0..50 {
        std::fs::write(src.join(format!("stay{i}")), b"s").unwrap();
        std::fs::write(src.join(format!("vanish{i}")), b"v").unwrap();
    }
    let out = lmpi_with_env(
        &base_args("copy", &src, &dst, &elog),
        &[
            ("LD_PRELOAD", shim.as_os_str()),
            ("LMPI_FAULT_VANISH", OsStr::new("vanish")),
        ],
    );
    // A vanished file is a note, not a failure: it is simply not there to copy.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vanished"));
    let (code, _, o) = pass(Launch::Alone, "dirtime", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn file_growing_during_copy_is_not_marked_done() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, _) = dirs(tmp.path());
    let big = src.join("growing");
    std::fs::write(&big, vec![7u8; 64 << 20]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let b2 = big.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&b2).unwrap();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_all(b"more").unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    let (code, rep, out) = pass(Launch::Alone, "copy", &src, &dst, &["--threads", "1"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(total(&rep, "errors"), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("changed while being copied"),
        "{}",
        text(&out)
    );
    // Not there under its name, so the next pass copies it.
    assert!(!dst.join("growing").exists());
    let (code, _, out) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        std::fs::read(&big).unwrap(),
        std::fs::read(dst.join("growing")).unwrap()
    );
}

fn as_nobody() -> bool {
    let ok = Command::new("setpriv")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok || !is_root() {
        assert!(!in_ci(), "this test needs root and setpriv in CI");
        eprintln!("skipped: needs root and setpriv");
    }
    ok && is_root()
}

#[test]
fn unreadable_source_entries_are_reported_and_the_rest_copied() {
    if !as_nobody() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (src, dst, elog) = dirs(tmp.path());
    std::fs::create_dir(src.join("closed")).unwrap();
    std::fs::write(src.join("closed/inside"), b"i").unwrap();
    std::fs::write(src.join("secret"), b"s").unwrap();
    std::fs::write(src.join("public"), b"p").unwrap();
    for p in [
        &src,
        &dst,
        &src.join("closed"),
        &src.join("closed/inside"),
        &src.join("secret"),
        &src.join("public"),
    ] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(src.join("closed"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(base_args("copy", &src, &dst, &elog))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(err.contains("closed"), "{err}");
    assert_eq!(std::fs::read(dst.join("public")).unwrap(), b"p");
    assert!(!dst.join("secret").exists());
}

#[test]
fn target_full_leaves_nothing_that_looks_complete() {
    target_full(&[]);
}

/// Chunked: a chunk that fails on a full target drops the partial copy (it
/// would hold space); only a stop keeps one for resuming.
#[test]
fn target_full_drops_partial_big_files() {
    target_full(&["--chunk-size", "262144", "--chunk-threshold", "524288"]);
}

fn target_full(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..8 {
        std::fs::write(src.join(format!("f{i}")), vec![i as u8; 1 << 20]).unwrap();
    }
    let Some(m) = TmpfsMount::at(&tmp.path().join("small"), "size=3m") else {
        return;
    };
    let args: Vec<&str> = ["--threads", "2"].iter().chain(extra).copied().collect();
    let (code, rep, out) = pass(Launch::Alone, "copy", &src, &m.0, &args);
    assert_eq!(code, 1, "{}", text(&out));
    assert!(total(&rep, "errors") >= 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{}", text(&out));
    // One line per file, however many of its chunks failed.
    let mut named: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    let n = named.len();
    named.sort_unstable();
    named.dedup();
    assert_eq!(named.len(), n, "a file named twice:\n{stderr}");
    for e in std::fs::read_dir(&m.0).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        assert!(
            !name.to_string_lossy().starts_with(".lmpi-"),
            "temp file left: {name:?}"
        );
        let s = std::fs::metadata(src.join(&name)).unwrap();
        let d = e.metadata().unwrap();
        if s.size() == d.size() && s.mtime() == d.mtime() && s.mtime_nsec() == d.mtime_nsec() {
            assert_eq!(
                std::fs::read(src.join(&name)).unwrap(),
                std::fs::read(e.path()).unwrap(),
                "{name:?} looks complete but is not"
            );
        }
    }
}

#[test]
fn read_only_target_and_target_that_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"f").unwrap();
    if let Some(m) = TmpfsMount::at(&tmp.path().join("ro"), "size=1m,ro") {
        let (code, _, out) = pass(Launch::Alone, "copy", &src, &m.0, &[]);
        assert_eq!(code, 1, "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{}",
            text(&out)
        );
    }
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (code, _, out) = pass(Launch::Alone, "copy", &src, &file, &[]);
    assert_eq!(code, 2, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("a-file") && err.contains("Not a directory"),
        "{err}"
    );
}

#[test]
fn unmounted_source_refuses_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let src = tmp.path().join("mnt");
    {
        let Some(_m) = TmpfsMount::at(&src, "size=1m") else {
            return;
        };
        std::fs::write(src.join("data"), b"d").unwrap();
        let (code, _, out) = pass(Launch::Alone, "copy", &src, &dst, &[]);
        assert_eq!(code, 0, "{}", text(&out));
    } // unmounted here: the mount point is an empty directory again
    let (code, _, out) = pass(Launch::Alone, "delete", &src, &dst, &[]);
    assert_eq!(code, 3, "{}", text(&out));
    assert!(dst.join("data").exists());
}

#[test]
fn a_killed_rank_ends_the_job_with_an_error() {
    if !have("mpirun") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, elog) = dirs(tmp.path());
    for d in 0..40 {
        let p = src.join(format!("d{d}"));
        std::fs::create_dir(&p).unwrap();
        for f in 0..500 {
            std::fs::write(p.join(format!("f{f}")), b"data").unwrap();
        }
    }
    let mut child = Command::new("mpirun")
        .args(["--oversubscribe", "--bind-to", "none", "-np", "3"])
        .arg(bin())
        .args(base_args("copy", &src, &dst, &elog))
        .args(["--threads", "1"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Find one rank (a child of mpirun running lmpi) and kill it hard.
    let t0 = Instant::now();
    let victim = loop {
        let out = Command::new("pgrep")
            .args(["-P", &child.id().to_string(), "-f", "lmpi"])
            .output()
            .unwrap();
        let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.len() >= 2 && std::fs::read_dir(&dst).map(|d| d.count()).unwrap_or(0) > 0 {
            break pids[1];
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "ranks never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t1.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("job hung after a rank was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "a job that lost a rank must not succeed");
    // The rerun converges.
    let (code, _, out) = pass(Launch::Mpirun(2), "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    let (code, _, out) = pass(Launch::Mpirun(2), "dirtime", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A pass without errors leaves no error log behind (before, every run left
/// an empty `lmpi-<pass>-<job>.errors`); one with errors keeps the lines and
/// the summary names the file.
#[test]
fn no_error_log_without_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, _) = dirs(tmp.path());
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(src.join("fine"), b"f").unwrap();
    std::fs::write(src.join("eio-file"), b"x").unwrap();
    // The default log_dir is root's /var/log/lmpi: this test's own instead.
    let cfg = tmp.path().join("lmpi.toml");
    std::fs::write(&cfg, format!("log_dir = {:?}\n", work.to_str().unwrap())).unwrap();
    let args = |job: &str| {
        let mut c = Command::new(bin());
        c.args(["--pass", "copy", "-q", "--config"])
            .arg(&cfg)
            .arg("--source")
            .arg(&src)
            .arg("--target")
            .arg(&dst)
            .current_dir(&work)
            .env("LMPI_JOB_ID", job);
        c
    };
    let out = args("clean").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!work.join("lmpi-copy-clean.errors").exists());
    assert!(!text(&out).contains("error log"), "{}", text(&out));
    let shim = shim();
    std::fs::remove_dir_all(&dst).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let out = args("bad")
        .env("LD_PRELOAD", &shim)
        .env("LMPI_FAULT_EIO", "eio-")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = std::fs::read_to_string(work.join("lmpi-copy-bad.errors")).unwrap();
    assert!(log.contains("eio-file"), "{log}");
    assert!(
        text(&out).contains(&format!(
            "error log: {}",
            work.join("lmpi-copy-bad.errors").display()
        )),
        "{}",
        text(&out)
    );
    // Ranks of one job share the file: still none when no rank wrote to it.
    if have("mpirun") {
        let elog = work.join("shared.errors");
        let out = lmpi(Launch::Mpirun(2), &base_args("delete", &src, &dst, &elog));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(!text(&out).contains("error log"), "{}", text(&out));
        assert!(!elog.exists());
    }
    let names: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}
