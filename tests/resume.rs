//! Resumable big files: a chunked copy stopped midway keeps its partial file
//! and a record of the chunks that are in; the next pass copies only the
//! missing chunks when the source is unchanged and starts over otherwise. A
//! partial never looks complete, and nothing a user plants under a partial's
//! name is trusted.

mod common;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lmpi::fsops;

const MIB: u64 = 1 << 20;

/// Test data on tmpfs where there is one: gigabytes on a VM disk are slow.
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// A file of `size` bytes whose every 4 KiB block differs (so a chunk
/// written at the wrong offset or left out shows up in the compare).
fn write_big(path: &Path, size: u64, seed: u8) {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).unwrap());
    let block: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect();
    let mut b = block.clone();
    for n in 0..size / 4096 {
        b[..8].copy_from_slice(&n.to_le_bytes());
        f.write_all(&b).unwrap();
    }
    f.flush().unwrap();
}

/// Partial files in `dir`.
fn partials(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".lmpi-resume-")
        })
        .collect()
}

/// The record on partial `p` as text, if it has one.
fn record(p: &Path) -> Option<String> {
    let d = open(p.parent().unwrap());
    let name = p.file_name().unwrap().as_encoded_bytes();
    let v = fsops::get_xattr(None, d.as_fd(), name, b"trusted.lmpi.resume").ok()?;
    String::from_utf8(v).ok()
}

/// How many chunks a record lists (`done=0-4,7` is 6).
fn chunks_done(rec: &str) -> u64 {
    let done = rec
        .split(' ')
        .find_map(|f| f.strip_prefix("done="))
        .unwrap_or("");
    done.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, z)) => z.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

fn start_copy(launch: Launch, src: &Path, dst: &Path, chunk: u64, write_us: u32) -> Child {
    launcher(launch, &bin())
        .args(["--pass", "copy", "--threads", "2", "--report-interval", "1"])
        .args(["--chunk-size", &chunk.to_string()])
        .args(["--chunk-threshold", &(2 * chunk).to_string()])
        .arg("--source")
        .arg(src)
        .arg("--target")
        .arg(dst)
        .arg("--error-log")
        .arg(dst.with_extension("errors"))
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_WRITE_US", write_us.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lmpi")
}

/// Start a copy whose chunks are written slowly, and SIGTERM it once the
/// partial file holds at least `want` chunks of data (its allocated blocks:
/// the record is written only after the stop). Returns (exit code, output).
fn stop_after_chunks(
    launch: Launch,
    src: &Path,
    dst: &Path,
    chunk: u64,
    want: u64,
) -> (Option<i32>, String) {
    let mut child = start_copy(launch, src, dst, chunk, 200_000);
    let t0 = Instant::now();
    loop {
        let held = partials(dst)
            .first()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.blocks() * 512);
        if held >= want * chunk {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the copy never got {want} chunks in"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before the stop"
        );
        std::thread::sleep(Duration::from_millis(3));
    }
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code(), out + &err)
}

/// The 2 GiB cases take 4 GiB of tmpfs each: one at a time.
static BIG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn big_file_resumes(launch: Launch) {
    let _one = BIG.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = scratch();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let size = 2048 * MIB;
    write_big(&src.join("big"), size, 1);
    std::fs::write(src.join("small"), b"small file\n").unwrap();
    let chunk = 64 * MIB; // 32 chunks
    let (code, out) = stop_after_chunks(launch, &src, &dst, chunk, 21);
    assert_ne!(code, Some(0), "a stopped run must not exit 0:\n{out}");
    assert!(
        out.contains("1 partly copied big files kept for the next pass to resume"),
        "{out}"
    );
    assert!(
        !dst.join("big").exists(),
        "a partial file must never have the real name"
    );
    let part = partials(&dst);
    assert_eq!(part.len(), 1, "{part:?}");
    let rec = record(&part[0]).expect("the partial carries its record");
    let before = chunks_done(&rec);
    assert!(before >= 17, "{rec}");

    // Verify sees an unfinished migration, not a finished one.
    let (code, _, o) = pass(launch, "verify", &src, &dst, &[]);
    assert_ne!(code, 0, "verify must fail on a partial copy:\n{}", text(&o));

    let (cs, ct) = (chunk.to_string(), (2 * chunk).to_string());
    let args = ["--chunk-size", &cs, "--chunk-threshold", &ct];
    let (code, rep, o) = pass(launch, "copy", &src, &dst, &args);
    assert_eq!(code, 0, "{}", text(&o));
    let (data, resumed) = (total(&rep, "data"), total(&rep, "resumed"));
    println!("{launch:?}: stopped with {before} of 32 chunks recorded; the rerun resumed {resumed} bytes and copied {data}");
    assert!(
        resumed >= before * chunk,
        "resumed {resumed} < {before} chunks\n{rep}"
    );
    assert!(
        data < size / 2,
        "copied {data} bytes again, not less than half of {size}\n{rep}"
    );
    // The small file may have gone in before the stop.
    assert!(
        data + resumed == size || data + resumed == size + 11,
        "{rep}"
    );
    assert!(
        partials(&dst).is_empty(),
        "the partial is renamed into place"
    );
    let diffs = compare_trees(&src, &dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn stopped_2gib_copy_resumes_alone() {
    big_file_resumes(Launch::Alone);
}

#[test]
fn stopped_2gib_copy_resumes_under_mpirun() {
    if have("mpirun") {
        big_file_resumes(Launch::Mpirun(2));
    }
}

/// A small tree with one 64 MiB file in 4 MiB chunks, stopped midway.
fn stopped_small(launch: Launch) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = scratch();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    write_big(&src.join("big"), 64 * MIB, 2);
    std::fs::write(src.join("keep"), b"keep\n").unwrap();
    let (code, out) = stop_after_chunks(launch, &src, &dst, 4 * MIB, 4);
    assert_ne!(code, Some(0), "{out}");
    assert_eq!(partials(&dst).len(), 1, "{out}");
    (tmp, src, dst)
}

const SMALL_CHUNKS: &[&str] = &["--chunk-size", "4194304", "--chunk-threshold", "8388608"];

#[test]
fn changed_source_starts_over() {
    let (_tmp, src, dst) = stopped_small(Launch::Alone);
    // Same size, and the mtime put back: only the ctime tells.
    let m = std::fs::metadata(src.join("big")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(src.join("big"))
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"CHANGED", 100).unwrap();
    drop(f);
    let sd = open(&src);
    set_mtime(sd.as_fd(), b"big", m.mtime(), m.mtime_nsec() as u32);
    let (code, rep, o) = pass(Launch::Alone, "copy", &src, &dst, SMALL_CHUNKS);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(total(&rep, "resumed"), 0, "{rep}");
    assert_eq!(total(&rep, "data"), 64 * MIB, "{rep}");
    let diffs = compare_trees(&src, &dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn delete_keeps_a_wanted_partial_and_copy_drops_a_stale_one() {
    let (_tmp, src, dst) = stopped_small(Launch::Alone);
    let (code, _, o) = pass(Launch::Alone, "delete", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        partials(&dst).len(),
        1,
        "delete keeps the partial of a file the source has"
    );
    // The source file goes: the next copy removes its partial.
    std::fs::remove_file(src.join("big")).unwrap();
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, SMALL_CHUNKS);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(partials(&dst).is_empty(), "stale partial left behind");
    assert!(compare_trees(&src, &dst, false).is_empty());
}

#[test]
fn final_pass_resumes_and_delete_pass_drops_a_stale_partial() {
    let (_tmp, src, dst) = stopped_small(Launch::Alone);
    let (code, rep, o) = pass(Launch::Alone, "final", &src, &dst, SMALL_CHUNKS);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(total(&rep, "resumed") >= 4 * 4 * MIB, "{rep}");
    assert!(partials(&dst).is_empty());
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    let (_tmp2, src, dst) = stopped_small(Launch::Alone);
    std::fs::remove_file(src.join("big")).unwrap();
    let (code, _, o) = pass(Launch::Alone, "delete", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(
        partials(&dst).is_empty(),
        "delete removes a partial whose source is gone"
    );
}

/// What a user leaves under a partial's name is never trusted nor touched
/// by the copy: a file of the right size without lmpi's root-only record,
/// or a symlink out of the tree. The copy writes under a plain temp name,
/// follows nothing and lands the source bytes; the delete pass then removes
/// the planted entries like anything else the source lacks.
#[test]
fn planted_partials_are_not_trusted() {
    let tmp = scratch();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    for d in ["a", "b"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        std::fs::create_dir_all(dst.join(d)).unwrap();
    }
    write_big(&src.join("a/big"), 16 * MIB, 3);
    write_big(&src.join("b/big"), 16 * MIB, 4);
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"not yours").unwrap();
    let ino = |p: &str| std::fs::metadata(src.join(p)).unwrap().ino();
    let name = |i: u64| format!(".lmpi-resume-{i:016x}.part");
    // a: a file of full size, someone else's, without the record.
    let planted = dst.join("a").join(name(ino("a/big")));
    std::fs::write(&planted, vec![0u8; 16 << 20]).unwrap();
    std::os::unix::fs::chown(&planted, Some(1000), Some(1000)).unwrap();
    // b: a symlink to a file outside the target.
    let link = dst.join("b").join(name(ino("b/big")));
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let (code, rep, o) = pass(Launch::Alone, "copy", &src, &dst, SMALL_CHUNKS);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(total(&rep, "resumed"), 0, "{rep}");
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
    assert_eq!(
        std::fs::read(&planted).unwrap().len(),
        16 << 20,
        "not ours: untouched"
    );
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    let (code, _, o) = pass(Launch::Alone, "delete", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
    let diffs = compare_trees(&src, &dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A partial someone could have written to (made group-writable since) is
/// not resumed: the copy starts over.
#[test]
fn a_tampered_partial_starts_over() {
    let (_tmp, src, dst) = stopped_small(Launch::Alone);
    let part = partials(&dst).remove(0);
    assert_eq!(
        std::fs::metadata(&part).unwrap().mode() & 0o777,
        0o600,
        "owner-only while partial"
    );
    std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o660)).unwrap();
    let (code, rep, o) = pass(Launch::Alone, "copy", &src, &dst, SMALL_CHUNKS);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(total(&rep, "resumed"), 0, "{rep}");
    assert!(partials(&dst).is_empty());
    let diffs = compare_trees(&src, &dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A partial the next pass will not resume is removed, not left behind for
/// ever: the file is now under the chunk threshold and copied whole, or
/// hardlinked (copied by its link group).
#[test]
fn a_partial_that_will_not_be_resumed_is_removed() {
    let (_tmp, src, dst) = stopped_small(Launch::Alone);
    let whole = ["--chunk-threshold", "134217728"];
    let (code, rep, o) = pass(Launch::Alone, "copy", &src, &dst, &whole);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(total(&rep, "resumed"), 0, "{rep}");
    assert!(partials(&dst).is_empty(), "partial left behind");
    let diffs = compare_trees(&src, &dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    let (_tmp, src, dst) = stopped_small(Launch::Alone);
    std::fs::hard_link(src.join("big"), src.join("big2")).unwrap();
    let (code, _, o) = pass(Launch::Alone, "final", &src, &dst, SMALL_CHUNKS);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(partials(&dst).is_empty(), "partial left behind");
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
