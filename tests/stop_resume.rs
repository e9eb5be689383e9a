//! A graceful stop (SIGTERM, as scancel sends) in the middle of a copy: the run
//! says "stopped", exits non-zero, leaves no partial file that looks complete,
//! and a rerun converges to an identical tree.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn make_tree(src: &Path) {
    std::fs::create_dir_all(src).unwrap();
    let block: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    for b in 0..4 {
        let mut data = Vec::with_capacity(48 << 20);
        for k in 0..48u8 {
            let mut blk = block.clone();
            blk[0] = k;
            blk[1] = b;
            data.extend_from_slice(&blk);
        }
        std::fs::write(src.join(format!("big{b}")), &data).unwrap();
    }
    for d in 0..20 {
        let dir = src.join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..400 {
            std::fs::write(
                dir.join(format!("slowfile{f:04}")),
                format!("{d}/{f}\n").repeat(8),
            )
            .unwrap();
        }
    }
}

fn stop_midway(pass: &str, launch: Launch, src: &Path, dst: &Path) -> (Option<i32>, String) {
    let mut cmd = launcher(launch, &bin());
    let mut child = cmd
        .args([
            "--pass",
            pass,
            "--threads",
            "1",
            "--report-interval",
            "1",
            "--chunk-size",
            "1048576",
            "--chunk-threshold",
            "8388608",
        ])
        .arg("--source")
        .arg(src)
        .arg("--target")
        .arg(dst)
        .arg("--error-log")
        .arg(dst.with_extension("errors"))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // 300 us per metadata operation on the small files: the copy lasts seconds,
        // so the signal surely lands mid-copy.
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_SLOW", "slowfile")
        .env("LMPI_FAULT_SLOW_US", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi");
    // Signal as soon as the copy is visibly under way on the target.
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(dst).map(|d| d.count()).unwrap_or(0) < 3 && t0.elapsed().as_secs() < 60
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut seen = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        seen.push_str(&line.unwrap_or_default());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    (status.code(), seen)
}

fn check(launch: Launch) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src);
    std::fs::create_dir(&dst).unwrap();
    let (code, out) = stop_midway("copy", launch, &src, &dst);
    stopped_cleanly(launch, code, &out, &src, &dst);
    // Resubmitting the same pass resumes through the normal compare.
    let (code, rep, o) = pass(
        launch,
        "copy",
        &src,
        &dst,
        &["--chunk-size", "1048576", "--chunk-threshold", "8388608"],
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        total(&rep, "uptodate") + total(&rep, "files"),
        8004,
        "{rep}"
    );
    let (code, _, o) = pass(launch, "dirtime", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A stopped run says so, exits non-zero, and leaves nothing that looks
/// complete but is not, and no temp file.
fn stopped_cleanly(launch: Launch, code: Option<i32>, out: &str, src: &Path, dst: &Path) {
    assert_ne!(
        code,
        Some(0),
        "{launch:?}: a stopped run must not exit 0:\n{out}"
    );
    if matches!(launch, Launch::Alone) {
        assert_eq!(code, Some(4), "{out}");
    }
    assert!(
        out.contains("STOPPED"),
        "{launch:?}: summary must say stopped:\n{out}"
    );
    // Nothing copied so far may look complete unless it is: every target file
    // whose size and mtime match the source must have the source's bytes.
    let mut partial_names = Vec::new();
    for entry in walk(dst) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        // A big file's partial copy with its record stays for the next pass
        // to resume (tests/resume.rs); any other temp file is a leak.
        if is_resume_partial(&entry) {
            continue;
        }
        if name.starts_with(".lmpi-") {
            partial_names.push(name);
            continue;
        }
        let rel = entry.strip_prefix(dst).unwrap();
        let (s, d) = (
            std::fs::metadata(src.join(rel)).unwrap(),
            std::fs::metadata(&entry).unwrap(),
        );
        use std::os::unix::fs::MetadataExt;
        if s.is_file()
            && s.size() == d.size()
            && s.mtime() == d.mtime()
            && s.mtime_nsec() == d.mtime_nsec()
        {
            assert_eq!(
                std::fs::read(src.join(rel)).unwrap(),
                std::fs::read(&entry).unwrap(),
                "{rel:?} looks complete but is not"
            );
        }
    }
    assert!(
        partial_names.is_empty(),
        "temp files left behind: {partial_names:?}"
    );
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn sigterm_alone_then_resume() {
    check(Launch::Alone);
}

#[test]
fn sigterm_under_mpirun_then_resume() {
    if have("mpirun") {
        check(Launch::Mpirun(2));
    }
}

/// The downtime pass stopped midway: directory times are left for the next
/// final pass, which converges (times included).
#[test]
fn sigterm_mid_final_then_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    make_tree(&src);
    std::fs::create_dir(&dst).unwrap();
    let (code, out) = stop_midway("final", Launch::Alone, &src, &dst);
    assert_eq!(code, Some(4), "{out}");
    stopped_cleanly(Launch::Alone, code, &out, &src, &dst);
    let (code, _, o) = pass(Launch::Alone, "final", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A call a stop cannot interrupt (here: an open that blocks on a FIFO and
/// is restarted after the signal) must not keep the pass alive: after
/// `stop_grace_seconds` the process ends with status 4 and one line.
#[test]
fn a_stop_always_stops_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(src.join("hangfile"), b"h").unwrap();
    let fifo = tmp.path().join("never-written");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "stop_grace_seconds = 2\n").unwrap();
    let mut child = Command::new(bin())
        .args(["--pass", "copy", "-q", "--config"])
        .arg(&cfg)
        .arg("--source")
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .arg("--error-log")
        .arg(tmp.path().join("errors"))
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_HANG", "hangfile")
        .env("LMPI_FAULT_HANG_FIFO", &fifo)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let t0 = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = t0 + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 20 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(err.contains("still in flight"), "{err}");
    assert!(t0.elapsed().as_secs() < 10, "{:?}", t0.elapsed());
    assert!(!dst.join("hangfile").exists(), "nothing partial left");
}
