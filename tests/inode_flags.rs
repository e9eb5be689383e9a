//! chattr flags (immutable, append-only, no-dump) follow the source, set
//! last; an immutable target can still be replaced by a later copy; a
//! target that cannot hold them gets one note, not an error per file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn sh(script: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An ext4 filesystem in a loop-mounted image file (tmpfs has no chattr
/// flags); unmounted on drop.
struct Ext4 {
    mnt: PathBuf,
}

impl Ext4 {
    fn new(dir: &Path) -> Ext4 {
        let (img, mnt) = (dir.join("fs.img"), dir.join("mnt"));
        std::fs::create_dir_all(&mnt).unwrap();
        sh(&format!(
            "truncate -s 64M {0} && mkfs.ext4 -q -F {0} && mount -o loop {0} {1}",
            img.display(),
            mnt.display()
        ));
        Ext4 { mnt }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let m = self.mnt.display();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("chattr -R -i -a {m} 2>/dev/null; umount -l {m}"))
            .status();
    }
}

fn lsattr(p: &Path) -> String {
    sh(&format!("lsattr -d {}", p.display()))
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn inode_flags_follow_the_source_and_never_block_a_later_copy() {
    if !is_root() || !have("mkfs.ext4") || !have("chattr") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fs = Ext4::new(tmp.path());
    let (src, dst) = (fs.mnt.join("src"), fs.mnt.join("dst"));
    sh(&format!(
        "mkdir {0} {1} && cd {0} && echo i > imm && echo a > app && echo d > nodump && echo p > plain \
         && chattr +i imm && chattr +a app && chattr +d nodump",
        src.display(),
        dst.display()
    ));
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(
        lsattr(&dst.join("imm")).contains('i'),
        "{}",
        lsattr(&dst.join("imm"))
    );
    assert!(lsattr(&dst.join("app")).contains('a'));
    assert!(lsattr(&dst.join("nodump")).contains('d'));
    assert!(!lsattr(&dst.join("plain")).contains('i'));
    let (code, r, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!((total(&r, "files"), total(&r, "meta")), (0, 0), "{r}");

    // The immutable file changes on the source: the copy replaces the
    // immutable target and makes the new one immutable again.
    sh(&format!(
        "cd {} && chattr -i imm && echo more >> imm && chattr +i imm && chattr -d nodump",
        src.display()
    ));
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(std::fs::read(dst.join("imm")).unwrap(), b"i\nmore\n");
    assert!(lsattr(&dst.join("imm")).contains('i'));
    assert!(
        !lsattr(&dst.join("nodump")).contains('d'),
        "flag removed too"
    );

    // tmpfs holds these flags too since Linux 6.0; a target that refuses
    // them (ENOTTY, EOPNOTSUPP) gets one note per pass (not testable on
    // this machine: every filesystem it mounts takes them).
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let (code, _, o) = pass(Launch::Alone, "copy", &src, shm.path(), &[]);
    sh(&format!("chattr -R -i -a {}", shm.path().display()));
    assert_eq!(code, 0, "{}", text(&o));
}
