//! Issue 25, item 1: a dry run lists every action the real run takes
//! (directories at every depth, hardlinks, whole doomed subtrees), counts
//! them as the real run counts them, changes nothing, and gives
//! --max-delete's verdict and exit status.
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

/// The "would ..." lines of a dry run's stdout.
fn woulds(out: &std::process::Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("would "))
        .map(str::to_string)
        .collect()
}

/// The manifest's records as (action, path) pairs, sorted.
fn records(manifest: &Path) -> BTreeSet<(String, String)> {
    std::fs::read_to_string(manifest)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let a = f.next()?.to_string();
            let p = f.next_back()?.to_string();
            Some((a, p))
        })
        .collect()
}

fn tree(src: &Path, dst: &Path) {
    sh(&format!(
        "cd '{s}' && mkdir -p a/b/c a/empty && echo x > a/top && echo y > a/b/c/file \
         && echo h > h1 && ln h1 a/h2 && ln -s a/top link && mkdir -p '{d}'",
        s = src.display(),
        d = dst.display()
    ));
}

fn dry_then_real(launch: Launch, pass_name: &str, extra: &[&str]) {
    let (t, src, dst) = src_and_dst();
    tree(&src, &dst);
    let (dm, rm) = (
        t.path().join("dry.manifest"),
        t.path().join("real.manifest"),
    );
    fn with<'a>(m: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--manifest", m.to_str().unwrap()];
        v.extend_from_slice(extra);
        v
    }
    let mut dry_args = with(&dm, extra);
    dry_args.push("--dry-run");
    let (code, dry, out) = pass(launch, pass_name, &src, &dst, &dry_args);
    assert_eq!(code, 0, "{}", text(&out));
    assert!(
        text(&out).contains("dry run: nothing was changed"),
        "{}",
        text(&out)
    );
    assert!(
        std::fs::read_dir(&dst).unwrap().next().is_none(),
        "a dry run changed the target"
    );
    let w = woulds(&out);
    for line in [
        "would create directory: a/b",
        "would create directory: a/b/c",
        "would create directory: a/empty",
        "would copy: a/b/c/file",
    ] {
        assert!(w.contains(line), "{line} missing from {w:#?}");
    }
    assert!(w.iter().any(|l| l.starts_with("would link: ")), "{w:#?}");
    let (code, real, out) = pass(launch, pass_name, &src, &dst, &with(&rm, extra));
    assert_eq!(code, 0, "{}", text(&out));
    // The same actions, counted the same way.
    assert_eq!(records(&dm), records(&rm));
    for key in ["files", "data", "deleted"] {
        assert_eq!(
            total(&dry, key),
            total(&real, key),
            "{key}: {dry} vs {real}"
        );
    }
}

#[test]
fn a_dry_copy_lists_and_counts_what_the_copy_does() {
    dry_then_real(Launch::Alone, "copy", &[]);
}

#[test]
fn a_dry_final_lists_and_counts_what_the_final_does_under_mpirun() {
    if have("mpirun") {
        dry_then_real(Launch::Mpirun(2), "final", &[]);
    }
}

/// Doomed subtrees are counted entry by entry, as --max-delete counts
/// them: the dry run gives the real run's verdict and exit status.
#[test]
fn a_dry_delete_gives_max_deletes_verdict() {
    let (_t, src, dst) = src_and_dst();
    sh(&format!(
        "mkdir -p '{d}/gone/deep/er' && touch '{d}/gone/deep/er/f' '{d}/gone/f1' '{d}/g2' && touch '{s}/keep' '{d}/keep'",
        s = src.display(),
        d = dst.display()
    ));
    for (pass_name, cap, want) in [("delete", "3", 5), ("final", "3", 5), ("delete", "6", 0)] {
        let args = ["--max-delete", cap, "--dry-run"];
        let (dry, _, dout) = pass(Launch::Alone, pass_name, &src, &dst, &args);
        assert_eq!(dry, want, "{pass_name} cap {cap}: {}", text(&dout));
        assert!(dst.join("gone/deep/er/f").exists(), "a dry run deleted");
    }
    let (code, report, out) = pass(Launch::Alone, "delete", &src, &dst, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(total(&report, "deleted"), 6, "{report}");
    let (code, real, out) = pass(Launch::Alone, "delete", &src, &dst, &["--max-delete", "3"]);
    assert_eq!(code, 5, "{}", text(&out));
    assert_eq!(total(&real, "deleted"), 0);
    assert!(dst.join("gone").exists());
}
