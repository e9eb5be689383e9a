//! `--pass final`: copy, delete and dirtime in one walk. It must leave the
//! same tree the three passes leave, with the delete pass's safety.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::*;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

/// Changes of every kind: content, new and removed files and trees, and
/// type changes file <-> dir <-> symlink.
fn churn(src: &Path) {
    sh(&format!(
        "cd {} && echo more >> dir/plain.txt && rm -f dir/empty medium.bin && mkdir -p newdir/deeper \
         && echo n > newdir/deeper/f && ln -s dir/plain.txt sym2 && rm linked.2 \
         && rm was_file_now_dir && mkdir was_file_now_dir && echo in > was_file_now_dir/x \
         && rm -rf d1 && echo now-a-file > d1 && rm good-link && mkdir good-link",
        src.display()
    ));
}

fn prepare_pair(src: &Path, dst: &Path) {
    build_odd_tree(src, false);
    sh(&format!(
        "cd {0} && echo f > was_file_now_dir && mkdir -p d1/sub && echo s > d1/sub/s",
        src.display()
    ));
    let (code, _, o) = pass(Launch::Alone, "copy", src, dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
}

#[test]
fn final_pass_converges_in_one_walk_under_every_launcher() {
    let mut launches = vec![Launch::Alone];
    if have("mpirun") {
        launches.extend([Launch::Mpirun(1), Launch::Mpirun(2), Launch::Mpirun(4)]);
    }
    for launch in launches {
        let (_t, src, dst) = src_and_dst();
        prepare_pair(&src, &dst);
        churn(&src);
        let (code, r, o) = pass(launch, "final", &src, &dst, &[]);
        assert_eq!(code, 0, "{launch:?}: {}", text(&o));
        assert!(total(&r, "deleted") > 0, "{r}");
        let diffs = compare_trees(&src, &dst, true);
        assert!(diffs.is_empty(), "{launch:?}: {diffs:?}");
        // Converged: nothing more to do.
        let (code, r, o) = pass(launch, "final", &src, &dst, &[]);
        assert_eq!(code, 0, "{}", text(&o));
        for key in ["files", "deleted", "dirtimes", "meta"] {
            assert_eq!(total(&r, key), 0, "{launch:?} {key}: {r}");
        }
        // Last: rsync reads the directories, which moves their atimes.
        if have("rsync") {
            assert_eq!(rsync_diff(&src, &dst), "", "{launch:?}");
        }
    }
}

#[test]
fn final_pass_from_empty_target_is_a_full_copy() {
    let (_t, src, dst) = src_and_dst();
    build_odd_tree(&src, true);
    let (code, _, o) = pass(Launch::Alone, "final", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{diffs:?}");
}

fn lmpi_env(args: &[&OsStr], env: &[(&str, &OsStr)]) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Only ENOENT deletes: EIO on a source name (or directory) keeps the
/// target entry and its subtree, as in the delete pass.
#[test]
fn final_pass_deletes_only_on_enoent() {
    let shim = shim();
    let (t, src, dst) = src_and_dst();
    let elog = t.path().join("errors");
    sh(&format!(
        "cd {0} && echo k > keep && mkdir eio-dir && echo a > eio-dir/a && \
         cd {1} && echo k > keep && mkdir -p eio-subtree/inner eio-dir && echo p > eio-subtree/inner/f \
         && echo p > eio-file && echo x > really-gone && echo p > eio-dir/only-on-target",
        src.display(),
        dst.display()
    ));
    let args: Vec<&OsStr> = vec![
        OsStr::new("--pass"),
        OsStr::new("final"),
        OsStr::new("--source"),
        src.as_os_str(),
        OsStr::new("--target"),
        dst.as_os_str(),
        OsStr::new("--error-log"),
        elog.as_os_str(),
        OsStr::new("-q"),
    ];
    let out = lmpi_env(
        &args,
        &[
            ("LD_PRELOAD", shim.as_os_str()),
            ("LMPI_FAULT_EIO", OsStr::new("eio-")),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(dst.join("eio-subtree/inner/f").exists());
    assert!(dst.join("eio-file").exists());
    assert!(
        dst.join("eio-dir/only-on-target").exists(),
        "unreadable source dir"
    );
    assert!(!dst.join("really-gone").exists(), "ENOENT still deletes");
    let out = lmpi_env(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!dst.join("eio-subtree").exists() && !dst.join("eio-file").exists());
    assert!(!dst.join("eio-dir/only-on-target").exists());
    assert!(compare_trees(&src, &dst, true).is_empty());
}

/// The delete pass's guards hold: an empty source is refused, a dry run
/// changes nothing, excludes protect, --max-delete caps.
#[test]
fn final_pass_keeps_the_delete_guards() {
    let (_t, src, dst) = src_and_dst();
    sh(&format!(
        "cd {} && mkdir keepme && echo k > keepme/k && echo x > gone",
        dst.display()
    ));
    let (code, _, o) = pass(Launch::Alone, "final", &src, &dst, &[]);
    assert_eq!(code, 3, "empty source refused: {}", text(&o));
    assert!(dst.join("gone").exists());

    sh(&format!("echo s > {}/s", src.display()));
    let (code, _, o) = pass(Launch::Alone, "final", &src, &dst, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(
        dst.join("gone").exists() && !dst.join("s").exists(),
        "dry run changed"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("would delete"));

    let (code, _, o) = pass(Launch::Alone, "final", &src, &dst, &["--exclude", "keepme"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(dst.join("keepme/k").exists(), "excluded: kept");
    assert!(!dst.join("gone").exists() && dst.join("s").exists());
}
