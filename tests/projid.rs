//! Project IDs (quota projects) and directories' project-inherit flag
//! follow the source between two XFS filesystems, alone and under mpirun,
//! in the copy and the final pass; a second copy changes nothing; a changed
//! project ID is fixed in place; a target that cannot hold them (tmpfs)
//! gets one note, not an error per file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn sh(script: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An XFS filesystem in a sparse, loop-mounted image file in `dir`
/// (mkfs.xfs wants at least 300 MiB); unmounted on drop.
struct Xfs {
    mnt: PathBuf,
}

impl Xfs {
    fn new(dir: &Path, name: &str) -> Xfs {
        let img = dir.join(format!("{name}.img"));
        let mnt = dir.join(name);
        std::fs::create_dir_all(&mnt).unwrap();
        sh(&format!(
            "truncate -s 300M {0} && mkfs.xfs -q -f {0} && mount -o loop {0} {1}",
            img.display(),
            mnt.display()
        ));
        Xfs { mnt }
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Project ID of `p` (`xfs_io -c lsproj`).
fn projid(p: &Path) -> u32 {
    let out = sh(&format!("xfs_io -r -c lsproj '{}'", p.display()));
    out.trim()
        .strip_prefix("projid = ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}: lsproj said {out:?}", p.display()))
}

/// Whether directory `p` has the project-inherit flag (`P` in xfs_io's lsattr).
fn inherits(p: &Path) -> bool {
    let out = sh(&format!("xfs_io -r -c lsattr '{}'", p.display()));
    out.split_whitespace().next().unwrap_or("").contains('P')
}

/// Every entry's (project ID, inherit) below `root`, by relative path.
fn projects(root: &Path) -> Vec<(String, u32, bool)> {
    let mut v = vec![(String::new(), projid(root), inherits(root))];
    let list = sh(&format!(
        "cd '{}' && find . -mindepth 1 | sort",
        root.display()
    ));
    for rel in list.lines() {
        let p = root.join(rel);
        if p.symlink_metadata().unwrap().file_type().is_symlink() {
            continue;
        }
        let dir = p.is_dir();
        v.push((rel.to_string(), projid(&p), dir && inherits(&p)));
    }
    v
}

/// A source tree with project IDs everywhere they can be: an inheriting
/// root and subdirectory, a directory without the flag, files that differ
/// from what they would inherit, hardlinks, a symlink, and big files copied
/// in chunks. `xfs_io` works on one file per call.
fn make_source(src: &Path) {
    std::fs::create_dir(src).unwrap();
    sh(&format!(
        "cd '{}' && xfs_io -c 'chattr +P' -c 'chproj 5' . \
         && mkdir p42 plain && xfs_io -c 'chproj 42' p42 \
         && xfs_io -c 'chattr -P' -c 'chproj 0' plain \
         && echo a > p42/a && echo o > p42/other && xfs_io -c 'chproj 7' p42/other \
         && echo r > rootfile && echo f > plain/f && xfs_io -c 'chproj 9' plain/f \
         && echo z > plain/z && echo h > plain/h1 && ln plain/h1 plain/h2 \
         && xfs_io -c 'chproj 11' plain/h1 && ln -s a p42/link \
         && head -c 40000 /dev/urandom > p42/big && head -c 40000 /dev/urandom > plain/big \
         && xfs_io -c 'chproj 12' plain/big \
         && mkdir p42/sub && echo s > p42/sub/s",
        src.display()
    ));
}

/// Chunked copies of files from 16 KiB on, so big files take that path.
const CHUNKS: [&str; 4] = ["--chunk-size", "4096", "--chunk-threshold", "16384"];

fn copy(launch: Launch, pass_name: &str, src: &Path, dst: &Path) -> serde_json::Value {
    let (code, r, o) = pass(launch, pass_name, src, dst, &CHUNKS);
    assert_eq!(code, 0, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("error"), "{}", text(&o));
    r
}

#[test]
fn project_ids_follow_the_source() {
    if !is_root() {
        assert!(!in_ci(), "loop-mounting XFS needs root in CI");
        eprintln!("skipped: needs root to mount XFS images");
        return;
    }
    if !have("mkfs.xfs") || !have("xfs_io") {
        return;
    }
    let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
    let (a, b) = (Xfs::new(tmp.path(), "a"), Xfs::new(tmp.path(), "b"));
    let src = a.mnt.join("src");
    make_source(&src);
    let want = projects(&src);
    assert!(want.iter().any(|(r, id, _)| r == "./plain/f" && *id == 9));
    assert!(want.iter().any(|(r, _, inh)| r == "./p42" && *inh));

    for (launch, name) in [(Launch::Alone, "one"), (Launch::Mpirun(2), "two")] {
        let dst = b.mnt.join(name);
        std::fs::create_dir(&dst).unwrap();
        copy(launch, "copy", &src, &dst);
        assert_eq!(projects(&dst), want, "{launch:?}");
        let r = copy(launch, "copy", &src, &dst);
        assert_eq!(
            (total(&r, "files"), total(&r, "meta")),
            (0, 0),
            "{launch:?}: a second copy changes nothing: {r}"
        );
    }

    // The verify pass sees a wrong project ID (and nothing on a converged tree).
    let one = b.mnt.join("one");
    for p in ["dirtime", "verify"] {
        let (code, _, o) = pass(Launch::Alone, p, &src, &one, &[]);
        assert_eq!(code, 0, "{p}: {}", text(&o));
    }
    sh(&format!(
        "cd '{}' && xfs_io -c 'chproj 77' p42/a",
        one.display()
    ));
    let (code, _, o) = pass(Launch::Mpirun(2), "verify", &src, &one, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    assert!(
        text(&o).contains("p42/a: differs: project 42 vs 77"),
        "{}",
        text(&o)
    );
    sh(&format!(
        "cd '{}' && xfs_io -c 'chproj 42' p42/a",
        one.display()
    ));

    // Changed on the source: fixed in place, no data copied.
    // p42/other gets new data too: its replacement is renamed into p42,
    // which takes only files of its own project, before it gets its own.
    sh(&format!(
        "cd '{}' && xfs_io -c 'chproj 8' plain/f && xfs_io -c 'chproj 43' p42/a \
         && xfs_io -c 'chattr -P' p42/sub && xfs_io -c 'chattr +P' -c 'chproj 3' plain \
         && echo more >> p42/other",
        src.display()
    ));
    let want = projects(&src);
    let dst = b.mnt.join("two");
    let r = copy(Launch::Mpirun(2), "copy", &src, &dst);
    assert_eq!(projects(&dst), want);
    assert_eq!(total(&r, "files"), 1, "{r}");
    assert!(total(&r, "meta") >= 4, "{r}");
    assert_eq!(std::fs::read(dst.join("p42/other")).unwrap(), b"o\nmore\n");

    // The final pass fixes them the same way (and copies p42/other's new
    // data, which target "one" has not seen yet).
    sh(&format!(
        "cd '{}' && xfs_io -c 'chproj 21' plain/big && xfs_io -c 'chproj 21' p42/other \
         && xfs_io -c 'chattr -P' p42",
        src.display()
    ));
    let want = projects(&src);
    let dst = b.mnt.join("one");
    let r = copy(Launch::Alone, "final", &src, &dst);
    assert_eq!(projects(&dst), want);
    assert_eq!(total(&r, "files"), 1, "{r}");
    let r = copy(Launch::Mpirun(2), "final", &src, &dst);
    assert_eq!((total(&r, "files"), total(&r, "meta")), (0, 0), "{r}");

    // Turned off: not copied.
    let off = b.mnt.join("off");
    std::fs::create_dir(&off).unwrap();
    let cfg = tmp.path().join("lmpi.toml");
    std::fs::write(&cfg, "copy_project_ids = false\n").unwrap();
    let (code, _, o) = pass(
        Launch::Alone,
        "copy",
        &src,
        &off,
        &["--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(projid(&off.join("plain/f")), 0);
    assert!(!inherits(&off.join("plain")));

    // tmpfs cannot hold project IDs: one note for the pass, exit 0.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let (code, _, o) = pass(Launch::Alone, "copy", &src, shm.path(), &CHUNKS);
    assert_eq!(code, 0, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let notes = err.lines().filter(|l| l.contains("project")).count();
    assert!(notes <= 1, "{}", text(&o));
    assert!(!err.contains("error"), "{}", text(&o));
    assert_eq!(std::fs::read(shm.path().join("plain/f")).unwrap(), b"f\n");
}
