//! Issue 23, inputs: what lmpi reads that someone else may have made. A
//! `--from-manifest` file (a device, a FIFO, a huge line, names that leave
//! the roots, millions of records), a file with more xattrs than the kernel
//! lists, and a memcached registry with a stray byte. Each gets one clear
//! line, never a hang, a blow-up or a lost round, and the exit status says so.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The error log lines of a run (stderr carries them too).
fn said(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Start lmpi with `args` and wait at most `limit`; killed past it (and
/// the test fails): a run that blocks must not hang the suite. The output
/// is read meanwhile, so a chatty run never blocks on a full pipe.
fn run_within(launch: Launch, args: &[&OsStr], limit: Duration) -> (Output, Duration) {
    let child = launcher(launch, &bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi");
    let pid = child.id() as libc::pid_t;
    let t0 = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => (out.expect("output"), t0.elapsed()),
        Err(_) => {
            // SAFETY: kill takes plain integers; `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().expect("reaped").expect("output");
            panic!("still running after {limit:?}: {}", text(&out));
        }
    }
}

fn verify_args<'a>(src: &'a Path, dst: &'a Path, extra: &[&'a OsStr]) -> Vec<&'a OsStr> {
    let mut a: Vec<&OsStr> = vec![
        "--pass".as_ref(),
        "verify".as_ref(),
        "--source".as_ref(),
        src.as_os_str(),
        "--target".as_ref(),
        dst.as_os_str(),
        "-q".as_ref(),
    ];
    a.extend_from_slice(extra);
    a
}

/// A converged pair: `a` (a file) and `d/b` on both sides, same metadata.
fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (t, src, dst) = src_and_dst();
    std::fs::create_dir(src.join("d")).unwrap();
    std::fs::write(src.join("a"), b"aaa").unwrap();
    std::fs::write(src.join("d/b"), b"bbb").unwrap();
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    (t, src, dst)
}

#[test]
fn from_manifest_refuses_a_device_at_once() {
    let (_t, src, dst) = pair();
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        if matches!(launch, Launch::Mpirun(_)) && !have("mpirun") {
            continue;
        }
        let args = verify_args(
            &src,
            &dst,
            &["--from-manifest".as_ref(), "/dev/zero".as_ref()],
        );
        let (o, took) = run_within(launch, &args, Duration::from_secs(60));
        assert_eq!(o.status.code(), Some(1), "{launch:?}: {}", text(&o));
        let s = said(&o);
        assert!(s.contains("/dev/zero: a device, not a regular file"), "{s}");
        assert_eq!(s.matches("not a regular file").count(), 1, "{s}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }
}

/// The attacker swaps the manifest in a directory they own for a FIFO: the
/// verify does not wait for a writer (it used to block until the grace ran
/// out), and a symlink to /dev/zero is refused the same way.
#[test]
fn from_manifest_refuses_an_attackers_fifo_without_waiting() {
    if attacker().is_none() || !have("mkfifo") {
        return;
    }
    let (_t, src, dst) = pair();
    let shared = shared_tempdir();
    let theirs = shared.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    give_to_attacker(&theirs);
    let o = as_attacker(&format!(
        "cd {} && mkfifo final.manifest && ln -s /dev/zero linked.manifest",
        theirs.display()
    ));
    assert!(o.status.success(), "{}", text(&o));
    for (name, why) in [
        ("final.manifest", "a FIFO, not a regular file"),
        ("linked.manifest", "a device, not a regular file"),
    ] {
        let m = theirs.join(name);
        for launch in [Launch::Alone, Launch::Mpirun(2)] {
            if matches!(launch, Launch::Mpirun(_)) && !have("mpirun") {
                continue;
            }
            let args = verify_args(&src, &dst, &["--from-manifest".as_ref(), m.as_os_str()]);
            let (o, took) = run_within(launch, &args, Duration::from_secs(60));
            assert_eq!(o.status.code(), Some(1), "{name} {launch:?}: {}", text(&o));
            assert!(said(&o).contains(why), "{name}: {}", text(&o));
            assert!(took < Duration::from_secs(30), "{name}: {took:?}");
        }
    }
}

/// Records naming `.`, `..`, empty names, absolute paths: one line each
/// naming the line, nothing outside the roots compared, the good records
/// still compared. The roots' parents differ (mode), so a `..` that
/// reached them would be a `differs` line.
#[test]
fn from_manifest_names_that_leave_the_roots_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("a/src"), t.path().join("b/dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    sh(&format!(
        "chmod 700 {0}/a && chmod 755 {0}/b",
        t.path().display()
    ));
    std::fs::write(src.join("good"), b"x").unwrap();
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let m = t.path().join("m");
    let bad = [
        "..", ".", "..%2F..", "%2E%2E", "a/../..", "./good", "/etc", "a//b", "good/",
    ];
    let mut body = String::new();
    for p in bad {
        body.push_str(&format!("copied\t1\t1\t{p}\n"));
    }
    body.push_str("linked\t..\tgood\n");
    body.push_str("copied\t1\t1\tgood\n");
    std::fs::write(&m, body).unwrap();
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        if matches!(launch, Launch::Mpirun(_)) && !have("mpirun") {
            continue;
        }
        let (code, r, o) = pass(
            launch,
            "verify",
            &src,
            &dst,
            &["--from-manifest", m.to_str().unwrap()],
        );
        assert_eq!(code, 1, "{launch:?}: {}", text(&o));
        let s = said(&o);
        for line in 1..=bad.len() + 1 {
            assert!(
                s.contains(&format!("/m: line {line}: ")),
                "line {line}: {s}"
            );
        }
        assert!(s.contains("path has a `..` name"), "{s}");
        assert!(
            !s.contains("differs"),
            "something outside the roots was compared: {s}"
        );
        assert_eq!(total(&r, "errors"), bad.len() as u64 + 1, "{s}");
        assert_eq!(
            total(&r, "uptodate"),
            1,
            "the good record is still compared: {s}"
        );
    }
}

/// A file over `from_manifest_max_bytes` is refused whole (one line); a
/// 300 MB line (sparse: read, never kept) is one line naming its line
/// number, the records around it are still compared, and memory stays
/// flat (it took 1.8 GB).
#[test]
fn from_manifest_a_huge_line_and_a_file_over_the_limit() {
    let (t, src, dst) = pair();
    let m = t.path().join("m");
    let mut f = std::fs::File::create(&m).unwrap();
    f.write_all(b"copied\t3\t1\ta\n").unwrap();
    f.set_len(300 << 20).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&m).unwrap();
    f.write_all(b"\ncopied\t3\t1\td/b\n").unwrap();
    drop(f);
    let args = verify_args(&src, &dst, &["--from-manifest".as_ref(), m.as_os_str()]);
    let (o, peak) = run_measured(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = said(&o);
    assert!(s.contains("/m: line 2: longer than 1048576 bytes"), "{s}");
    assert_eq!(s.matches("error:").count(), 1, "{s}");
    assert!(peak < 64 << 20, "peak RSS {peak} B for a 300 MB line");
    let cfg = t.path().join("small.toml");
    std::fs::write(&cfg, "from_manifest_max_bytes = 1000\n").unwrap();
    let mut args = verify_args(&src, &dst, &["--from-manifest".as_ref(), m.as_os_str()]);
    args.extend(["--config".as_ref(), cfg.as_os_str()]);
    let (o, _) = run_within(Launch::Alone, &args, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        said(&o).contains("/m: larger than 1000 bytes"),
        "{}",
        text(&o)
    );
}

/// Run lmpi alone, sampling its peak RSS (VmHWM, which only grows) until it
/// exits: the output and the last peak seen, in bytes.
fn run_measured(args: &[&OsStr]) -> (Output, u64) {
    let child = launcher(Launch::Alone, &bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi");
    let status = format!("/proc/{}/status", child.id());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let mut peak = 0;
    let t0 = Instant::now();
    loop {
        let hwm = std::fs::read_to_string(&status).ok().and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        peak = peak.max(hwm.unwrap_or(0) * 1024);
        if let Ok(out) = rx.recv_timeout(Duration::from_millis(20)) {
            return (out.expect("output"), peak);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "lmpi still running"
        );
    }
}

/// 400,000 records stream through the engine: the peak RSS stays well under
/// what holding them took (290 B a record: 17 + 116 MB here), and each is
/// compared once (every record names a missing file: one line each).
#[test]
fn from_manifest_memory_is_flat_in_the_number_of_records() {
    let (t, src, dst) = pair();
    let m = t.path().join("m");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&m).unwrap());
    for i in 0..400_000 {
        writeln!(w, "copied\t1\t1\td/f{i:07}").unwrap();
    }
    w.into_inner().unwrap().sync_all().unwrap();
    let args = verify_args(&src, &dst, &["--from-manifest".as_ref(), m.as_os_str()]);
    let (o, peak) = run_measured(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(peak < 64 << 20, "peak RSS {peak} B for 400k records");
    // Under mpirun: every record once, whichever rank read its piece
    // (2,000 files only the source has: one line each).
    if !have("mpirun") {
        return;
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(&m).unwrap());
    for i in 0..2000 {
        std::fs::write(src.join(format!("d/n{i}")), b"n").unwrap();
        writeln!(w, "copied\t1\t1\td/n{i}").unwrap();
    }
    drop(w);
    // The error log, not stderr: mpirun may cut lines of two ranks.
    let elog = t.path().join("errors");
    let extra = [
        "--from-manifest".as_ref(),
        m.as_os_str(),
        "--error-log".as_ref(),
        elog.as_os_str(),
    ];
    let args = verify_args(&src, &dst, &extra);
    let (o, _) = run_within(Launch::Mpirun(2), &args, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = std::fs::read_to_string(&elog).unwrap();
    for i in 0..2000 {
        let line = format!("d/n{i}: missing on the target\n");
        assert_eq!(s.matches(&line).count(), 1, "{line}");
    }
    assert_eq!(s.lines().count(), 2000, "{s}");
}

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

/// A tmpfs temp dir (the kernel's limit: tmpfs keeps any number of user
/// xattrs, ext4 a block's worth), None where there is none.
fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let d = tempfile::tempdir_in("/dev/shm").ok();
    if d.is_none() {
        assert!(!in_ci(), "/dev/shm (tmpfs) is required in CI");
        eprintln!("skipped: no /dev/shm");
    }
    d
}

/// 100,000 user xattrs on a source file (their names are 2.6 MB, past the
/// 64 KiB listxattr returns: E2BIG). The file's data is still copied, one
/// error line says its xattrs are not, and the exit status is 1.
#[test]
fn a_file_with_more_xattrs_than_the_kernel_lists_still_has_its_data_copied() {
    let Some(t) = tmpfs_dir() else { return };
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(src.join("d/many"), b"the data\n").unwrap();
    std::fs::write(src.join("d/few"), b"few\n").unwrap();
    let fd = std::fs::File::open(src.join("d/many")).unwrap();
    for i in 0..100_000 {
        let key = format!("user.attribute_number_{i:06}");
        lmpi::fsops::set_xattr(Some(fd.as_fd()), fd.as_fd(), b"", key.as_bytes(), b"")
            .expect("setxattr on tmpfs");
    }
    let few = std::fs::File::open(src.join("d/few")).unwrap();
    lmpi::fsops::set_xattr(Some(few.as_fd()), few.as_fd(), b"", b"user.k", b"v").unwrap();
    let listed = lmpi::fsops::list_xattrs(Some(fd.as_fd()), fd.as_fd(), b"");
    assert_eq!(
        listed.map_err(|e| e.errno),
        Err(libc::E2BIG),
        "tmpfs listed them all"
    );
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        if matches!(launch, Launch::Mpirun(_)) && !have("mpirun") {
            continue;
        }
        sh(&format!("rm -rf {0} && mkdir {0}", dst.display()));
        let (code, r, o) = pass(launch, "copy", &src, &dst, &[]);
        assert_eq!(code, 1, "{launch:?}: {}", text(&o));
        let s = said(&o);
        assert!(
            s.contains("d/many: xattrs not copied: listxattr: Argument list too long"),
            "{s}"
        );
        assert_eq!(total(&r, "errors"), 1, "{s}");
        assert_eq!(total(&r, "files"), 2, "{s}");
        assert_eq!(std::fs::read(dst.join("d/many")).unwrap(), b"the data\n");
        let d = std::fs::File::open(dst.join("d/few")).unwrap();
        let v = lmpi::fsops::get_xattr(Some(d.as_fd()), d.as_fd(), b"", b"user.k").unwrap();
        assert_eq!(v, b"v");
        let (sm, dm) = (
            std::fs::metadata(src.join("d/many")).unwrap(),
            std::fs::metadata(dst.join("d/many")).unwrap(),
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!((sm.mtime(), sm.mtime_nsec()), (dm.mtime(), dm.mtime_nsec()));
    }
    // verify cannot list them either: one line, not a clean bill.
    let (code, _, o) = pass(Launch::Alone, "verify", &src, &dst, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    assert!(
        said(&o).contains("listxattr: Argument list too long"),
        "{}",
        text(&o)
    );
}

// ---------- stats ----------

fn port_open(port: u16) -> bool {
    let addr = ([127, 0, 0, 1], port).into();
    let ok = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok();
    if !ok {
        assert!(!in_ci(), "a service on 127.0.0.1:{port} is required in CI");
        eprintln!("skipped: nothing on 127.0.0.1:{port}");
    }
    ok
}

fn mc() -> memcache::Client {
    memcache::Client::connect("memcache://127.0.0.1:11211?protocol=ascii&timeout=1")
        .expect("memcached")
}

fn graphite(cfg: &Path, how: &str) -> Output {
    lmpi(
        Launch::Alone,
        &[
            "stats".as_ref(),
            "graphite".as_ref(),
            how.as_ref(),
            "--config".as_ref(),
            cfg.as_os_str(),
        ],
    )
}

/// A registry line with a byte that is not UTF-8, one with a space, and a
/// worker whose counter is not UTF-8: each skipped with one line; the good
/// worker's counts are read, sent to carbon and cleared; a pass still
/// registers in the poisoned registry.
#[test]
fn stats_graphite_skips_a_non_utf8_worker_and_value() {
    if !port_open(11211) || !port_open(2003) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let prefix = format!("lmpisecin{}", std::process::id());
    let cfg = t.path().join("lmpi.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_interval = 1\n[stats]\nenabled = true\nkey_prefix = \"{prefix}\"\ngraphite_prefix = \"{prefix}.g\"\n"
        ),
    )
    .unwrap();
    let c = mc();
    let mut reg = b"copy_good_0\ncopy_\xff\xfebad_1\ncopy_a b_2\ncopy_badvalue_3\n".to_vec();
    reg.extend(b"copy_good_0\n");
    c.set(&format!("{prefix}.workers"), &reg[..], 600).unwrap();
    c.set(&format!("{prefix}.copy_good_0.files"), "5", 600)
        .unwrap();
    c.set(
        &format!("{prefix}.copy_badvalue_3.files"),
        &b"\xff7"[..],
        600,
    )
    .unwrap();
    let dry = graphite(&cfg, "--dry-run");
    assert!(dry.status.success(), "{}", text(&dry));
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        out.contains(&format!("{prefix}.g.copy.total.files 5 ")),
        "{}",
        text(&dry)
    );
    let err = said(&dry);
    assert!(
        err.contains("skipped `copy_\\xff\\xfebad_1`: not a worker name"),
        "{err}"
    );
    assert!(err.contains("skipped `copy_a b_2`"), "{err}");
    assert!(
        err.contains("copy_badvalue_3.files: skipped: `\\xff7` is not a count"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
    let sent = graphite(&cfg, "--once");
    assert!(sent.status.success(), "{}", text(&sent));
    let left: Option<String> = c.get(&format!("{prefix}.copy_good_0.files")).unwrap();
    assert_eq!(
        left.as_deref().map(str::trim),
        Some("0"),
        "read counts are cleared"
    );
    // A pass pushes into the poisoned registry: it registers all the same.
    let (_t2, src, dst) = src_and_dst();
    std::fs::write(src.join("f"), b"x").unwrap();
    let (code, _, o) = pass(
        Launch::Alone,
        "copy",
        &src,
        &dst,
        &["--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{}", text(&o));
    let reg: Vec<u8> = c
        .get(&format!("{prefix}.workers"))
        .unwrap()
        .unwrap_or_default();
    let names = reg
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"copy_"))
        .count();
    assert_eq!(names, 6, "{}", String::from_utf8_lossy(&reg));
    let dry = graphite(&cfg, "--dry-run");
    assert!(dry.status.success(), "{}", text(&dry));
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        out.contains(&format!("{prefix}.g.copy.total.files 1 ")),
        "{}",
        text(&dry)
    );
}
