//! `--pass verify`: read-only proof that the target holds the source. It
//! finds each kind of difference, finds nothing on a converged tree, and
//! never writes to either side.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

/// The odd tree plus a file of several chunks, copied and given its
/// directory times: a converged pair.
fn converged_pair(src: &Path, dst: &Path) {
    build_odd_tree(src, false);
    sh(&format!(
        "cd {} && head -c 3000000 /dev/urandom > big && echo small > small \
         && setfattr -n user.k -v 1 small && mkdir -p d/e && echo x > d/e/x \
         && echo same > ga1 && ln ga1 ga2 && echo same > gb1 && ln gb1 gb2 && touch -r ga1 gb1",
        src.display()
    ));
    for p in ["copy", "dirtime"] {
        let (code, _, o) = pass(Launch::Alone, p, src, dst, &[]);
        assert_eq!(code, 0, "{p}: {}", text(&o));
    }
}

/// Small chunks, so the big file is split over the ranks.
const CONTENT: &[&str] = &[
    "--content",
    "--chunk-threshold",
    "1048576",
    "--chunk-size",
    "1048576",
];

/// The exit status and everything said (each difference is a line on
/// stderr as well as in the error log).
fn verify(launch: Launch, src: &Path, dst: &Path, extra: &[&str]) -> (i32, String) {
    let (code, _, o) = pass(launch, "verify", src, dst, extra);
    (code, text(&o))
}

/// Every file's bytes and every entry's metadata, to prove nothing changed.
fn fingerprint(root: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . -printf '%p %y %m %U %G %s %T@ %n\\n' | sort && find . -type f -exec md5sum {{}} + | sort",
            root.display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_converged_tree_verifies_clean_under_every_launcher_and_nothing_is_written() {
    if !have("setfattr") {
        return;
    }
    let mut launches = vec![Launch::Alone];
    if have("mpirun") {
        launches.extend([Launch::Mpirun(1), Launch::Mpirun(2), Launch::Mpirun(4)]);
    }
    let (_t, src, dst) = src_and_dst();
    converged_pair(&src, &dst);
    let before = (fingerprint(&src), fingerprint(&dst));
    for launch in launches {
        let (code, log) = verify(launch, &src, &dst, CONTENT);
        assert_eq!(code, 0, "{launch:?}: {log}");
        let (code, log) = verify(launch, &src, &dst, &[]);
        assert_eq!(code, 0, "{launch:?} without content: {log}");
    }
    assert_eq!(
        before,
        (fingerprint(&src), fingerprint(&dst)),
        "verify wrote"
    );
}

/// Each difference: how to make it on the target, and what the line says.
const CASES: &[(&str, &str, &str)] = &[
    (
        "one changed byte, same size and mtime",
        "printf 'X' | dd of=big bs=1 seek=2500000 conv=notrunc 2>/dev/null && touch -r {S}/big big",
        "big: differs: content at byte 2500000",
    ),
    (
        "a changed xattr",
        "setfattr -n user.k -v 2 small",
        "small: differs: xattr user.k",
    ),
    (
        "a missing hardlink",
        "rm linked.2 && cp -p linked linked.2 && touch -r {S} .",
        "differs: hard link group: linked to",
    ),
    (
        "hardlinks regrouped: the same link counts, other groups",
        "rm ga2 gb1 && ln ga1 gb1 && ln gb2 ga2 && touch -r {S} .",
        "differs: hard link group: linked to",
    ),
    (
        "an extra target entry",
        "touch extra && touch -r {S} .",
        "extra: only on the target",
    ),
    (
        "a missing target entry",
        "rm d/e/x && touch -r {S}/d/e d/e",
        "d/e/x: missing on the target",
    ),
    (
        "a wrong directory mtime",
        "touch -d 2001-01-01 d/e",
        "d/e: differs: mtime",
    ),
    ("a wrong mode", "chmod 600 small", "small: differs: mode"),
    (
        "a type change",
        "rm small && mkdir small && touch -r {S} .",
        "small: differs: type file vs dir",
    ),
];

#[test]
fn verify_finds_each_kind_of_difference_alone_and_under_mpirun() {
    if !have("setfattr") {
        return;
    }
    let launch = if have("mpirun") {
        Launch::Mpirun(2)
    } else {
        Launch::Alone
    };
    for (what, change, said) in CASES {
        let (_t, src, dst) = src_and_dst();
        converged_pair(&src, &dst);
        let change = change.replace("{S}", src.to_str().unwrap());
        sh(&format!("cd {} && {change}", dst.display()));
        for l in [Launch::Alone, launch] {
            let (code, log) = verify(l, &src, &dst, CONTENT);
            assert_eq!(code, 1, "{what} ({l:?}): {log}");
            assert!(
                log.contains(said),
                "{what} ({l:?}): wanted {said:?} in:\n{log}"
            );
        }
    }
}

/// A source file may have names outside the tree (the migration of one
/// project's directory): its copy cannot, so that is no difference; but two
/// such files joined into one on the target are.
#[test]
fn hardlinks_with_names_outside_the_tree() {
    let launch = if have("mpirun") {
        Launch::Mpirun(2)
    } else {
        Launch::Alone
    };
    let (t, src, dst) = src_and_dst();
    let out = t.path().display();
    sh(&format!(
        "cd {} && echo a > a && ln a {out}/a.outside && echo b > b && ln b {out}/b.outside \
         && echo c > c && ln c c.2 && ln c {out}/c.outside && touch -r a b",
        src.display()
    ));
    for p in ["copy", "dirtime"] {
        let (code, _, o) = pass(Launch::Alone, p, &src, &dst, &[]);
        assert_eq!(code, 0, "{p}: {}", text(&o));
    }
    for l in [Launch::Alone, launch] {
        let (code, log) = verify(l, &src, &dst, &[]);
        assert_eq!(code, 0, "names outside the tree ({l:?}): {log}");
    }
    sh(&format!(
        "cd {} && rm b && ln a b && touch -r {} .",
        dst.display(),
        src.display()
    ));
    for l in [Launch::Alone, launch] {
        let (code, log) = verify(l, &src, &dst, &[]);
        assert_eq!(code, 1, "joined ({l:?}): {log}");
        assert!(
            log.contains(
                "differs: hard links: 1 names of this file in the source tree, 2 on the target"
            ),
            "joined ({l:?}): {log}"
        );
    }
}

#[test]
fn content_is_read_only_when_asked_and_sampling_is_deterministic() {
    let (_t, src, dst) = src_and_dst();
    converged_pair(&src, &dst);
    let big = dst.join("big");
    sh(&format!(
        "printf 'X' | dd of={0} bs=1 seek=10 conv=notrunc 2>/dev/null && touch -r {1}/big {0}",
        big.display(),
        src.display()
    ));
    let (code, log) = verify(Launch::Alone, &src, &dst, &[]);
    assert_eq!(code, 0, "metadata alone cannot see it: {log}");
    let (code, _) = verify(Launch::Alone, &src, &dst, &["--content", "--sample", "0"]);
    assert_eq!(code, 0, "a sample of nothing reads nothing");
    let runs: Vec<i32> = (0..3)
        .map(|_| verify(Launch::Alone, &src, &dst, &["--content", "--sample", "0.5"]).0)
        .collect();
    assert!(runs.windows(2).all(|w| w[0] == w[1]), "{runs:?}");
    let (code, log) = verify(Launch::Alone, &src, &dst, &["--content"]);
    assert_eq!(code, 1, "{log}");
    let (code, log) = verify(Launch::Alone, &src, &dst, &["--sample", "1.5"]);
    assert_eq!(code, 2, "{log}");
}

#[test]
fn from_manifest_checks_only_the_named_entries_content_included() {
    if !have("setfattr") {
        return;
    }
    let (t, src, dst) = src_and_dst();
    converged_pair(&src, &dst);
    sh(&format!(
        "cd {} && echo changed > small && echo new > newfile && rm d/e/x",
        src.display()
    ));
    let m = t.path().join("final.manifest");
    let ms = m.to_str().unwrap();
    let (code, _, o) = pass(Launch::Alone, "final", &src, &dst, &["--manifest", ms]);
    assert_eq!(code, 0, "{}", text(&o));
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        if matches!(launch, Launch::Mpirun(_)) && !have("mpirun") {
            continue;
        }
        let args = ["--content", "--from-manifest", ms];
        let (code, r, o) = pass(launch, "verify", &src, &dst, &args);
        assert_eq!(code, 0, "{launch:?}: {}", text(&o));
        // Only the two written files were read, on both sides; not the
        // 3 MB file nor the rest of the tree.
        let want = 2 * ("changed\n".len() + "new\n".len()) as u64;
        assert_eq!(total(&r, "data"), want, "{launch:?}: {r}");
        assert_eq!(total(&r, "dirs"), 0, "no walk: {r}");
    }
    // A change to a named file is found; one to an unnamed file is not read.
    sh(&format!(
        "cd {0} && printf X | dd of=newfile bs=1 seek=0 conv=notrunc 2>/dev/null \
         && touch -r {1}/newfile newfile && touch -r {1} . && echo y >> dir/plain.txt",
        dst.display(),
        src.display()
    ));
    let (code, _, o) = pass(
        Launch::Alone,
        "verify",
        &src,
        &dst,
        &["--content", "--from-manifest", ms],
    );
    assert_eq!(code, 1, "{}", text(&o));
    let said = text(&o);
    assert!(
        said.contains("newfile: differs: content at byte 0"),
        "{said}"
    );
    assert!(!said.contains("plain.txt"), "{said}");
}
