//! `lmpi --version` names the commit it was built from: the crate's version
//! and `git describe --always --dirty` when the source is a git checkout
//! with git at hand (else the crate's version alone, as from a tarball).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (out.status.success() && !s.is_empty()).then(|| s.to_string())
}

fn main() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
    let dir = Path::new(&dir);
    println!("cargo:rerun-if-changed=build.rs");
    // A commit, checkout or reset moves HEAD's reflog; an edit under src/
    // may make the tree dirty (an edit elsewhere is seen at the next one).
    println!("cargo:rerun-if-changed=src");
    for p in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(dir, &["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={}", dir.join(path).display());
        }
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    if let Some(d) = git(dir, &["describe", "--always", "--dirty"]) {
        println!("cargo:rustc-env=LMPI_GIT_DESCRIBE={version} ({d})");
    }
}
