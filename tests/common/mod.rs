//! Helpers for integration tests: run the real binary (alone or under mpirun),
//! build trees with every awkward kind of entry, and compare trees entry by entry.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lmpi::fsops::{self, Kind};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lmpi"))
}

pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Whether a tool the test needs is here. In CI a missing tool fails the test.
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(!in_ci(), "{tool} is required in CI but was not found");
        eprintln!("skipped: {tool} not installed");
    }
    ok
}

/// How to start lmpi: alone (no launcher) or under mpirun with N ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    Alone,
    Mpirun(usize),
}

/// `program` as `launch` starts it, with the environment MPI needs here.
pub fn launcher(launch: Launch, program: &Path) -> Command {
    let mut cmd = match launch {
        Launch::Alone => Command::new(program),
        Launch::Mpirun(n) => {
            let mut c = Command::new("mpirun");
            c.args([
                "--oversubscribe",
                "--bind-to",
                "none",
                "-np",
                &n.to_string(),
            ])
            .arg(program);
            c
        }
    };
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        // One host, no InfiniBand: skip UCX probing, 0.2 s per start.
        .env("OMPI_MCA_pml", "ob1");
    cmd
}

pub fn lmpi(launch: Launch, args: &[&OsStr]) -> Output {
    launcher(launch, &bin())
        .args(args)
        .output()
        .expect("start lmpi")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run one pass and return (exit code, parsed JSON report, output).
pub fn pass(
    launch: Launch,
    pass: &str,
    src: &Path,
    dst: &Path,
    extra: &[&str],
) -> (i32, serde_json::Value, Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let elog = dir.path().join("errors.log");
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("--pass"),
        OsStr::new(pass),
        OsStr::new("--source"),
        src.as_os_str(),
        OsStr::new("--target"),
        dst.as_os_str(),
        OsStr::new("--report"),
        report.as_os_str(),
        OsStr::new("--error-log"),
        elog.as_os_str(),
        OsStr::new("-q"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let out = lmpi(launch, &args);
    let json = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, out)
}

pub fn total(report: &serde_json::Value, key: &str) -> u64 {
    report["totals"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no totals.{key} in report {report}"))
}

// ---------- building trees ----------

/// A temp dir holding empty `src` and `dst` directories (gone with the TempDir).
pub fn src_and_dst() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    (tmp, src, dst)
}

pub fn open(p: &Path) -> OwnedFd {
    fsops::open_root(p).expect("open root")
}

pub fn write_at(dir: BorrowedFd, name: &[u8], data: &[u8]) {
    let f = fsops::create_at(dir, name, 0o644).expect("create");
    let file = std::fs::File::from(f);
    use std::io::Write;
    (&file).write_all(data).expect("write");
}

pub fn set_mtime(dir: BorrowedFd, name: &[u8], sec: i64, nsec: u32) {
    let t = fsops::Time { sec, nsec };
    fsops::utimes_at(dir, name, t, t).expect("utimes");
}

pub fn is_root() -> bool {
    fsops::is_root()
}

/// Every awkward entry we know, under `root`. `deep` adds a path longer than PATH_MAX.
pub fn build_odd_tree(root: &Path, deep: bool) {
    let r = open(root);
    let d = r.as_fd();
    fsops::mkdir_at(d, b"dir", 0o755).unwrap();
    let sub = fsops::open_dir_at(d, b"dir").unwrap();
    write_at(sub.as_fd(), b"plain.txt", b"hello world\n");
    write_at(sub.as_fd(), b"\xff\xfe non-utf8", b"bytes");
    write_at(sub.as_fd(), b"new\nline", b"nl");
    write_at(sub.as_fd(), b" spaced name ", b"sp");
    write_at(sub.as_fd(), b"-leading-dash", b"dash");
    write_at(sub.as_fd(), &[b'x'; 255], b"long name");
    write_at(sub.as_fd(), b"empty", b"");
    // Hardlinks: two in one dir, one in another dir.
    write_at(d, b"linked", b"one inode, three names");
    fsops::link_at(d, b"linked", d, b"linked.2").unwrap();
    fsops::link_at(d, b"linked", sub.as_fd(), b"linked.3").unwrap();
    // Sparse: holes stay holes.
    {
        let f = fsops::create_at(d, b"sparse", 0o600).unwrap();
        let file = std::fs::File::from(f);
        use std::os::unix::fs::FileExt;
        file.write_at(b"start", 0).unwrap();
        file.write_at(b"middle", 8 << 20).unwrap();
        file.set_len(32 << 20).unwrap();
    }
    // Medium file with random-ish content.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write_at(d, b"medium.bin", &data);
    // Special files.
    let c = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    unsafe { libc::mkfifo(c.as_ptr(), 0o640) };
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock"));
    if is_root() {
        let c = std::ffi::CString::new(root.join("null-dev").as_os_str().as_bytes()).unwrap();
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        let c = std::ffi::CString::new(root.join("blk-dev").as_os_str().as_bytes()).unwrap();
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o660, libc::makedev(7, 200)) };
    }
    // Symlinks, one dangling.
    fsops::symlink_at(b"dir/plain.txt", d, b"good-link").unwrap();
    fsops::symlink_at(b"/nonexistent/\xffdangling", d, b"dangling").unwrap();
    // xattrs.
    let fd = fsops::open_read_at(sub.as_fd(), b"plain.txt").unwrap();
    fsops::set_xattr(
        Some(fd.as_fd()),
        sub.as_fd(),
        b"",
        b"user.note",
        b"\x00binary\xff",
    )
    .unwrap();
    if is_root() {
        fsops::set_xattr(Some(fd.as_fd()), sub.as_fd(), b"", b"trusted.secret", b"t").unwrap();
    }
    drop(fd);
    // POSIX ACLs (stored as system.posix_acl_* xattrs), where setfacl exists.
    if have("setfacl") {
        let st = Command::new("setfacl")
            .args(["-m", "u:1234:rw,g:5678:r"])
            .arg(root.join("dir/plain.txt"))
            .status()
            .unwrap();
        assert!(st.success(), "setfacl on a file");
        let st = Command::new("setfacl")
            .args(["-d", "-m", "u:1234:rwx"])
            .arg(root.join("dir"))
            .status()
            .unwrap();
        assert!(st.success(), "setfacl default on a dir");
    }
    // Modes and owners.
    write_at(d, b"setuid", b"#!/bin/sh\n");
    fsops::pin_at(d, b"setuid", None)
        .unwrap()
        .chmod(0o4755)
        .unwrap();
    fsops::mkdir_at(d, b"sticky", 0o1777).unwrap();
    fsops::pin_at(d, b"sticky", None)
        .unwrap()
        .chmod(0o1777)
        .unwrap();
    if is_root() {
        write_at(d, b"owned", b"someone else's");
        fsops::chown_at(d, b"owned", 4321, 8765).unwrap();
        fsops::chown_at(d, b"good-link", 4321, 8765).unwrap();
        fsops::chown_at(d, b"sticky", 1001, 1002).unwrap();
    }
    // Times: before 1970 and with nanoseconds.
    write_at(d, b"old", b"1960");
    set_mtime(d, b"old", -315_619_200, 123_456_789);
    write_at(d, b"nanos", b"ns");
    set_mtime(d, b"nanos", 1_600_000_000, 999_999_999);
    // A read-only directory with content.
    fsops::mkdir_at(d, b"ro", 0o755).unwrap();
    let ro = fsops::open_dir_at(d, b"ro").unwrap();
    write_at(ro.as_fd(), b"inside", b"ro content");
    fsops::pin_at(d, b"ro", None).unwrap().chmod(0o555).unwrap();
    // A wide directory, to split into several batches.
    fsops::mkdir_at(d, b"wide", 0o755).unwrap();
    let w = fsops::open_dir_at(d, b"wide").unwrap();
    for i in 0..2500 {
        write_at(
            w.as_fd(),
            format!("f{i:05}").as_bytes(),
            format!("{i}").as_bytes(),
        );
    }
    if deep {
        // 20 levels of 240-byte names: a path of ~4.8 KB, beyond PATH_MAX.
        let mut cur = fsops::open_dir_at(d, b".").unwrap();
        for i in 0..20 {
            let name = format!("{i:02}{}", "d".repeat(238));
            fsops::mkdir_at(cur.as_fd(), name.as_bytes(), 0o755).unwrap();
            cur = fsops::open_dir_at(cur.as_fd(), name.as_bytes()).unwrap();
        }
        write_at(cur.as_fd(), b"deep-file", b"at the bottom");
    }
}

// ---------- comparing trees ----------

#[derive(Debug)]
struct Seen {
    st: fsops::Stat,
}

fn read_all(dir: BorrowedFd, name: &[u8]) -> Vec<u8> {
    let fd = fsops::open_read_at(dir, name).expect("open for compare");
    let mut f = std::fs::File::from(fd);
    let mut v = Vec::new();
    use std::io::Read;
    f.read_to_end(&mut v).expect("read for compare");
    v
}

fn xattrs(fd: Option<BorrowedFd>, dir: BorrowedFd, name: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    // lmpi's own records (trusted.lmpi.*) are on the target only, by design.
    let keys = fsops::list_xattrs(fd, dir, name).unwrap_or_default();
    for k in keys
        .into_iter()
        .filter(|k| !k.starts_with(b"trusted.lmpi."))
    {
        if let Ok(v) = fsops::get_xattr(fd, dir, name, &k) {
            m.insert(k, v);
        }
    }
    m
}

/// A big file's partial copy that a stopped pass keeps for the next one to
/// resume: the partial-file name and lmpi's root-only record on it.
pub fn is_resume_partial(p: &Path) -> bool {
    let name = p.file_name().unwrap_or_default().as_encoded_bytes();
    if !name.starts_with(b".lmpi-resume-") {
        return false;
    }
    let d = open(p.parent().unwrap());
    fsops::get_xattr(None, d.as_fd(), name, b"trusted.lmpi.resume").is_ok()
}

/// Compare two trees; returns the differences (empty = identical).
/// `dir_times`: also compare directory times (after a dirtime pass).
pub fn compare_trees(a: &Path, b: &Path, dir_times: bool) -> Vec<String> {
    let mut diffs = Vec::new();
    let (ra, rb) = (open(a), open(b));
    let mut links_a: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut links_b: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    walk_compare(
        ra.as_fd(),
        rb.as_fd(),
        b"",
        dir_times,
        &mut diffs,
        &mut links_a,
        &mut links_b,
    );
    let mut ga: Vec<Vec<Vec<u8>>> = links_a.into_values().filter(|v| v.len() > 1).collect();
    let mut gb: Vec<Vec<Vec<u8>>> = links_b.into_values().filter(|v| v.len() > 1).collect();
    for g in ga.iter_mut().chain(gb.iter_mut()) {
        g.sort();
    }
    ga.sort();
    gb.sort();
    if ga != gb {
        diffs.push(format!(
            "hardlink groups differ: {:?} vs {:?}",
            ga.len(),
            gb.len()
        ));
    }
    diffs
}

#[allow(clippy::too_many_arguments)]
fn walk_compare(
    da: BorrowedFd,
    db: BorrowedFd,
    rel: &[u8],
    dir_times: bool,
    diffs: &mut Vec<String>,
    la: &mut BTreeMap<(u64, u64), Vec<Vec<u8>>>,
    lb: &mut BTreeMap<(u64, u64), Vec<Vec<u8>>>,
) {
    let list = |fd: BorrowedFd| -> Vec<Vec<u8>> {
        let d = fsops::open_dir_at(fd, b".").expect("reopen");
        let mut r = fsops::DirReader::new(d);
        let mut v = Vec::new();
        while let Some(e) = r.next_entry() {
            v.push(e.expect("readdir").name);
        }
        v.sort();
        v
    };
    let (na, nb) = (list(da), list(db));
    if na != nb {
        let only_a: Vec<_> = na
            .iter()
            .filter(|n| !nb.contains(n))
            .map(|n| fsops::show(n))
            .collect();
        let only_b: Vec<_> = nb
            .iter()
            .filter(|n| !na.contains(n))
            .map(|n| fsops::show(n))
            .collect();
        diffs.push(format!(
            "{}: only in source {only_a:?}, only in target {only_b:?}",
            fsops::show(rel)
        ));
    }
    for name in na.iter().filter(|n| nb.contains(n)) {
        let path = fsops::join(rel, name);
        let p = fsops::show(&path);
        let (sa, sb) = (
            fsops::stat_at(da, name).unwrap(),
            fsops::stat_at(db, name).unwrap(),
        );
        let _ = Seen { st: sa };
        if sa.kind != sb.kind {
            diffs.push(format!("{p}: type {:?} vs {:?}", sa.kind, sb.kind));
            continue;
        }
        if (sa.uid, sa.gid) != (sb.uid, sb.gid) {
            diffs.push(format!(
                "{p}: owner {}:{} vs {}:{}",
                sa.uid, sa.gid, sb.uid, sb.gid
            ));
        }
        if sa.kind != Kind::Symlink && sa.perm != sb.perm {
            diffs.push(format!("{p}: mode {:o} vs {:o}", sa.perm, sb.perm));
        }
        if (sa.kind != Kind::Dir || dir_times) && sa.mtime != sb.mtime {
            diffs.push(format!("{p}: mtime {:?} vs {:?}", sa.mtime, sb.mtime));
        }
        match sa.kind {
            Kind::Dir => {
                let (ca, cb) = (
                    fsops::open_dir_at(da, name).unwrap(),
                    fsops::open_dir_at(db, name).unwrap(),
                );
                if xattrs(Some(ca.as_fd()), da, b"") != xattrs(Some(cb.as_fd()), db, b"") {
                    diffs.push(format!("{p}: xattrs differ"));
                }
                walk_compare(ca.as_fd(), cb.as_fd(), &path, dir_times, diffs, la, lb);
            }
            Kind::File => {
                if sa.size != sb.size || read_all(da, name) != read_all(db, name) {
                    diffs.push(format!("{p}: content differs"));
                }
                let (fa, fb) = (
                    fsops::open_read_at(da, name).unwrap(),
                    fsops::open_read_at(db, name).unwrap(),
                );
                if xattrs(Some(fa.as_fd()), da, b"") != xattrs(Some(fb.as_fd()), db, b"") {
                    diffs.push(format!("{p}: xattrs differ"));
                }
                // Holes: the copy may not allocate more than the source plus a block per segment.
                if sb.blocks > sa.blocks + 64 {
                    diffs.push(format!(
                        "{p}: holes filled ({} vs {} blocks)",
                        sa.blocks, sb.blocks
                    ));
                }
                if sa.nlink > 1 || sb.nlink > 1 {
                    la.entry((sa.dev, sa.ino)).or_default().push(path.clone());
                    lb.entry((sb.dev, sb.ino)).or_default().push(path.clone());
                }
            }
            Kind::Symlink
                if fsops::readlink_at(da, name).unwrap()
                    != fsops::readlink_at(db, name).unwrap() =>
            {
                diffs.push(format!("{p}: link target differs"));
            }
            Kind::Char | Kind::Block if sa.rdev != sb.rdev => {
                diffs.push(format!("{p}: device number differs"));
            }
            _ => {}
        }
    }
}

/// `rsync -anicHAX --delete src/ dst/` must print nothing once trees are identical.
pub fn rsync_diff(src: &Path, dst: &Path) -> String {
    let out = Command::new("rsync")
        .arg("-anicHAX")
        .arg("--delete")
        // lmpi's own records (the target root's last clean final pass) are
        // on the target only, by design: docs/track.md.
        .arg("--filter=-x trusted.lmpi.*")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dst.display()))
        .output()
        .expect("run rsync");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Build the LD_PRELOAD fault shim (tests/faults/shim.c) with the system C
/// compiler, once per test process.
pub fn shim() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lmpi-fault-shim.so");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/shim.c");
            // Build to a unique name and rename: test binaries may build it concurrently.
            let tmp = out.with_extension(format!("{}.so", std::process::id()));
            let st = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&tmp)
                .arg(&src)
                .arg("-ldl")
                .status()
                .expect("run cc");
            assert!(st.success(), "building the fault shim failed");
            std::fs::rename(&tmp, &out).expect("install shim");
            out
        })
        .clone()
}

/// A TCP forwarder to a local service that a test can cut: the way a service
/// restart or a network blip looks to lmpi, without disturbing the other
/// tests that share the real service.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for down in l.incoming() {
                let Ok(down) = down else { continue };
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.push(down.try_clone().unwrap());
                list.push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, open, conns }
    }

    /// Close every open connection and drop new ones until `reopen`.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

// ---------- a real unprivileged user, for attacks ----------

/// The account the security tests attack lmpi from.
pub const ATTACKER: &str = "lmpi-attacker";

/// The attacker's (uid, gid), creating the account (no home, no login) on
/// first use. None when the tests do not run as root (then no attack can be
/// staged); in CI that fails the test, since CI runs as root.
pub fn attacker() -> Option<(u32, u32)> {
    static MADE: Mutex<()> = Mutex::new(());
    if !is_root() {
        assert!(!in_ci(), "the security tests need root in CI");
        eprintln!("skipped: not root, no attacker account");
        return None;
    }
    let _g = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, ATTACKER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
    };
    if id("-u").is_none() {
        // Another test process may create it at the same time: judge by `id` after.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                ATTACKER,
            ])
            .output();
    }
    let ids = id("-u").zip(id("-g"));
    assert!(ids.is_some(), "useradd {ATTACKER} failed");
    ids
}

/// Run `script` with `sh -c` as the attacker (real uid, gid and no
/// supplementary groups: setpriv, not su, so no PAM and no tty).
pub fn as_attacker(script: &str) -> Output {
    let (uid, gid) = attacker().expect("attacker account");
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--inh-caps=-all",
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("start setpriv")
}

/// A temp dir the attacker can reach (0755: tempfile makes 0700 ones).
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    t
}

/// Give `p` to the attacker (lchown, not following a link).
pub fn give_to_attacker(p: &Path) {
    let (uid, gid) = attacker().expect("attacker account");
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("lchown");
}

/// A tmpfs of our own at `at`, unmounted (lazily) on drop. None (a skip)
/// where mounting is not allowed; in CI that fails the test.
pub struct TmpfsMount(pub PathBuf);

impl TmpfsMount {
    pub fn at(at: &Path, opts: &str) -> Option<TmpfsMount> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            assert!(!in_ci(), "mounting a tmpfs is required in CI");
            eprintln!("skipped: cannot mount tmpfs");
            return None;
        }
        Some(TmpfsMount(at.to_path_buf()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The liblustreapi test double (tests/lustre_double), built once per test
/// process: tests run in parallel, and one rebuilding the library while
/// another loads it makes the load fail.
pub fn build_lustre_double() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("lustre-double-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let out = dir.join("liblustreapi.so.1");
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/lustre_double/liblustreapi_double.c");
            let st = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .expect("cc");
            assert!(st.success(), "building the liblustreapi double failed");
            out
        })
        .clone()
}
