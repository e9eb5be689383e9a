//! The Lustre path, tested through a test double of liblustreapi that the test
//! builds (tests/lustre_double/): it keeps layouts and MDT indices in trusted.*
//! xattrs and claims Lustre only below $LUSTRE_DOUBLE_ROOTS. lmpi loads it like
//! the real library, through $LMPI_LUSTREAPI; nothing in src/ knows about it.

mod common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use lmpi::fsops;

// The double keeps layouts and MDT indices where real Lustre shows them (as text).
const LAYOUT: &[u8] = b"trusted.lov";
const MDT: &[u8] = b"trusted.lmv";
const EOF: u64 = u64::MAX;
const DEFAULT_FILE: &str = "0,18446744073709551615,1,1048576,0,";

/// The double stores trusted.* xattrs: root only.
fn root() -> bool {
    if !is_root() {
        assert!(
            !in_ci(),
            "the Lustre double needs root (trusted.* xattrs) in CI"
        );
        eprintln!("skipped: needs root");
    }
    is_root()
}

/// The double, and empty src/ and dst/ in a temp dir; None where the double cannot run.
fn setup() -> Option<(PathBuf, tempfile::TempDir, PathBuf, PathBuf)> {
    if !have("cc") || !root() {
        return None;
    }
    let lib = build_lustre_double();
    let (tmp, src, dst) = src_and_dst();
    Some((lib, tmp, src, dst))
}

fn comp(start: u64, end: u64, count: u64, size: u64, pool: &str) -> String {
    format!("{start},{end},{count},{size},0,{pool}")
}

fn set_x(path: &Path, key: &[u8], val: &str) {
    let (parent, name) = (path.parent().unwrap(), path.file_name().unwrap());
    let d = open(parent);
    fsops::set_xattr(
        None,
        d.as_fd(),
        name.as_encoded_bytes(),
        key,
        val.as_bytes(),
    )
    .unwrap();
}

fn get_x(path: &Path, key: &[u8]) -> Option<String> {
    let (parent, name) = (path.parent().unwrap(), path.file_name().unwrap());
    let d = open(parent);
    fsops::get_xattr(None, d.as_fd(), name.as_encoded_bytes(), key)
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The layout a file has as the double reports it (its own, or the default).
fn effective(path: &Path) -> String {
    get_x(path, LAYOUT).unwrap_or_else(|| DEFAULT_FILE.to_string())
}

fn run(launch: Launch, src: &Path, dst: &Path, lib: &Path, cfg: &str, tmp: &Path) -> Output {
    run_pass("copy", launch, (src, dst), lib, cfg, tmp)
}

fn run_pass(
    pass: &str,
    launch: Launch,
    (src, dst): (&Path, &Path),
    lib: &Path,
    cfg: &str,
    tmp: &Path,
) -> Output {
    let c = tmp.join("lustre.toml");
    std::fs::write(&c, cfg).unwrap();
    let roots = format!(
        "{}:{}",
        src.canonicalize().unwrap().display(),
        dst.canonicalize().unwrap().display()
    );
    let mut cmd = launcher(launch, &bin());
    cmd.args([
        "--pass",
        pass,
        "-q",
        "--chunk-threshold",
        "1048576",
        "--chunk-size",
        "65536",
        "--error-log",
    ])
    .arg(tmp.join("errors.log"))
    .arg("--source")
    .arg(src)
    .arg("--target")
    .arg(dst)
    .arg("--config")
    .arg(&c)
    .env("LMPI_LUSTREAPI", lib)
    .env("LUSTRE_DOUBLE_ROOTS", roots)
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .env("OMPI_MCA_pml", "ob1")
    .output()
    .expect("run lmpi")
}

fn tree(src: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in 0..6 {
        let dir = src.join(format!("top{d}"));
        std::fs::create_dir_all(dir.join("deeper/deepest")).unwrap();
        let f = dir.join("striped");
        std::fs::write(&f, format!("data {d}")).unwrap();
        set_x(&f, LAYOUT, &comp(0, EOF, 4, 4 << 20, "fast"));
        files.push(f);
        let pfl = dir.join("deeper/pfl");
        std::fs::write(&pfl, vec![d as u8; 5000]).unwrap();
        let layout = [
            comp(0, 1 << 20, 1, 1 << 20, ""),
            comp(1 << 20, 64 << 20, 4, 1 << 20, "fast"),
            comp(64 << 20, EOF, 16, 4 << 20, "capacity"),
        ]
        .join(";");
        set_x(&pfl, LAYOUT, &layout);
        files.push(pfl);
        let plain = dir.join("deeper/deepest/plain");
        std::fs::write(&plain, b"default layout").unwrap();
        files.push(plain);
    }
    // A default layout on a directory, to be inherited by the target directory.
    set_x(
        &src.join("top1/deeper"),
        LAYOUT,
        &comp(0, EOF, 8, 2 << 20, "archive"),
    );
    // A big file copied in chunks by several ranks.
    let big = src.join("top2/big");
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, data).unwrap();
    set_x(&big, LAYOUT, &comp(0, EOF, 2, 131072, ""));
    files.push(big);
    files
}

/// Every file's content and layout, the directory default layout, and the
/// first-level directories alternating over MDTs 0 and 1.
fn layouts_and_mdts_follow(src: &Path, dst: &Path, files: &[PathBuf]) {
    for f in files {
        let t = dst.join(f.strip_prefix(src).unwrap());
        assert_eq!(
            std::fs::read(f).unwrap(),
            std::fs::read(&t).unwrap(),
            "{t:?} content"
        );
        assert_eq!(effective(f), effective(&t), "{t:?} layout");
    }
    assert_eq!(
        get_x(&dst.join("top1/deeper"), LAYOUT),
        get_x(&src.join("top1/deeper"), LAYOUT),
        "dir default layout"
    );
    assert_eq!(
        get_x(&dst.join("top0/deeper"), LAYOUT),
        None,
        "no default layout invented"
    );
    // First-level dirs alternate over MDT 0 and 1; deeper dirs inherit (no own index).
    let mut on = [0, 0];
    for d in 0..6 {
        let m = get_x(&dst.join(format!("top{d}")), MDT).expect("first-level dir placed on an MDT");
        on[m.parse::<usize>().unwrap()] += 1;
        assert_eq!(get_x(&dst.join(format!("top{d}/deeper")), MDT), None);
    }
    assert_eq!(on, [3, 3], "round-robin over [0, 1]");
}

/// The downtime pass places and lays out what it creates as the copy does.
#[test]
fn the_final_pass_keeps_layouts_and_mdt_placement() {
    if !have("mpirun") || !have("cc") || !root() {
        return;
    }
    let lib = build_lustre_double();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    let files = tree(&src);
    std::fs::write(dst.join("only-on-target"), b"gone").unwrap();
    let cfg = "require_mountpoints = false\n[lustre]\nmode = \"require\"\nmdts = [0, 1]\n";
    let out = run_pass(
        "final",
        Launch::Mpirun(3),
        (&src, &dst),
        &lib,
        cfg,
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    layouts_and_mdts_follow(&src, &dst, &files);
    assert!(!dst.join("only-on-target").exists());
}

#[test]
fn layouts_follow_the_source_and_first_level_dirs_alternate_over_mdts() {
    if !have("mpirun") || !have("cc") || !root() {
        return;
    }
    let lib = build_lustre_double();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&dst).unwrap();
    let files = tree(&src);
    let out = run(
        Launch::Mpirun(3),
        &src,
        &dst,
        &lib,
        "[lustre]\nmode = \"require\"\nmdts = [0, 1]\n",
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    layouts_and_mdts_follow(&src, &dst, &files);
    // A second pass finds everything up to date and moves no directory.
    let out = run(
        Launch::Mpirun(2),
        &src,
        &dst,
        &lib,
        "[lustre]\nmode = \"require\"\nmdts = [1, 0]\n",
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let again: usize = (0..6)
        .filter(|d| get_x(&dst.join(format!("top{d}")), MDT).is_some())
        .count();
    assert_eq!(again, 6);
}

#[test]
fn old_wide_striping_rule() {
    let Some((lib, tmp, src, dst)) = setup() else {
        return;
    };
    std::fs::write(src.join("wide"), b"w").unwrap();
    set_x(&src.join("wide"), LAYOUT, &comp(0, EOF, 32, 1 << 20, ""));
    std::fs::write(src.join("narrow"), b"n").unwrap();
    set_x(&src.join("narrow"), LAYOUT, &comp(0, EOF, 8, 1 << 20, ""));
    let out = run(
        Launch::Alone,
        &src,
        &dst,
        &lib,
        "[lustre]\nmode = \"require\"\nwide_striping_rule = true\n",
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let wide = lustre_sys::LLAPI_LAYOUT_WIDE;
    assert_eq!(
        effective(&dst.join("wide")),
        comp(0, EOF, wide, 1 << 20, "")
    );
    assert_eq!(effective(&dst.join("narrow")), comp(0, EOF, 8, 1 << 20, ""));
}

/// A layout that cannot be read is that file's error; the file is still
/// copied (with the default layout) and so is everything else.
#[test]
fn a_damaged_layout_is_one_files_error() {
    let Some((lib, tmp, src, dst)) = setup() else {
        return;
    };
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/bad"), b"b").unwrap();
    set_x(&src.join("sub/bad"), LAYOUT, "not a layout");
    let big: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("sub/bad-big"), &big).unwrap();
    set_x(&src.join("sub/bad-big"), LAYOUT, "garbage");
    std::fs::write(src.join("sub/good"), b"g").unwrap();
    set_x(
        &src.join("sub/good"),
        LAYOUT,
        &comp(0, EOF, 4, 1 << 20, "fast"),
    );
    let copy = || {
        run(
            Launch::Alone,
            &src,
            &dst,
            &lib,
            "[lustre]\nmode = \"require\"\n",
            tmp.path(),
        )
    };
    let out = copy();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for name in ["sub/bad", "sub/bad-big"] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("src/{name}:")))
            .unwrap_or_else(|| panic!("no error line for {name}: {err}"));
        assert!(line.contains("layout"), "{line}");
    }
    assert_eq!(std::fs::read(dst.join("sub/bad")).unwrap(), b"b");
    assert_eq!(std::fs::read(dst.join("sub/bad-big")).unwrap(), big);
    assert_eq!(
        effective(&dst.join("sub/good")),
        comp(0, EOF, 4, 1 << 20, "fast")
    );
    // The data is there: the next pass has nothing to redo.
    let out = copy();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn missing_library_auto_copies_plainly_require_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(src.join("a/f"), b"x").unwrap();
    let missing = tmp.path().join("no/liblustreapi.so.1");
    let out = run(
        Launch::Alone,
        &src,
        &dst,
        &missing,
        "[lustre]\nmode = \"require\"\n",
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("require") && err.contains("liblustreapi"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dst).unwrap().count(),
        0,
        "nothing copied"
    );
    let out = run(
        Launch::Alone,
        &src,
        &dst,
        &missing,
        "[lustre]\nmode = \"auto\"\n",
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("warning: Lustre features off").count(),
        1,
        "{err}"
    );
    assert_eq!(std::fs::read(dst.join("a/f")).unwrap(), b"x");
    assert_eq!(get_x(&dst.join("a/f"), LAYOUT), None);
}

#[test]
fn roots_not_on_lustre() {
    if !have("cc") {
        return;
    }
    let lib = build_lustre_double();
    let (tmp, src, dst) = src_and_dst();
    std::fs::write(src.join("f"), b"x").unwrap();
    let c = tmp.path().join("c.toml");
    let copy = |cfg: &str, lib: Option<&Path>| {
        std::fs::write(&c, cfg).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["--pass", "copy", "-q", "--source"])
            .arg(&src)
            .arg("--target")
            .arg(&dst)
            .arg("--config")
            .arg(&c)
            .arg("--error-log")
            .arg(tmp.path().join("e.log"))
            // The double claims nothing here.
            .env("LUSTRE_DOUBLE_ROOTS", "/nonexistent");
        match lib {
            Some(l) => cmd.env("LMPI_LUSTREAPI", l),
            None => cmd.env_remove("LMPI_LUSTREAPI"),
        };
        cmd.output().unwrap()
    };
    let out = copy("[lustre]\nmode = \"require\"\n", Some(&lib));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("source is not on Lustre"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);

    // auto on plain trees with no library asked for: a plain copy, no warning.
    let out = copy("[lustre]\nmode = \"auto\"\n", None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"x");
}

/// Verify compares files' layouts when both trees are on Lustre: a
/// converged tree passes (its root's default layout, which the copy never
/// sets on an existing directory, is not compared); two files whose layouts
/// differ are one line each, naming the path, and the exit status says so.
#[test]
fn verify_compares_layouts() {
    let Some((lib, tmp, src, dst)) = setup() else {
        return;
    };
    tree(&src);
    // A wide file under the old wide-striping rule, and a default layout on
    // the source root (the target root exists, so it never gets one).
    std::fs::write(src.join("wide"), b"w").unwrap();
    set_x(&src.join("wide"), LAYOUT, &comp(0, EOF, 32, 1 << 20, ""));
    set_x(&src, LAYOUT, &comp(0, EOF, 8, 2 << 20, "archive"));
    let cfg = "require_mountpoints = false\n[lustre]\nmode = \"require\"\nmdts = [0, 1]\nwide_striping_rule = true\n";
    let out = run_pass("final", Launch::Alone, (&src, &dst), &lib, cfg, tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let launch = if have("mpirun") {
        Launch::Mpirun(2)
    } else {
        Launch::Alone
    };
    let out = run_pass("verify", launch, (&src, &dst), &lib, cfg, tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    set_x(
        &dst.join("top0/striped"),
        LAYOUT,
        &comp(0, EOF, 2, 4 << 20, "fast"),
    );
    set_x(
        &dst.join("top1/deeper/pfl"),
        LAYOUT,
        &comp(0, EOF, 4, 2 << 20, "archive"),
    );
    let _ = std::fs::remove_file(tmp.path().join("errors.log"));
    let out = run_pass("verify", Launch::Alone, (&src, &dst), &lib, cfg, tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = std::fs::read_to_string(tmp.path().join("errors.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("layout")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines.iter().any(|l| l.contains("top0/striped")
            && l.contains("4x4194304 pattern 0 pool fast vs 0-eof 2x4194304")),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.contains("top1/deeper/pfl")), "{log}");
}

/// An error that drops no name (an unreadable layout) leaves verify's
/// per-group hardlink counts checked: a group joined with another on the
/// target is still found beside the error.
#[test]
fn an_unreadable_layout_leaves_hardlink_counts_checked() {
    let Some((lib, tmp, src, dst)) = setup() else {
        return;
    };
    for n in ["a1", "b1", "z"] {
        std::fs::write(src.join(n), b"same").unwrap();
    }
    std::fs::hard_link(src.join("a1"), src.join("a2")).unwrap();
    std::fs::hard_link(src.join("b1"), src.join("b2")).unwrap();
    let cfg = "require_mountpoints = false\n[lustre]\nmode = \"require\"\n";
    for p in ["copy", "dirtime"] {
        let out = run_pass(p, Launch::Alone, (&src, &dst), &lib, cfg, tmp.path());
        assert_eq!(out.status.code(), Some(0), "{p}: {}", text(&out));
    }
    for n in ["b1", "b2"] {
        std::fs::remove_file(dst.join(n)).unwrap();
        std::fs::hard_link(dst.join("a1"), dst.join(n)).unwrap();
    }
    set_x(&src.join("z"), LAYOUT, "garbage");
    let out = run_pass(
        "dirtime",
        Launch::Alone,
        (&src, &dst),
        &lib,
        cfg,
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let _ = std::fs::remove_file(tmp.path().join("errors.log"));
    let out = run_pass("verify", Launch::Alone, (&src, &dst), &lib, cfg, tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = std::fs::read_to_string(tmp.path().join("errors.log")).unwrap();
    assert!(log.contains("/z: llapi_layout_get_by_fd"), "{log}");
    assert!(
        log.contains("hard links: 2 names of this file in the source tree, 4 on the target"),
        "{log}"
    );
    assert!(!text(&out).contains("not checked"), "{}", text(&out));
}
