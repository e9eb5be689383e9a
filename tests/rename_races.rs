//! Rename races, as an attacker who owns part of the source or writes to
//! the target during a pass would run them: a thread swaps a directory with
//! a symlink to an outside root-only tree (or a big file with a FIFO) every
//! 500 µs with renameat2(RENAME_EXCHANGE) while copy, delete, dirtime or
//! final runs, alone and under mpirun. Over `LMPI_RACE_RUNS` runs per case
//! (default 20): nothing outside the roots is read into the target or
//! written, chowned, chmodded, retimed or removed, and every run ends within
//! a bound with status 0 or 1 (a race is an error line, never a panic or a
//! hang).

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const PADS: usize = 60;
const SECRET: &[u8] = b"SECRET outside the roots\n";

/// `LMPI_RACE_BIN`: run another lmpi build (an old one shows what the
/// harness catches).
fn lmpi_bin() -> PathBuf {
    std::env::var_os("LMPI_RACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(bin)
}

fn runs() -> usize {
    std::env::var("LMPI_RACE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

/// Swaps `a` and `b` (in the same directory) every 500 µs until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let (a, b) = (cstr(a), cstr(b));
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                // SAFETY: two valid C strings; RENAME_EXCHANGE (2) swaps them.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        2u32,
                    )
                };
                n += u64::from(rc == 0);
                std::thread::sleep(Duration::from_micros(500));
            }
            n
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// A root-only tree with the same `padN/{f,g}` layout as the source, old
/// times, secret content.
fn outside(at: &Path) -> PathBuf {
    let o = at.join("outside");
    for i in 0..PADS {
        let d = o.join(format!("pad{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), SECRET).unwrap();
        std::fs::write(d.join("g"), SECRET).unwrap();
    }
    sh(&format!(
        "chmod -R go-rwx {0} && chown -R 0:0 {0} && find {0} -exec touch -h -d @1234567890 {{}} +",
        o.display()
    ));
    o
}

/// Everything about a tree an attack could change.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            format!("{:x?}", std::fs::read(&p).unwrap())
        } else {
            String::new()
        };
        m.insert(
            p.clone(),
            // Not atime: reading the files for this snapshot moves it.
            format!(
                "{:o} {}:{} {} {content}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.mtime()
            ),
        );
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    m
}

/// Any file in the target holding outside content.
fn leaks(dst: &Path) -> Vec<PathBuf> {
    let o = Command::new("grep")
        .args(["-rlF", "SECRET outside"])
        .arg(dst)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Run one pass with a deadline; its exit code.
fn bounded(launch: Launch, pass: &str, src: &Path, dst: &Path, extra: &[&str]) -> i32 {
    let mut cmd = launcher(launch, &lmpi_bin());
    let mut child = cmd
        .args(["--pass", pass, "-q", "--error-log", "/dev/null", "--source"])
        .arg(src)
        .arg("--target")
        .arg(dst)
        .args(extra)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_pml", "ob1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{pass} still running after 60 s: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `top/sub/padN/{f,g}` owned by a user, and `top/sublink` -> `outside`.
fn source(src: &Path, out: &Path) {
    for i in 0..PADS {
        let d = src.join(format!("top/sub/pad{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), b"public\n").unwrap();
    }
    std::os::unix::fs::symlink(out, src.join("top/sublink")).unwrap();
    sh(&format!("chown -R 4321:4321 {}/top/sub", src.display()));
}

/// One attack case, `runs()` times: prepare, swap `a`/`b` during the pass,
/// then check the outside tree and the target.
fn attack(
    name: &str,
    launch: Launch,
    pass: &str,
    setup: impl Fn(&Path, &Path, &Path) -> (PathBuf, PathBuf),
) {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    for run in 0..runs() {
        let (_t, src, dst) = src_and_dst();
        let out = outside(_t.path());
        let (a, b) = setup(&src, &dst, &out);
        let before = snapshot(&out);
        let swap = Swapper::start(&a, &b);
        let code = bounded(
            launch,
            pass,
            &src,
            &dst,
            &["--chunk-threshold", "65536", "--chunk-size", "65536"],
        );
        let swaps = swap.stop();
        assert!(swaps > 0, "{name}: no swap happened");
        assert!(code == 0 || code == 1, "{name} run {run}: exit {code}");
        let after = snapshot(&out);
        assert_eq!(before, after, "{name} run {run}: the outside tree changed");
        let l = leaks(&dst);
        assert!(
            l.is_empty(),
            "{name} run {run}: outside content copied: {l:?}"
        );
    }
}

#[test]
fn source_side_swaps_never_read_outside_the_source() {
    for (name, launch) in [
        ("copy alone", Launch::Alone),
        ("copy np 2", Launch::Mpirun(2)),
    ] {
        if matches!(launch, Launch::Mpirun(_)) && !have("mpirun") {
            continue;
        }
        attack(name, launch, "copy", |src, _dst, out| {
            source(src, out);
            (src.join("top/sub"), src.join("top/sublink"))
        });
    }
    attack("final alone", Launch::Alone, "final", |src, _dst, out| {
        source(src, out);
        (src.join("top/sub"), src.join("top/sublink"))
    });
}

/// The target already holds the tree; `dst/top/sublink` -> outside is
/// swapped with `dst/top/sub` while the pass writes, deletes or sets times.
fn target_side(src: &Path, dst: &Path, out: &Path) -> (PathBuf, PathBuf) {
    source(src, out);
    let o = Command::new(lmpi_bin())
        .args([
            "--pass",
            "copy",
            "-q",
            "--error-log",
            "/dev/null",
            "--source",
        ])
        .arg(src)
        .arg("--target")
        .arg(dst)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Work for the pass: new content, and target-only names to delete.
    for i in 0..PADS {
        std::fs::write(src.join(format!("top/sub/pad{i}/f")), b"changed\n").unwrap();
        std::fs::write(dst.join(format!("top/sub/pad{i}/g")), b"extra\n").unwrap();
    }
    std::fs::remove_file(src.join("top/sublink")).unwrap();
    let _ = std::fs::remove_file(dst.join("top/sublink"));
    std::os::unix::fs::symlink(out, dst.join("top/sublink")).unwrap();
    (dst.join("top/sub"), dst.join("top/sublink"))
}

#[test]
fn target_side_swaps_never_write_outside_the_target() {
    attack("copy alone", Launch::Alone, "copy", target_side);
    attack("delete alone", Launch::Alone, "delete", target_side);
    attack("dirtime alone", Launch::Alone, "dirtime", target_side);
    if have("mpirun") {
        attack("final np 2", Launch::Mpirun(2), "final", target_side);
    }
}

#[test]
fn a_fifo_swapped_in_for_a_big_file_never_hangs_the_pass() {
    attack(
        "fifo for a chunked file",
        Launch::Alone,
        "copy",
        |src, _dst, out| {
            source(src, out);
            std::fs::write(src.join("big"), vec![7u8; 1 << 20]).unwrap();
            sh(&format!("mkfifo {}/bigfifo", src.display()));
            (src.join("big"), src.join("bigfifo"))
        },
    );
}
