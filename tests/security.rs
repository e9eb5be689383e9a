//! Security and robustness cases that do not need a race to show: hardlink
//! groups split on the source, the target mounted inside the source, stale
//! temp files of a killed job, counters that count each entry once. The
//! rename races themselves are in `tests/race.rs`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

fn nlink(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().nlink()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// One name of a 30-name group replaced on the source by a copy of itself
/// (`cp -p x t; rm x; mv t x`), then chmod'ed: one copy pass breaks the
/// target name out of the group and fixes its mode, and nothing else moves.
#[test]
fn hardlink_split_on_the_source_converges_in_one_pass() {
    if !have("mpirun") {
        return;
    }
    let (_t, src, dst) = src_and_dst();
    sh(&format!(
        "cd {} && mkdir a b && echo data > a/x && for i in $(seq 1 14); do ln a/x a/l$i; ln a/x b/l$i; done && ln a/x b/x",
        src.display()
    ));
    let (code, _, o) = pass(Launch::Mpirun(3), "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(nlink(&dst.join("a/x")), 30);

    sh(&format!(
        "cd {}/a && cp -p x t && rm x && mv t x && chmod 600 x",
        src.display()
    ));
    let (code, r, o) = pass(Launch::Mpirun(3), "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(nlink(&dst.join("a/x")), 1, "split name broken out");
    assert_eq!(mode(&dst.join("a/x")), 0o600);
    assert_eq!(nlink(&dst.join("b/x")), 29);
    assert_eq!(
        mode(&dst.join("b/x")),
        0o644,
        "the rest of the group untouched"
    );
    assert!(compare_trees(&src, &dst, false).is_empty());
    assert_eq!(total(&r, "scanned"), 30, "each name counted once");

    // Converged: a second pass changes nothing.
    let (code, r, o) = pass(Launch::Mpirun(3), "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(total(&r, "meta"), 0, "{r}");
    assert_eq!(total(&r, "files"), 0, "{r}");
}

/// A target inode shared by two groups that the source has split apart
/// (`a b` and `c d`): neither group may settle it in place, or each pass
/// would flip the other's mode forever.
#[test]
fn a_target_inode_shared_by_two_source_groups_is_split() {
    let (_t, src, dst) = src_and_dst();
    sh(&format!(
        "cd {} && echo same > a && ln a b && ln a c && ln a d",
        src.display()
    ));
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    sh(&format!(
        "cd {} && cp -p c t && rm c d && mv t c && ln c d && chmod 600 c",
        src.display()
    ));
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(ino(&dst.join("a")), ino(&dst.join("b")));
    assert_eq!(ino(&dst.join("c")), ino(&dst.join("d")));
    assert_ne!(ino(&dst.join("a")), ino(&dst.join("c")));
    assert_eq!((mode(&dst.join("a")), mode(&dst.join("c"))), (0o644, 0o600));
    let (code, r, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!((total(&r, "meta"), total(&r, "files")), (0, 0), "{r}");
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The target bind-mounted inside the source passes the path check (the
/// paths are not nested); the walk meets the target root and must not
/// enter it, or the copy would feed on itself.
#[test]
fn a_target_mounted_inside_the_source_is_never_walked() {
    if !is_root() {
        eprintln!("skipped: needs root for mount --bind");
        return;
    }
    let (_t, src, dst) = src_and_dst();
    sh(&format!(
        "mkdir -p {0}/sub/mnt && echo a > {0}/sub/f && mount --bind {1} {0}/sub/mnt",
        src.display(),
        dst.display()
    ));
    let _m = Mount(src.join("sub/mnt"));
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        if matches!(launch, Launch::Mpirun(_)) && !have("mpirun") {
            continue;
        }
        let t0 = std::time::Instant::now();
        let (code, _, o) = pass(launch, "copy", &src, &dst, &[]);
        assert!(t0.elapsed().as_secs() < 60);
        assert_eq!(code, 1, "the skipped root is an error: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is the target root"), "{}", text(&o));
        assert!(dst.join("sub/f").exists());
        assert!(!dst.join("sub/mnt/sub").exists(), "recursed into itself");
        // The delete pass meets it too (as the source's `sub/mnt`), and
        // must not purge the target through it.
        let (code, _, o) = pass(launch, "delete", &src, &dst, &[]);
        assert!(code == 0 || code == 1, "{}", text(&o));
        assert!(dst.join("sub/f").exists(), "{}", text(&o));
    }
}

/// `kill -9` leaves full-size temp files; the next copy removes those of
/// other jobs (its exact name pattern), but never a source file that
/// happens to have such a name.
#[test]
fn stale_temp_files_of_a_killed_job_are_removed_by_the_next_copy() {
    let (_t, src, dst) = src_and_dst();
    sh(&format!(
        "mkdir {0}/d {1}/d && echo real > {0}/d/f && echo src > {0}/d/.lmpi-0-9-9.part \
         && echo old > {1}/d/.lmpi-0-1234-5.part && echo new > {1}/d/.lmpi-00000000000000aa-1-2.part \
         && echo keep > {1}/d/.lmpi-notours.part",
        src.display(),
        dst.display()
    ));
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let d = dst.join("d");
    assert!(!d.join(".lmpi-0-1234-5.part").exists(), "{}", text(&o));
    assert!(!d.join(".lmpi-00000000000000aa-1-2.part").exists());
    assert!(
        d.join(".lmpi-notours.part").exists(),
        "not our pattern: kept"
    );
    assert_eq!(std::fs::read(d.join(".lmpi-0-9-9.part")).unwrap(), b"src\n");
    assert_eq!(std::fs::read(d.join("f")).unwrap(), b"real\n");
}

/// Bytes count only when they landed under the real name: a chunked copy
/// counts its file's size once, and a normal copy its bytes.
#[test]
fn data_counts_the_bytes_that_landed() {
    let (_t, src, dst) = src_and_dst();
    sh(&format!(
        "head -c 1048576 /dev/urandom > {0}/big && head -c 1000 /dev/urandom > {0}/small",
        src.display()
    ));
    let (code, r, o) = pass(
        Launch::Alone,
        "copy",
        &src,
        &dst,
        &["--chunk-threshold", "65536", "--chunk-size", "65536"],
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(total(&r, "data"), 1048576 + 1000, "{r}");
    assert_eq!(total(&r, "files"), 2, "{r}");
    assert!(compare_trees(&src, &dst, false).is_empty());
}

/// The RHEL 8 path (4.18 kernels lack openat2): one openat(O_NOFOLLOW)
/// per component, forced here with LMPI_RESOLVE=walk, deep tree included.
#[test]
fn directories_are_resolved_without_openat2_too() {
    let (t, src, dst) = src_and_dst();
    build_odd_tree(&src, true);
    let o = Command::new(bin())
        .env("LMPI_RESOLVE", "walk")
        .args(["--pass", "copy", "-q", "--source"])
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .arg("--error-log")
        .arg(t.path().join("errors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(compare_trees(&src, &dst, false).is_empty());
}

/// A source root of /proc/self kept a thread busy for 30 minutes after
/// SIGTERM: pseudo filesystems are refused before anything starts.
#[test]
fn pseudo_filesystem_roots_are_refused() {
    let (_t, src, dst) = src_and_dst();
    for (s, d) in [
        (Path::new("/proc/self"), dst.as_path()),
        (Path::new("/sys/kernel"), dst.as_path()),
        (src.as_path(), Path::new("/sys/kernel/mm")),
    ] {
        let t0 = std::time::Instant::now();
        let (code, _, o) = pass(Launch::Alone, "copy", s, d, &[]);
        assert_eq!(code, 2, "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("not a real filesystem"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(t0.elapsed().as_secs() < 10);
    }
}
