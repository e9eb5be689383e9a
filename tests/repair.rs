//! Issue 25, item 2: repair what verify finds. `--content` on copy and
//! final compares data and rewrites what differs under the same size and
//! mtime; `--from-manifest` on copy and final re-examines exactly the
//! entries a manifest names (a verify's differences, a pass's failures).
mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

/// A synced tree, then damage on the target of every kind verify reports:
/// data under the same size and mtime, a mode, an extra file, a missing one.
fn damaged(launch: Launch) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (t, src, dst) = src_and_dst();
    build_odd_tree(&src, false);
    sh(&format!(
        "mkdir -p '{s}/r' && for i in 1 2 3 4 5; do echo \"file $i\" > '{s}/r/f'$i; done",
        s = src.display()
    ));
    let (code, _, out) = pass(launch, "final", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    sh(&format!(
        "cd '{d}/r' && printf 'FILE 2\\n' > f2 && touch -r '{s}/r/f2' f2 && chmod 600 f3 \
         && echo extra > extra && rm f4",
        s = src.display(),
        d = dst.display()
    ));
    (t, src, dst)
}

fn verify(launch: Launch, src: &Path, dst: &Path, manifest: Option<&Path>) -> i32 {
    let mut extra = vec!["--content"];
    if let Some(m) = manifest {
        extra.extend(["--manifest", m.to_str().unwrap()]);
    }
    pass(launch, "verify", src, dst, &extra).0
}

fn repair(launch: Launch, pass_name: &str) {
    let (t, src, dst) = damaged(launch);
    let m = t.path().join("verify.manifest");
    assert_eq!(
        verify(launch, &src, &dst, Some(&m)),
        1,
        "verify must see the damage"
    );
    let named = std::fs::read_to_string(&m).unwrap();
    assert!(named.lines().count() >= 4, "{named}");
    let args = ["--content", "--from-manifest", m.to_str().unwrap()];
    let (code, report, out) = pass(launch, pass_name, &src, &dst, &args);
    assert_eq!(code, 0, "{}", text(&out));
    // Only the named entries were looked at, not the whole tree (a copy
    // walks a named directory whole: here `r`, whose mtime differs).
    let bound = if pass_name == "final" { 6 } else { 12 };
    assert!(total(&report, "scanned") <= bound, "{report}");
    assert!(text(&out).contains("--from-manifest: "), "{}", text(&out));
    assert_eq!(std::fs::read(dst.join("r/f2")).unwrap(), b"file 2\n");
    if pass_name == "final" {
        assert_eq!(
            verify(launch, &src, &dst, None),
            0,
            "verify after the repair"
        );
    } else {
        // A copy removes nothing: only the extra file is left.
        assert!(dst.join("r/extra").exists());
        std::fs::remove_file(dst.join("r/extra")).unwrap();
        let (code, _, _) = pass(launch, "dirtime", &src, &dst, &[]);
        assert_eq!(code, 0);
        assert_eq!(
            verify(launch, &src, &dst, None),
            0,
            "verify after the repair"
        );
    }
}

#[test]
fn final_from_a_verify_manifest_repairs_exactly_the_differences() {
    repair(Launch::Alone, "final");
}

#[test]
fn final_from_a_verify_manifest_repairs_under_mpirun() {
    if have("mpirun") {
        repair(Launch::Mpirun(2), "final");
    }
}

#[test]
fn copy_from_a_verify_manifest_repairs_what_a_copy_can() {
    repair(Launch::Alone, "copy");
}

/// Without a manifest, `--content` on a whole copy finds the same-size,
/// same-mtime corruption that a plain copy leaves.
#[test]
fn copy_with_content_rewrites_a_same_size_same_mtime_corruption() {
    let (_t, src, dst) = damaged(Launch::Alone);
    let (code, _, out) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        std::fs::read(dst.join("r/f2")).unwrap(),
        b"FILE 2\n",
        "plain copy: unseen"
    );
    let (code, _, out) = pass(Launch::Alone, "copy", &src, &dst, &["--content"]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(std::fs::read(dst.join("r/f2")).unwrap(), b"file 2\n");
}

/// A pass's failed records: the entries that failed are retried, nothing
/// else walked.
#[test]
fn copy_from_its_own_failed_records_retries_only_those() {
    let (t, src, dst) = src_and_dst();
    sh(&format!(
        "mkdir -p '{s}/a' && for i in $(seq 1 50); do echo $i > '{s}/a/f'$i; done && echo bad > '{s}/a/broken'",
        s = src.display()
    ));
    let m = t.path().join("copy.manifest");
    let out = launcher(Launch::Alone, &bin())
        .args([
            "--pass",
            "copy",
            "-q",
            "--error-log",
            "/dev/null",
            "--manifest",
        ])
        .arg(&m)
        .arg("--source")
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_EIO", "broken")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed: Vec<String> = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("failed"))
        .map(str::to_string)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    std::fs::write(t.path().join("failed.manifest"), failed.join("\n") + "\n").unwrap();
    let fm = t.path().join("failed.manifest");
    let (code, report, out) = pass(
        Launch::Alone,
        "copy",
        &src,
        &dst,
        &["--from-manifest", fm.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(total(&report, "scanned"), 1, "{report}");
    assert_eq!(std::fs::read(dst.join("a/broken")).unwrap(), b"bad\n");
}
