//! Bad or oddly written input, through the real binary: excludes spelled with
//! `.`, `..` and extra slashes protect what they name (copy and delete), the
//! root or above is refused; numbers out of range, non-regular or huge config
//! and exclude files are one line and exit 2, never a panic or a hang.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

/// One line on stderr, exit 2, naming `needle`.
fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// src: keepme/src_only, other/f; dst: keepme/dst_only (gone from the source).
fn trees() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (tmp, src, dst) = src_and_dst();
    std::fs::create_dir_all(src.join("keepme")).unwrap();
    std::fs::create_dir_all(src.join("other")).unwrap();
    std::fs::write(src.join("keepme/src_only"), b"s").unwrap();
    std::fs::write(src.join("other/f"), b"f").unwrap();
    std::fs::create_dir_all(dst.join("keepme")).unwrap();
    std::fs::write(dst.join("keepme/dst_only"), b"precious").unwrap();
    (tmp, src, dst)
}

fn copy_then_delete(src: &Path, dst: &Path, extra: &[&str]) {
    for p in ["copy", "delete"] {
        let (code, _, out) = pass(Launch::Alone, p, src, dst, extra);
        assert_eq!(code, 0, "{p} {extra:?}: {}", text(&out));
    }
    assert!(dst.join("other/f").exists(), "{extra:?}");
    assert!(
        !dst.join("keepme/src_only").exists(),
        "copied into an excluded dir: {extra:?}"
    );
    assert!(
        dst.join("keepme/dst_only").exists(),
        "deleted an excluded path: {extra:?}"
    );
}

#[test]
fn every_spelling_of_an_exclude_protects_it() {
    for spelling in ["./keepme", "keepme/.", "keepme//", "a/../keepme"] {
        let (_tmp, src, dst) = trees();
        copy_then_delete(&src, &dst, &["--exclude", spelling]);
    }
    // The same through the config's `exclude` and an exclude_file (bytes, CRLF).
    let (tmp, src, dst) = trees();
    let cfg = tmp.path().join("lmpi.toml");
    std::fs::write(&cfg, "exclude = [\"./keepme/\"]\n").unwrap();
    copy_then_delete(&src, &dst, &["--config", cfg.to_str().unwrap()]);
    let (tmp, src, dst) = trees();
    let list = tmp.path().join("exceptions");
    std::fs::write(&list, b"# old list\r\n./x\xff/..//keepme/.\r\n").unwrap();
    let cfg = tmp.path().join("lmpi.toml");
    std::fs::write(
        &cfg,
        format!("exclude_file = \"{}\"\n", list.to_str().unwrap()),
    )
    .unwrap();
    copy_then_delete(&src, &dst, &["--config", cfg.to_str().unwrap()]);
    // Without the exclude, the delete pass does remove it (the test is real).
    let (_tmp, src, dst) = trees();
    let (code, _, out) = pass(Launch::Alone, "delete", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    assert!(!dst.join("keepme/dst_only").exists());
}

#[test]
fn the_root_or_above_as_an_exclude_is_refused() {
    let (_tmp, src, dst) = trees();
    for (ex, says) in [
        ("..", "climbs out of the source root"),
        ("a/../..", "climbs out of the source root"),
        (".", "names the source root itself"),
        ("a/..", "names the source root itself"),
    ] {
        for p in ["copy", "delete"] {
            let (_, _, out) = pass(Launch::Alone, p, &src, &dst, &["--exclude", ex]);
            refused(&out, &format!("exclude {ex}: {says}"));
        }
    }
    // Nothing was touched.
    assert!(dst.join("keepme/dst_only").exists());
    assert!(!dst.join("other").exists());
}

fn lmpi_alone(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    lmpi(Launch::Alone, &args)
}

#[test]
fn numbers_out_of_range_are_one_line() {
    let (tmp, src, dst) = src_and_dst();
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let base = ["--pass", "copy", "--source", s, "--target", d];
    for (flag, value, key) in [
        (
            "--report-interval",
            "9223372036854775807",
            "report_interval",
        ),
        ("--report-interval", "0", "report_interval"),
        ("--oldest-date", "10000000000000000000", "oldest_date"),
        ("--newest-date", "3155760001", "newest_date"),
        ("--threads", "0", "threads_per_rank"),
        ("--threads", "1025", "threads_per_rank"),
        ("--batch-size", "1000001", "batch_size"),
        ("--chunk-size", "4095", "chunk_size"),
        ("--chunk-size", "12345", "chunk_size"),
        ("--chunk-threshold", "1", "chunk_threshold"),
        ("--max-delete", "x", "--max-delete"),
    ] {
        let out = lmpi_alone(&[&base[..], &[flag, value]].concat());
        refused(&out, key);
    }
    // The biggest accepted values run (no overflow on the way); final takes
    // every one of them (copy refuses --max-delete).
    let final_base = ["--pass", "final", "--source", s, "--target", d];
    let out = lmpi_alone(
        &[
            &final_base[..],
            &[
                "-q",
                "--report-interval",
                "86400",
                "--oldest-date",
                "3155760000",
                "--newest-date",
                "3155760000",
                "--max-delete",
                "18446744073709551615",
                "--error-log",
                "/dev/null",
            ],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let cfg = tmp.path().join("n.toml");
    for (body, key) in [
        ("report_interval = 9223372036854775807", "report_interval"),
        ("oldest_date = 10000000000000000000", "oldest_date"),
        ("batch_size = 0", "batch_size"),
        ("chunk_size = 2147483648", "chunk_size"),
        ("max_threads_per_rank = 2000", "max_threads_per_rank"),
        (
            "max_threads_per_rank = 4\nthreads_per_rank = 8",
            "threads_per_rank",
        ),
        ("[control]\ntimeout_ms = 0", "control.timeout_ms"),
        ("[control]\nport = 0", "control.port"),
        ("[stats]\ntimeout_ms = 100000", "stats.timeout_ms"),
    ] {
        std::fs::write(&cfg, body).unwrap();
        let out = lmpi_alone(&[&base[..], &["--config", cfg.to_str().unwrap()]].concat());
        // TOML integers are i64: a bigger one is a type error on its line.
        refused(&out, key);
        assert!(String::from_utf8_lossy(&out.stderr).contains("n.toml"));
    }
    // A flag beyond the file's cap names the flag's key, not the file alone.
    std::fs::write(&cfg, "max_threads_per_rank = 4\nthreads_per_rank = 2\n").unwrap();
    let out = lmpi_alone(
        &[
            &base[..],
            &["--config", cfg.to_str().unwrap(), "--threads", "5"],
        ]
        .concat(),
    );
    refused(
        &out,
        "with the command-line options: key `threads_per_rank`",
    );
}

#[test]
fn help_documents_the_ranges() {
    let out = lmpi_alone(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for r in [
        "1-86400",
        "3155760000",
        "1-1000000",
        "multiple of 4096",
        "max_threads_per_rank",
    ] {
        assert!(help.contains(r), "{r} not in --help:\n{help}");
    }
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lmpi.toml"))
            .unwrap();
    for r in [
        "1 to 86400",
        "0 to 3155760000",
        "1 to 1000000",
        "1 to 1024",
        "1 to 60000",
        "1 to 600000",
    ] {
        assert!(shipped.contains(r), "{r} not in config/lmpi.toml");
    }
}

#[test]
fn config_and_exclude_file_must_be_small_regular_files() {
    let (tmp, src, dst) = src_and_dst();
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let fifo = tmp.path().join("fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let big = tmp.path().join("big.toml");
    // Valid TOML, just too big: the size alone refuses it.
    std::fs::write(&big, format!("# {}\n", "x".repeat(1 << 20))).unwrap();
    let f = fifo.to_str().unwrap();
    for (path, says) in [
        ("/dev/zero", "a device, not a regular file"),
        (f, "a FIFO, not a regular file"),
        ("/tmp", "a directory, not a regular file"),
        (big.to_str().unwrap(), "larger than 1048576 bytes"),
    ] {
        let t0 = Instant::now();
        let out = lmpi_alone(&[
            "--pass", "copy", "--source", s, "--target", d, "--config", path,
        ]);
        refused(&out, &format!("{path}: cannot read config: {says}"));
        assert!(t0.elapsed() < Duration::from_secs(10));
        // lmpi ctl reads the same config the same way.
        let out = lmpi_alone(&["ctl", "ping", "--config", path]);
        refused(&out, says);
    }
    let cfg = tmp.path().join("lmpi.toml");
    for (path, says) in [("/dev/zero", "a device"), (f, "a FIFO")] {
        std::fs::write(&cfg, format!("exclude_file = \"{path}\"\n")).unwrap();
        let out = lmpi_alone(&[
            "--pass",
            "copy",
            "--source",
            s,
            "--target",
            d,
            "--config",
            cfg.to_str().unwrap(),
        ]);
        refused(
            &out,
            &format!("key `exclude_file`: {path}: cannot read: {says}"),
        );
    }
    // Not UTF-8 config text: one line, not a panic.
    std::fs::write(&cfg, b"report_interval = 5 # \xff\n").unwrap();
    let out = lmpi_alone(&[
        "--pass",
        "copy",
        "--source",
        s,
        "--target",
        d,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    refused(&out, "not UTF-8");
}
