//! `--manifest`: every action of a pass, one record per line, merged by
//! rank 0 from the ranks' parts; read back with `lmpi::manifest::read`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use lmpi::manifest::{self, Action};

type Records = Vec<(Action, Vec<u8>)>;

fn records(file: &Path) -> Records {
    manifest::read(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("bad record: {e}"))
}

/// Every entry under `root` (not the root), as paths relative to it.
fn entries(root: &Path) -> BTreeMap<Vec<u8>, std::fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(root.join(&rel)).expect("read_dir") {
            let e = e.expect("entry");
            let child = rel.join(e.file_name());
            let md = std::fs::symlink_metadata(root.join(&child)).expect("lstat");
            if md.is_dir() {
                todo.push(child.clone());
            }
            out.insert(child.as_os_str().as_bytes().to_vec(), md);
        }
    }
    out
}

fn no_parts_left(file: &Path, ranks: usize) {
    for r in 0..ranks {
        let p = manifest::part_path(file, r);
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

/// Paths of records that put an entry on the target, with how many times each.
fn placed(recs: &Records) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for (a, p) in recs {
        if matches!(
            a,
            Action::Created { .. } | Action::Copied { .. } | Action::Linked { .. }
        ) {
            *m.entry(p.clone()).or_insert(0) += 1;
        }
    }
    m
}

fn ranks(launch: Launch) -> usize {
    match launch {
        Launch::Alone => 1,
        Launch::Mpirun(n) => n,
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn copy_then_recopy_then_delete(launch: Launch) {
    let (tmp, src, dst) = src_and_dst();
    build_odd_tree(&src, false);
    let m = tmp.path().join("copy.manifest");
    let (code, _, o) = pass(launch, "copy", &src, &dst, &["--manifest", arg(&m)]);
    assert_eq!(code, 0, "{}", text(&o));
    no_parts_left(&m, ranks(launch));
    let recs = records(&m);
    let want = entries(&src);
    let got = placed(&recs);
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
    let got: BTreeSet<_> = got.into_keys().collect();
    let want_keys: BTreeSet<_> = want.keys().cloned().collect();
    assert_eq!(
        got, want_keys,
        "created/copied/linked differ from the source"
    );
    for (a, p) in &recs {
        let md = &want[p];
        match a {
            Action::Copied { size, mtime_ns } => {
                assert!(md.is_file());
                assert_eq!(*size, md.size(), "{p:?}");
                let ns = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
                assert_eq!(*mtime_ns, ns, "{p:?}");
            }
            Action::Created { kind, .. } => {
                assert_eq!(*kind == lmpi::fsops::Kind::Dir, md.is_dir(), "{p:?}")
            }
            Action::Linked { to } => assert_eq!(want[to].ino(), md.ino(), "{p:?}"),
            // A new directory gets its owner when it is walked.
            Action::Fixed(_) if md.is_dir() => {}
            other => panic!("unexpected record {other:?} for {p:?}"),
        }
    }

    // A second copy copies nothing, and says so.
    let m2 = tmp.path().join("again.manifest");
    let (code, _, o) = pass(launch, "copy", &src, &dst, &["--manifest", arg(&m2)]);
    assert_eq!(code, 0, "{}", text(&o));
    let again = placed(&records(&m2));
    assert!(again.is_empty(), "second copy placed {again:?}");

    // Delete: every entry only the target has is listed once as removed.
    std::fs::remove_file(src.join("dir/new\nline")).unwrap();
    std::fs::remove_file(src.join("medium.bin")).unwrap();
    std::fs::remove_dir_all(src.join("wide")).unwrap();
    let before = entries(&dst);
    let md = tmp.path().join("delete.manifest");
    let (code, _, o) = pass(launch, "delete", &src, &dst, &["--manifest", arg(&md)]);
    assert_eq!(code, 0, "{}", text(&o));
    no_parts_left(&md, ranks(launch));
    let after = entries(&dst);
    let gone: BTreeSet<_> = before
        .iter()
        .filter(|(p, _)| !after.contains_key(*p))
        .map(|(p, md)| (p.clone(), md.is_dir()))
        .collect();
    assert_eq!(gone.len(), 2 + 2500 + 1);
    let mut removed = BTreeSet::new();
    for (a, p) in records(&md) {
        let Action::Removed { dir } = a else {
            panic!("unexpected record {a:?} for {p:?}")
        };
        assert!(removed.insert((p.clone(), dir)), "{p:?} listed twice");
    }
    assert_eq!(removed, gone);
}

#[test]
fn copy_recopy_delete_alone() {
    copy_then_recopy_then_delete(Launch::Alone);
}

#[test]
fn copy_recopy_delete_under_mpirun() {
    if have("mpirun") {
        copy_then_recopy_then_delete(Launch::Mpirun(2));
    }
}

fn dry_run(launch: Launch) {
    let (tmp, src, dst) = src_and_dst();
    build_odd_tree(&src, false);
    let m = tmp.path().join("dry.manifest");
    let (code, _, o) = pass(
        launch,
        "copy",
        &src,
        &dst,
        &["--dry-run", "--manifest", arg(&m)],
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert!(entries(&dst).is_empty(), "a dry run changed the target");
    no_parts_left(&m, ranks(launch));
    let recs = records(&m);
    let src_entries = entries(&src);
    let got = placed(&recs);
    assert_eq!(got.len(), recs.len(), "only would-be placements: {recs:?}");
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert!(got.keys().all(|p| src_entries.contains_key(p)));
    for name in [
        &b"dir"[..],
        b"dir/new\nline",
        b"dir/\xff\xfe non-utf8",
        b"wide/f02499",
    ] {
        assert!(got.contains_key(name), "{:?} not listed", name);
    }
    // Each record is said once on stdout. Counted as phrases, not lines:
    // mpirun forwards each rank's output in chunks, which may cut one
    // rank's line with another's.
    let out = String::from_utf8_lossy(&o.stdout);
    let said = out.matches("would ").count();
    assert_eq!(said, recs.len(), "{}", text(&o));
    assert!(out.contains("would create directory: wide"));
    assert!(out.contains("would copy: dir/new\\x0aline"));
}

#[test]
fn dry_run_copy_alone() {
    dry_run(Launch::Alone);
}

#[test]
fn dry_run_copy_under_mpirun() {
    if have("mpirun") {
        dry_run(Launch::Mpirun(2));
    }
}

#[test]
fn a_manifest_that_cannot_be_written_stops_the_pass_before_it_starts() {
    let (tmp, src, dst) = src_and_dst();
    std::fs::write(src.join("f"), b"x").unwrap();
    let m = tmp.path().join("no/such/dir/m");
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &["--manifest", arg(&m)]);
    assert_eq!(code, 2, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("manifest"));
    assert!(entries(&dst).is_empty());
}

fn slow_tree(src: &Path) {
    for d in 0..10 {
        let dir = src.join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..400 {
            std::fs::write(dir.join(format!("slowfile{f:04}")), format!("{d}/{f}\n")).unwrap();
        }
    }
}

fn stop_midway(launch: Launch) {
    let (tmp, src, dst) = src_and_dst();
    slow_tree(&src);
    let m = tmp.path().join("stopped.manifest");
    let mut cmd = launcher(launch, &bin());
    let mut child = cmd
        .args(["--pass", "copy", "--threads", "1", "--manifest", arg(&m)])
        .arg("--source")
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .arg("--error-log")
        .arg(tmp.path().join("errors"))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_pml", "ob1")
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_SLOW", "slowfile")
        .env("LMPI_FAULT_SLOW_US", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi");
    let t0 = std::time::Instant::now();
    while entries(&dst).len() < 50 && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut seen = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        seen.push_str(&line.unwrap_or_default());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0), "{seen}");
    assert!(seen.contains("STOPPED"), "{seen}");
    no_parts_left(&m, ranks(launch));
    let recs = records(&m);
    let on_target = entries(&dst);
    assert!(!recs.is_empty());
    // Stopped midway: some but not all files made it, and each one the
    // manifest lists as copied is there with the source's size.
    assert!(on_target.len() < 10 * 401, "the stop came too late to test");
    for (a, p) in &recs {
        if let Action::Copied { size, .. } = a {
            let md = on_target
                .get(p)
                .unwrap_or_else(|| panic!("{p:?} not on target"));
            assert_eq!(md.size(), *size);
        }
    }
}

#[test]
fn a_stopped_pass_leaves_a_valid_manifest_alone() {
    stop_midway(Launch::Alone);
}

#[test]
fn a_stopped_pass_leaves_a_valid_manifest_under_mpirun() {
    if have("mpirun") {
        stop_midway(Launch::Mpirun(2));
    }
}
