//! Issue 25, item 6: excludes an admin writes — a bare name at any depth
//! (`.snapshot`), globs (`*.tmp`, `a/*/cache`), and `--exclude-from FILE` —
//! leave the same entries out of every pass, and are never deleted.
mod common;

use std::process::Command;

use common::*;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

#[test]
fn names_and_globs_are_left_out_by_copy_and_final_and_never_deleted() {
    let (t, src, dst) = src_and_dst();
    sh(&format!(
        "cd '{s}' && mkdir -p a/x/cache a/y/.snapshot/old b && echo k > keep && echo t > junk.tmp \
         && echo t > a/x/deep.tmp && echo c > a/x/cache/c && echo s > a/y/.snapshot/old/s && echo b > b/f",
        s = src.display()
    ));
    let list = t.path().join("excludes");
    std::fs::write(&list, "# site excludes\n\n*.tmp\na/*/cache\n").unwrap();
    let args = [
        "--exclude",
        ".snapshot",
        "--exclude-from",
        list.to_str().unwrap(),
    ];
    let (code, _, out) = pass(Launch::Alone, "copy", &src, &dst, &args);
    assert_eq!(code, 0, "{}", text(&out));
    for gone in ["junk.tmp", "a/x/deep.tmp", "a/x/cache", "a/y/.snapshot"] {
        assert!(!dst.join(gone).exists(), "{gone} was copied");
    }
    for kept in ["keep", "b/f", "a/y"] {
        assert!(dst.join(kept).exists(), "{kept} missing");
    }
    // On the target only, under the same patterns: a final pass keeps them.
    sh(&format!(
        "cd '{d}' && echo own > mine.tmp && mkdir -p a/x/cache && echo own > a/x/cache/own && echo x > stray",
        d = dst.display()
    ));
    let (code, report, out) = pass(Launch::Alone, "final", &src, &dst, &args);
    assert_eq!(code, 0, "{}", text(&out));
    assert!(dst.join("mine.tmp").exists() && dst.join("a/x/cache/own").exists());
    assert!(!dst.join("stray").exists(), "{report}");
}

#[test]
fn a_bad_pattern_is_one_line_and_exit_2() {
    let (_t, src, dst) = src_and_dst();
    let (code, _, out) = pass(Launch::Alone, "copy", &src, &dst, &["--exclude", "[z-a"]);
    assert_eq!(code, 2, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a glob pattern") && err.lines().count() == 1,
        "{err}"
    );
}
