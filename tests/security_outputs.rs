//! Issue 23, lmpi's own outputs: the JSON report, the manifest and its
//! per-rank parts, the merge's temp file, the error log and the job lock,
//! attacked by a real unprivileged user (`common::attacker`) who can write
//! the directory they go to. Each test plants what that user could plant
//! and checks root's run neither writes through it, nor blocks on it, nor
//! obeys it, and says so in one line.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A directory the attacker owns (0755), inside a temp dir they can reach.
fn attacker_dir() -> Option<(tempfile::TempDir, PathBuf)> {
    attacker()?;
    let t = shared_tempdir();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    give_to_attacker(&out);
    Some((t, out))
}

/// A root-only 0600 file in a 0700 directory: what the attacker wants
/// overwritten or read.
fn secret() -> (tempfile::TempDir, PathBuf) {
    let vault = tempfile::tempdir().unwrap();
    let s = vault.path().join("secret");
    std::fs::write(&s, b"root only\n").unwrap();
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o600)).unwrap();
    (vault, s)
}

fn attack(script: &str) {
    let o = as_attacker(script);
    assert!(o.status.success(), "{script}: {}", text(&o));
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

fn perm(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// lmpi as `launch` starts it, on `src` and `dst`, with `extra` args.
fn cmd(launch: Launch, pass: &str, src: &Path, dst: &Path, extra: &[&str]) -> Command {
    let mut c = launcher(launch, &bin());
    c.args(["--pass", pass, "-q", "--source"])
        .arg(src)
        .arg("--target")
        .arg(dst)
        .args(extra);
    c
}

/// Errors on every name with `eio-` (the fault shim), so the error log has
/// lines to write.
fn with_errors(c: &mut Command) -> &mut Command {
    c.env("LD_PRELOAD", shim()).env("LMPI_FAULT_EIO", "eio-")
}

/// Run `c` to its end, or kill it (it started it) and fail after `secs`:
/// an output planted as a FIFO must never hang a run.
fn bounded(c: &mut Command, secs: u64) -> Output {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi");
    finish(child, secs)
}

fn finish(mut child: Child, secs: u64) -> Output {
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let _ = pipes.0.read_to_end(&mut o);
        let _ = pipes.1.read_to_end(&mut e);
        (o, e)
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lmpi still running after {secs} s: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = out.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn small_tree(src: &Path) {
    for i in 0..5 {
        std::fs::write(src.join(format!("f{i}")), b"data").unwrap();
    }
    std::fs::write(src.join("eio-file"), b"x").unwrap();
}

fn mpirun_or_alone() -> Launch {
    if have("mpirun") {
        Launch::Mpirun(2)
    } else {
        Launch::Alone
    }
}

/// `--report` at a symlink the attacker put in their directory, pointing at
/// a root-only file: the file is not overwritten; the run is refused before
/// it starts, with one line naming the report's path.
#[test]
fn a_symlink_at_the_report_is_refused() {
    let Some((_t, out)) = attacker_dir() else {
        return;
    };
    let (_vault, secret) = secret();
    let report = out.join("report.json");
    attack(&format!("ln -s {} {}", q(&secret), q(&report)));
    let (_tmp, src, dst) = src_and_dst();
    small_tree(&src);
    let o = bounded(
        cmd(Launch::Alone, "copy", &src, &dst, &["--report"]).arg(&report),
        60,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&report.display().to_string()), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
    assert_eq!(perm(&secret), 0o600);
    assert!(std::fs::symlink_metadata(&report)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// The report, the manifest and the error log are never world-writable
/// though lmpi clears its umask: report 0644, manifest and log 0600; an
/// older run's 0666 report of ours is set back to 0644 when rewritten.
#[test]
fn outputs_are_never_world_writable() {
    let (tmp, src, dst) = src_and_dst();
    small_tree(&src);
    let report = tmp.path().join("report.json");
    let manifest = tmp.path().join("copy.manifest");
    let elog = tmp.path().join("e.errors");
    std::fs::write(&report, b"{}").unwrap();
    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut c = cmd(mpirun_or_alone(), "copy", &src, &dst, &[]);
    c.arg("--report")
        .arg(&report)
        .arg("--manifest")
        .arg(&manifest)
        .arg("--error-log")
        .arg(&elog);
    with_errors(&mut c);
    let o = bounded(&mut c, 120);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(perm(&report), 0o644, "report");
    assert_eq!(perm(&manifest), 0o600, "manifest");
    assert_eq!(perm(&elog), 0o600, "error log");
    assert!(std::fs::read_to_string(&elog).unwrap().contains("eio-file"));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["exit_code"], 1, "{json}");
}

/// A symlink the attacker put at a rank's part of the manifest (`FILE.rank1`)
/// before the run: not written through; the run stops before it starts.
#[test]
fn a_symlink_at_a_manifest_part_is_refused() {
    let Some((_t, out)) = attacker_dir() else {
        return;
    };
    let launch = mpirun_or_alone();
    let rank = if launch == Launch::Alone { 0 } else { 1 };
    let (_vault, secret) = secret();
    let m = out.join("copy.manifest");
    let part = out.join(format!("copy.manifest.rank{rank}"));
    attack(&format!("ln -s {} {}", q(&secret), q(&part)));
    let (_tmp, src, dst) = src_and_dst();
    small_tree(&src);
    let o = bounded(
        cmd(launch, "copy", &src, &dst, &["--manifest"]).arg(&m),
        120,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}: is a symlink", part.display())),
        "{err}"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
    assert!(!m.exists());
}

/// The attacker swaps rank 1's part for a link to a root-only file while
/// the pass runs (the rank goes on writing its unlinked file): the merge
/// neither follows the link nor takes a part that is not the file the rank
/// opened; the manifest is not made, the run says so and exits 1.
#[test]
fn a_manifest_part_swapped_during_the_pass_is_not_merged() {
    if !have("mpirun") {
        return;
    }
    let Some((_t, out)) = attacker_dir() else {
        return;
    };
    let (_vault, secret) = secret();
    let m = out.join("copy.manifest");
    let part = out.join("copy.manifest.rank1");
    let (_tmp, src, dst) = src_and_dst();
    for i in 0..200 {
        std::fs::write(src.join(format!("f{i}")), b"data").unwrap();
    }
    let mut c = cmd(Launch::Mpirun(2), "copy", &src, &dst, &["--threads", "1"]);
    c.arg("--manifest")
        .arg(&m)
        .arg("--error-log")
        .arg(out.join("e.errors"))
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_SLOW_ALL", "1")
        .env("LMPI_FAULT_SLOW_US", "20000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start mpirun");
    let t0 = Instant::now();
    while !part.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no part");
        std::thread::sleep(Duration::from_millis(5));
    }
    attack(&format!(
        "rm -f {p}; ln -s {} {p}",
        q(&secret),
        p = q(&part)
    ));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the pass ended before the swap: the test proves nothing"
    );
    let o = finish(child, 300);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("manifest not merged"), "{err}");
    assert!(err.contains(&part.display().to_string()), "{err}");
    assert!(!m.exists(), "merged with a swapped part");
    assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
}

/// A FIFO the attacker made at `<manifest>.merging`: the merge does not open
/// it for writing (which would block until a reader came), it is refused
/// with one line; the parts stay for a later merge by hand.
#[test]
fn a_fifo_at_the_merge_temp_does_not_hang() {
    let Some((_t, out)) = attacker_dir() else {
        return;
    };
    let launch = mpirun_or_alone();
    let m = out.join("copy.manifest");
    let tmp_name = out.join("copy.manifest.merging");
    attack(&format!("mkfifo -m 0666 {}", q(&tmp_name)));
    let (_tmp, src, dst) = src_and_dst();
    small_tree(&src);
    let o = bounded(
        cmd(launch, "copy", &src, &dst, &["--manifest"]).arg(&m),
        120,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}: is a fifo", tmp_name.display())),
        "{err}"
    );
    assert!(out.join("copy.manifest.rank0").exists(), "the parts stay");
    assert!(std::fs::symlink_metadata(&tmp_name)
        .unwrap()
        .file_type()
        .is_fifo());
}

/// A FIFO at the error log's name, alone and under mpirun: the first error
/// line does not block on it; each rank says once that the log is refused,
/// the errors still reach stderr, and the exit status counts them.
#[test]
fn a_fifo_at_the_error_log_does_not_hang() {
    let Some((_t, out)) = attacker_dir() else {
        return;
    };
    let elog = out.join("e.errors");
    attack(&format!("mkfifo -m 0666 {}", q(&elog)));
    let mut launches = vec![Launch::Alone];
    if have("mpirun") {
        launches.push(Launch::Mpirun(2));
    }
    for launch in launches {
        let (_tmp, src, dst) = src_and_dst();
        small_tree(&src);
        let mut c = cmd(launch, "copy", &src, &dst, &["--error-log"]);
        c.arg(&elog);
        with_errors(&mut c);
        let o = bounded(&mut c, 120);
        assert_eq!(o.status.code(), Some(1), "{launch:?}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{}: is a fifo", elog.display())),
            "{launch:?}: {err}"
        );
        assert!(err.contains("eio-file"), "{launch:?}: {err}");
        assert!(
            text(&o).contains("errors went to stderr only"),
            "{launch:?}: {}",
            text(&o)
        );
        assert!(std::fs::symlink_metadata(&elog)
            .unwrap()
            .file_type()
            .is_fifo());
    }
}

/// A regular file the attacker made at the error log's name (readable by
/// them): root's error lines, which name entries of 0700 directories, are
/// not appended to it.
#[test]
fn an_attackers_file_at_the_error_log_gets_no_lines() {
    let Some((_t, out)) = attacker_dir() else {
        return;
    };
    let (uid, _) = attacker().unwrap();
    let elog = out.join("e.errors");
    attack(&format!("touch {e}; chmod 0666 {e}", e = q(&elog)));
    let (_tmp, src, dst) = src_and_dst();
    small_tree(&src);
    let mut c = cmd(mpirun_or_alone(), "copy", &src, &dst, &["--error-log"]);
    c.arg(&elog);
    with_errors(&mut c);
    let o = bounded(&mut c, 120);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("owned by uid {uid}")), "{err}");
    assert_eq!(
        std::fs::metadata(&elog).unwrap().len(),
        0,
        "root's lines leaked"
    );
}

/// With no `--error-log` and no `log_dir`, root's log goes to its own
/// /var/log/lmpi (0600, in a directory no one else can write), created only
/// at the first error line, never to the working directory, where the
/// attacker waits with a FIFO at the old predictable name.
#[test]
fn the_default_error_log_is_roots_own_not_the_cwd() {
    let Some((_t, out)) = attacker_dir() else {
        return;
    };
    let job = format!("secout-{}", std::process::id());
    let old_name = out.join(format!("lmpi-copy-{job}.errors"));
    attack(&format!("mkfifo -m 0666 {}", q(&old_name)));
    let logged = Path::new("/var/log/lmpi").join(format!("lmpi-copy-{job}.errors"));
    let _ = std::fs::remove_file(&logged);
    let (_tmp, src, dst) = src_and_dst();
    std::fs::write(src.join("f"), b"data").unwrap();
    let run = |errors: bool| {
        let mut c = cmd(Launch::Alone, "copy", &src, &dst, &[]);
        c.current_dir(&out).env("LMPI_JOB_ID", &job);
        if errors {
            with_errors(&mut c);
        }
        bounded(&mut c, 60)
    };
    let o = run(false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!logged.exists(), "a clean pass made a log");
    std::fs::write(src.join("eio-file"), b"x").unwrap();
    let o = run(true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let log = std::fs::read_to_string(&logged).unwrap();
    assert!(log.contains("eio-file"), "{log}");
    assert_eq!(perm(&logged), 0o600);
    let dir = std::fs::symlink_metadata("/var/log/lmpi").unwrap();
    assert!(dir.is_dir() && dir.uid() == 0 && dir.mode() & 0o022 == 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&logged.display().to_string()));
    assert!(std::fs::symlink_metadata(&old_name)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "wrote to the cwd"
    );
    std::fs::remove_file(&logged).unwrap();
}

/// The attacker's process holding a lock, which this test started: ended
/// by its id when the test ends, even by a panic.
struct Holder(i32);
impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// A user who can write the target root plants `.lmpi.lock` with a forged
/// holder line and holds its flock: root's job is not blocked; the file is
/// removed and replaced by lmpi's own lock (one note line), the pass runs,
/// and the lock is gone at the end. A symlink or a directory planted there
/// the same way is removed, never followed.
#[test]
fn a_lock_planted_by_a_user_does_not_block_roots_job() {
    let Some((_t, out)) = attacker_dir() else {
        return;
    };
    let (uid, _) = attacker().unwrap();
    let (_tmp, src, _) = src_and_dst();
    small_tree(&src);
    std::fs::remove_file(src.join("eio-file")).unwrap();
    let dst = out.join("dst");
    let lock = dst.join(".lmpi.lock");
    attack(&format!("mkdir -m 0755 {}", q(&dst)));
    let held = as_attacker(&format!(
        "printf 'job 999 host backup pid 1\\n' > {l}; \
         (exec 9>>{l}; flock -n 9 && exec sleep 120) </dev/null >/dev/null 2>&1 & echo $!",
        l = q(&lock)
    ));
    assert!(held.status.success(), "{}", text(&held));
    let holder = Holder(
        String::from_utf8_lossy(&held.stdout)
            .trim()
            .parse()
            .unwrap(),
    );
    let t0 = Instant::now();
    let ino = std::fs::symlink_metadata(&lock).unwrap().ino();
    while !std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains("FLOCK") && l.contains(&format!(":{ino} ")))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the user holds no lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = bounded(&mut cmd(Launch::Alone, "copy", &src, &dst, &[]), 60);
    drop(holder);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = stderr(&o);
    assert!(!err.contains("in use by another job"), "{err}");
    assert!(err.contains(&format!("owned by uid {uid}")), "{err}");
    assert!(err.contains("removed"), "{err}");
    assert!(dst.join("f0").exists());
    assert!(!lock.exists(), "the lock stays");
    // The copy gave the root the source's owner: the user's again, for the link.
    std::os::unix::fs::lchown(&dst, Some(uid), None).unwrap();
    let (_vault, secret) = secret();
    attack(&format!("ln -s {} {}", q(&secret), q(&lock)));
    let o = bounded(&mut cmd(Launch::Alone, "copy", &src, &dst, &[]), 60);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stderr(&o).contains("is a symlink"), "{}", text(&o));
    assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
    assert!(!lock.exists());
    // A directory there, holding a link out of the target: removed with
    // what it holds, the link not followed.
    std::os::unix::fs::lchown(&dst, Some(uid), None).unwrap();
    attack(&format!(
        "mkdir {l}; ln -s {} {l}/out; touch {l}/x",
        q(secret.parent().unwrap()),
        l = q(&lock)
    ));
    let o = bounded(&mut cmd(Launch::Alone, "copy", &src, &dst, &[]), 60);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stderr(&o).contains("is a dir"), "{}", text(&o));
    assert_eq!(std::fs::read(&secret).unwrap(), b"root only\n");
    assert!(!lock.exists());
}
