//! The three passes, run as the real binary on real trees, alone and under mpirun.

mod common;

use std::os::fd::AsFd;
use std::path::Path;

use common::*;
use lmpi::fsops;

fn full_migration(launch: Launch, src: &Path, dst: &Path) {
    let (code, rep, out) = pass(
        launch,
        "copy",
        src,
        dst,
        &["--chunk-threshold", "1048576", "--chunk-size", "262144"],
    );
    assert_eq!(code, 0, "copy {launch:?}: {}", text(&out));
    assert_eq!(total(&rep, "errors"), 0);
    let (code, _, out) = pass(launch, "delete", src, dst, &[]);
    assert_eq!(code, 0, "delete {launch:?}: {}", text(&out));
    let (code, _, out) = pass(launch, "dirtime", src, dst, &[]);
    assert_eq!(code, 0, "dirtime {launch:?}: {}", text(&out));
}

#[test]
fn odd_tree_under_every_launcher() {
    let mut launches = vec![Launch::Alone];
    if have("mpirun") {
        launches.extend([Launch::Mpirun(1), Launch::Mpirun(2), Launch::Mpirun(4)]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_odd_tree(&src, true);
    for launch in launches {
        let dst = tmp
            .path()
            .join(format!("dst-{launch:?}").replace(['(', ')'], ""));
        std::fs::create_dir(&dst).unwrap();
        full_migration(launch, &src, &dst);
        let diffs = compare_trees(&src, &dst, true);
        assert!(
            diffs.is_empty(),
            "{launch:?}: trees differ:\n{}",
            diffs.join("\n")
        );
        // Unchanged source: a second copy copies nothing.
        let (code, rep, out) = pass(launch, "copy", &src, &dst, &[]);
        assert_eq!(code, 0, "{}", text(&out));
        assert_eq!(total(&rep, "files"), 0, "second copy copied files: {rep}");
        assert_eq!(total(&rep, "data"), 0);
        assert_eq!(total(&rep, "meta"), 0, "second copy fixed metadata: {rep}");
    }
}

#[test]
fn rsync_sees_no_difference() {
    if !have("rsync") {
        return;
    }
    let (_tmp, src, dst) = src_and_dst();
    // No over-long path here: rsync itself cannot walk beyond PATH_MAX.
    build_odd_tree(&src, false);
    let launch = if have("mpirun") {
        Launch::Mpirun(2)
    } else {
        Launch::Alone
    };
    full_migration(launch, &src, &dst);
    assert_eq!(rsync_diff(&src, &dst), "");
}

#[test]
fn changes_on_the_source_converge() {
    let (_tmp, src, dst) = src_and_dst();
    build_odd_tree(&src, false);
    let launch = if have("mpirun") {
        Launch::Mpirun(3)
    } else {
        Launch::Alone
    };
    full_migration(launch, &src, &dst);

    let s = open(&src);
    let d = s.as_fd();
    let sub = fsops::open_dir_at(d, b"dir").unwrap();
    write_at(d, b"added", b"new file");
    std::fs::write(src.join("medium.bin"), b"rewritten with other content").unwrap();
    set_mtime(d, b"nanos", 1_700_000_000, 1);
    fsops::pin_at(d, b"setuid", None)
        .unwrap()
        .chmod(0o700)
        .unwrap();
    fsops::unlink_at(sub.as_fd(), b"plain.txt").unwrap();
    fsops::unlink_at(d, b"linked.2").unwrap();
    // A directory replaced by a file, and a file by a directory.
    fsops::unlink_at(fsops::open_dir_at(d, b"ro").unwrap().as_fd(), b"inside").ok();
    fsops::pin_at(d, b"ro", None).unwrap().chmod(0o755).unwrap();
    fsops::rmdir_at(d, b"ro").unwrap();
    write_at(d, b"ro", b"now a file");
    fsops::unlink_at(d, b"old").unwrap();
    fsops::mkdir_at(d, b"old", 0o750).unwrap();
    write_at(
        fsops::open_dir_at(d, b"old").unwrap().as_fd(),
        b"child",
        b"c",
    );
    for i in 0..100 {
        fsops::unlink_at(
            fsops::open_dir_at(d, b"wide").unwrap().as_fd(),
            format!("f{i:05}").as_bytes(),
        )
        .unwrap();
    }
    full_migration(launch, &src, &dst);
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
    if have("rsync") {
        assert_eq!(rsync_diff(&src, &dst), "");
    }
}

#[test]
fn delete_refuses_empty_or_missing_source() {
    let (tmp, src, dst) = src_and_dst();
    std::fs::write(dst.join("precious"), b"keep me").unwrap();

    // Empty source root (an unmounted filesystem looks like this): refused.
    let (code, _, out) = pass(Launch::Alone, "delete", &src, &dst, &[]);
    assert_eq!(code, 3, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty"),
        "{}",
        text(&out)
    );
    assert!(dst.join("precious").exists());

    // Missing source root: a usage error, nothing touched.
    let (code, _, out) = pass(Launch::Alone, "delete", &tmp.path().join("nope"), &dst, &[]);
    assert_eq!(code, 2, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("nope"), "names the path: {err}");
    assert!(dst.join("precious").exists());

    // Dry run lists but keeps.
    let (code, _, out) = pass(
        Launch::Alone,
        "delete",
        &src,
        &dst,
        &["--allow-empty-source", "--dry-run"],
    );
    assert_eq!(code, 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("would delete: precious"));
    assert!(dst.join("precious").exists());

    // Explicit override deletes.
    let (code, rep, out) = pass(
        Launch::Alone,
        "delete",
        &src,
        &dst,
        &["--allow-empty-source"],
    );
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(total(&rep, "deleted"), 1);
    assert!(!dst.join("precious").exists());
}

#[test]
fn delete_removes_big_subtrees_in_parallel_and_honours_max_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(src.join("keep")).unwrap();
    std::fs::write(src.join("keep/k"), b"k").unwrap();
    std::fs::create_dir_all(dst.join("keep")).unwrap();
    std::fs::write(dst.join("keep/k"), b"k").unwrap();
    for a in 0..5 {
        for b in 0..5 {
            let p = dst.join(format!("gone/a{a}/b{b}"));
            std::fs::create_dir_all(&p).unwrap();
            for f in 0..20 {
                std::fs::write(p.join(format!("f{f}")), b"x").unwrap();
            }
        }
    }
    std::fs::write(dst.join("stray"), b"s").unwrap();
    let launch = if have("mpirun") {
        Launch::Mpirun(3)
    } else {
        Launch::Alone
    };

    let (code, rep, out) = pass(launch, "delete", &src, &dst, &["--max-delete", "10"]);
    assert_eq!(code, 5, "{}", text(&out));
    assert!(total(&rep, "deleted") <= 10, "{rep}");

    let (code, rep, out) = pass(launch, "delete", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    assert!(total(&rep, "deleted") > 0);
    assert!(!dst.join("gone").exists());
    assert!(!dst.join("stray").exists());
    assert!(dst.join("keep/k").exists());
}

#[test]
fn filters_skip_and_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(src.join("excluded/deeper")).unwrap();
    std::fs::create_dir_all(src.join("kept")).unwrap();
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(src.join("excluded/deeper/x"), b"x").unwrap();
    std::fs::write(src.join("kept/fresh"), b"new").unwrap();
    std::fs::write(src.join("kept/stale"), b"old").unwrap();
    std::fs::write(src.join("kept/ok"), b"ok").unwrap();
    let s = open(&src.join("kept"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // atime far in the past: skipped by oldest_date.
    fsops::utimes_at(
        s.as_fd(),
        b"stale",
        fsops::Time {
            sec: now - 400 * 86400,
            nsec: 0,
        },
        fsops::Time {
            sec: now - 400 * 86400,
            nsec: 0,
        },
    )
    .unwrap();
    fsops::utimes_at(
        s.as_fd(),
        b"ok",
        fsops::Time {
            sec: now - 10 * 86400,
            nsec: 0,
        },
        fsops::Time {
            sec: now - 10 * 86400,
            nsec: 0,
        },
    )
    .unwrap();
    // "fresh" keeps mtime = now: skipped by newest_date (1 day).
    let cfg = tmp.path().join("lmpi.toml");
    std::fs::write(
        &cfg,
        format!(
            "oldest_date = {}\nnewest_date = 86400\nexclude = [\"excluded\"]\n",
            365 * 86400
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let (code, rep, out) = pass(Launch::Alone, "copy", &src, &dst, &["--config", cfg_s]);
    assert_eq!(code, 0, "{}", text(&out));
    assert!(dst.join("kept/ok").exists());
    assert!(!dst.join("kept/stale").exists());
    assert!(!dst.join("kept/fresh").exists());
    assert!(!dst.join("excluded").exists());
    assert_eq!(total(&rep, "skipped"), 3, "{rep}");
}

#[test]
fn bad_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(src.join("inner")).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let one_line = |out: &std::process::Output, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", text(out));
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
    };
    let (_, _, out) = pass(
        Launch::Alone,
        "copy",
        &src,
        &tmp.path().join("missing"),
        &[],
    );
    one_line(&out, "missing");
    let (_, _, out) = pass(Launch::Alone, "copy", &src, &src, &[]);
    one_line(&out, "same directory");
    let (_, _, out) = pass(Launch::Alone, "copy", &src, &src.join("inner"), &[]);
    one_line(&out, "nested");
    let cfg = tmp.path().join("bad.toml");
    let with_config = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        pass(
            Launch::Alone,
            "copy",
            &src,
            &dst,
            &["--config", cfg.to_str().unwrap()],
        )
        .2
    };
    let out = with_config("threads_per_rank = 8\nbogus_key = 1\n");
    one_line(&out, "bogus_key");
    one_line(&out, "bad.toml");
    let out = with_config("threads_per_rank = 0\n");
    one_line(&out, "threads_per_rank");
    let (_, _, out) = pass(Launch::Alone, "copy", &src, &dst, &["--threads", "0"]);
    one_line(&out, "threads_per_rank");
    // An absolute exclude outside the source would silently match nothing.
    let (_, _, out) = pass(
        Launch::Alone,
        "copy",
        &src,
        &dst,
        &["--exclude", "/old/mount/scratch"],
    );
    one_line(
        &out,
        "exclude /old/mount/scratch: not under the source root",
    );
    let out = with_config("exclude_file = \"/no/such/exceptions\"\n");
    one_line(&out, "key `exclude_file`: /no/such/exceptions: cannot read");
    // Absolute under the source root (as the old exceptions file had them) is fine.
    let inner = src.join("inner");
    let (code, _, out) = pass(
        Launch::Alone,
        "copy",
        &src,
        &dst,
        &["--exclude", inner.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{}", text(&out));
    assert!(!dst.join("inner").exists());
    std::fs::remove_dir(&dst).unwrap();
    std::fs::create_dir(&dst).unwrap();
    // srun without an MPI plugin would start N independent copies: refused.
    let out = std::process::Command::new(bin())
        .args(["--pass", "copy", "--source"])
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .env("SLURM_STEP_ID", "0")
        .env("SLURM_STEP_NUM_TASKS", "4")
        .output()
        .unwrap();
    one_line(&out, "--mpi=pmix");
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
}

#[test]
fn dirtime_reports_missing_target_dir_without_creating_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let (code, rep, out) = pass(Launch::Alone, "dirtime", &src, &dst, &[]);
    assert_eq!(code, 1, "{}", text(&out));
    assert!(total(&rep, "errors") >= 1);
    assert!(!dst.join("a").exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing on the target"));
}

#[test]
fn help_documents_options() {
    let out = lmpi(Launch::Alone, &[std::ffi::OsStr::new("--help")]);
    let h = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--pass",
        "--config",
        "--source",
        "--target",
        "--dry-run",
        "--threads",
        "--max-delete",
        "--allow-empty-source",
        "Exit status",
    ] {
        assert!(h.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn comparer_sees_differences() {
    // The checks above are only as good as the comparer: make sure it notices.
    let (_tmp, src, dst) = src_and_dst();
    build_odd_tree(&src, false);
    full_migration(Launch::Alone, &src, &dst);
    assert!(compare_trees(&src, &dst, true).is_empty());
    let d = open(&dst);
    set_mtime(d.as_fd(), b"nanos", 1_600_000_000, 999_999_998);
    fsops::pin_at(d.as_fd(), b"setuid", None)
        .unwrap()
        .chmod(0o755)
        .unwrap();
    let sub = fsops::open_dir_at(d.as_fd(), b"dir").unwrap();
    let f = fsops::open_read_at(sub.as_fd(), b"plain.txt").unwrap();
    fsops::remove_xattr(Some(f.as_fd()), f.as_fd(), b"", b"user.note").unwrap();
    fsops::unlink_at(d.as_fd(), b"linked.2").unwrap();
    write_at(d.as_fd(), b"linked.2", b"one inode, three names");
    let diffs = compare_trees(&src, &dst, true).join("\n");
    for needle in [
        "nanos: mtime",
        "setuid: mode",
        "plain.txt: xattrs",
        "hardlink groups",
    ] {
        assert!(diffs.contains(needle), "{needle} not noticed in:\n{diffs}");
    }
}

#[test]
fn check_xattrs_fixes_xattr_and_acl_changes_without_copying() {
    let (_tmp, src, dst) = src_and_dst();
    let s = open(&src);
    for name in [&b"a"[..], b"b", b"c", b"link1"] {
        write_at(s.as_fd(), name, b"same data");
    }
    fsops::set_xattr(None, s.as_fd(), b"a", b"user.x", b"1").unwrap();
    std::fs::hard_link(src.join("link1"), src.join("link2")).unwrap();
    full_migration(Launch::Alone, &src, &dst);
    // Changes that leave size, mtime, mode and owner alone.
    fsops::set_xattr(None, s.as_fd(), b"a", b"user.x", b"2").unwrap();
    fsops::set_xattr(None, s.as_fd(), b"a", b"user.new", b"\xff\x00").unwrap();
    fsops::set_xattr(None, s.as_fd(), b"link1", b"user.l", b"l").unwrap();
    let d = open(&dst);
    fsops::set_xattr(None, d.as_fd(), b"b", b"user.stray", b"only on the target").unwrap();
    let mut changed = 3;
    if have("setfacl") {
        let st = std::process::Command::new("setfacl")
            .args(["-m", "u:1234:r"])
            .arg(src.join("c"))
            .status()
            .unwrap();
        assert!(st.success());
        changed += 1;
    }
    // By default an up-to-date file's xattrs are not read (like rsync without -X).
    let (code, rep, out) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(total(&rep, "meta"), 0, "{}", text(&out));
    assert!(!compare_trees(&src, &dst, false).is_empty());
    // --dry-run names them and changes nothing.
    let (code, _, out) = pass(
        Launch::Alone,
        "copy",
        &src,
        &dst,
        &["--check-xattrs", "--dry-run"],
    );
    assert_eq!(code, 0, "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    for name in [
        "would fix xattrs: a",
        "would fix xattrs: b",
        "would fix xattrs: link1",
    ] {
        assert!(said.contains(name), "{name} missing: {said}");
    }
    assert!(!compare_trees(&src, &dst, false).is_empty());
    // For real, under mpirun: fixed in place, no data copied, links kept.
    if have("mpirun") {
        let (code, rep, out) = pass(Launch::Mpirun(2), "copy", &src, &dst, &["--check-xattrs"]);
        assert_eq!(code, 0, "{}", text(&out));
        assert_eq!(total(&rep, "meta"), changed, "{}", text(&out));
        assert_eq!(total(&rep, "files"), 0, "{}", text(&out));
        let diffs = compare_trees(&src, &dst, false);
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        let (code, rep, out) = pass(Launch::Alone, "copy", &src, &dst, &["--check-xattrs"]);
        assert_eq!(code, 0, "{}", text(&out));
        assert_eq!(total(&rep, "meta"), 0, "{}", text(&out));
    }
}

#[test]
fn an_unopenable_error_log_is_said_and_the_pass_goes_on() {
    let (tmp, src, dst) = src_and_dst();
    std::fs::write(src.join("f"), b"x").unwrap();
    let log = tmp.path().join("no/such/dir/e.log");
    let out = lmpi(
        Launch::Alone,
        &[
            "--pass".as_ref(),
            "copy".as_ref(),
            "--source".as_ref(),
            src.as_os_str(),
            "--target".as_ref(),
            dst.as_os_str(),
            "--error-log".as_ref(),
            log.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(dst.join("f").exists());
    let all = text(&out);
    assert!(all.contains("cannot open error log"), "{all}");
    assert!(all.contains("errors went to stderr only"), "{all}");
}
