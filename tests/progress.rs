//! Issue 25, items 4 and 5: progress lines an admin can read (wall-clock
//! time, current and mean rates, big files in flight, percent and ETA from
//! the previous report of the same source), and a report that says which
//! job, source, target, version and when.
mod common;

use std::process::Stdio;

use common::*;

fn tree(src: &std::path::Path) {
    for d in 0..20 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..50 {
            std::fs::write(dir.join(format!("f{f}")), b"x").unwrap();
        }
    }
}

#[test]
fn progress_lines_have_time_rates_percent_and_eta() {
    let (t, src, dst) = src_and_dst();
    tree(&src);
    let report = t.path().join("report.json");
    let run = |slow: bool| {
        let mut c = launcher(Launch::Alone, &bin());
        c.args([
            "--pass",
            "copy",
            "--report-interval",
            "1",
            "--error-log",
            "/dev/null",
        ])
        .arg("--source")
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if slow {
            // ~1,000 entries at 3 ms per metadata call: a few seconds of lines.
            c.env("LD_PRELOAD", shim())
                .env("LMPI_FAULT_SLOW_ALL", "1")
                .env("LMPI_FAULT_SLOW_US", "3000")
                .args(["--threads", "1"]);
        }
        c.output().expect("run lmpi")
    };
    let first = run(false);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for key in [
        "job",
        "source",
        "target",
        "version",
        "started_at",
        "ended_at",
    ] {
        let v = r[key].as_str().unwrap_or_default();
        assert!(!v.is_empty(), "report lacks {key}: {r}");
    }
    assert_eq!(r["source"].as_str(), src.to_str());
    std::fs::remove_dir_all(&dst).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let second = run(true);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    let line = out
        .lines()
        .find(|l| l.contains(" lmpi copy ") && l.contains('%'))
        .unwrap_or_else(|| panic!("no progress line with a percent:\n{out}"));
    // 2026-12-04T16:20:01Z lmpi copy 00:00:01 | 1.0k entries (40%, ETA 00:00:02) | ...
    assert!(
        line.as_bytes().get(10) == Some(&b'T') && line.contains("Z lmpi copy"),
        "{line}"
    );
    for part in ["ETA ", "| now ", "| mean ", "files/s"] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
}

#[test]
fn big_files_in_flight_are_shown() {
    let (_t, src, dst) = src_and_dst();
    std::fs::write(src.join("big"), vec![7u8; 16 << 20]).unwrap();
    let out = launcher(Launch::Alone, &bin())
        .args([
            "--pass",
            "copy",
            "--report-interval",
            "1",
            "--error-log",
            "/dev/null",
        ])
        .args([
            "--chunk-size",
            "1048576",
            "--chunk-threshold",
            "2097152",
            "--threads",
            "1",
        ])
        .arg("--source")
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_WRITE_US", "300000")
        .output()
        .expect("run lmpi");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("big files in flight"), "{stdout}");
}
