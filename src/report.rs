//! What rank 0 prints: a progress line every `report_interval` and the final
//! summary (also as JSON with `--report`).

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::fsops::{self, Existing, OutputFailure};
use crate::stats::Snapshot;

/// The JSON report's mode: counts and host names, no path inside the trees,
/// so readable by all (lmpi's umask is cleared: exactly this).
pub const REPORT_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Open(#[from] OutputFailure),
    #[error("{}: write: {source}", .path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Write the JSON report to `path`, never through a link, FIFO or file of
/// another user at its name (`fsops::open_own_output`).
pub fn write_json(path: &std::path::Path, bytes: &[u8]) -> Result<(), ReportError> {
    use std::io::Write;
    let (fd, _, _) = fsops::open_own_output_path(path, Existing::Truncate, REPORT_MODE)?;
    std::fs::File::from(fd)
        .write_all(bytes)
        .map_err(|source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        })
}

pub fn human_bytes(b: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// A duration in microseconds, in the unit that reads best: 98 us,
/// 4.7 ms, 9.19 s, 2.5 min.
pub fn human_micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us} us"),
        1_000..=999_999 => format!("{:.1} ms", us as f64 / 1e3),
        1_000_000..=119_999_999 => format!("{:.2} s", us as f64 / 1e6),
        _ => format!("{:.1} min", us as f64 / 6e7),
    }
}

pub fn human_count(n: u64) -> String {
    if n >= 10_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

#[derive(Debug, Serialize, Clone)]
pub struct RankFigures {
    pub rank: usize,
    pub host: String,
    pub counters: Snapshot,
}

#[derive(Debug, Serialize, Default)]
pub struct Summary {
    pub pass: String,
    /// The job's id (`LMPI_JOB_ID`, Slurm's, or made up; the error log's
    /// name and the control bridge's too).
    pub job: String,
    pub source: String,
    pub target: String,
    /// lmpi's version and commit.
    pub version: String,
    /// Wall-clock start and end, RFC 3339 UTC.
    pub started_at: String,
    pub ended_at: String,
    /// complete | incomplete | stopped | refused | max-delete
    pub status: String,
    pub exit_code: i32,
    pub ranks: usize,
    pub threads_per_rank: usize,
    pub wall_seconds: f64,
    pub totals: Snapshot,
    pub bytes_per_second: f64,
    pub files_per_second: f64,
    pub file_size_bytes: Percentiles,
    pub copy_time_us: Percentiles,
    pub error_log: Option<String>,
    pub per_rank: Vec<RankFigures>,
    pub notes: Vec<String>,
}

impl Summary {
    /// Verify's own words: it compares, it copies nothing.
    fn verify_text(&self) -> String {
        let t = &self.totals;
        let mut s = format!(
            "  dirs {}  entries compared {}  the same {}  data read {} ({}/s)\n",
            t.dirs,
            t.scanned,
            t.uptodate,
            human_bytes(t.data),
            human_bytes(self.bytes_per_second as u64)
        );
        s += &format!(
            "  differences or unreadable {}  (each a line in the error log)\n",
            t.errors
        );
        for n in &self.notes {
            s += &format!("  note: {n}\n");
        }
        if let Some(l) = &self.error_log {
            s += &format!("  error log: {l}\n");
        }
        s + &format!("  exit status {}", self.exit_code)
    }

    pub fn text(&self) -> String {
        let t = &self.totals;
        let mut s = format!(
            "lmpi {}: {} in {:.2} s ({} ranks x {} threads)\n",
            self.pass,
            self.status.to_uppercase(),
            self.wall_seconds,
            self.ranks,
            self.threads_per_rank
        );
        if self.pass == "verify" {
            return s + &self.verify_text();
        }
        s += &format!(
            "  dirs {}  scanned {}  copied/created {}  data {} ({}/s, {:.0} files/s)\n",
            t.dirs,
            t.scanned,
            t.files,
            human_bytes(t.data),
            human_bytes(self.bytes_per_second as u64),
            self.files_per_second
        );
        if t.resumed > 0 {
            s += &format!(
                "  resumed {} of big files from partial copies a stopped pass left (not copied again)\n",
                human_bytes(t.resumed)
            );
        }
        s += &format!(
            "  metadata-only {}  up to date {}  skipped {}  deleted {}  dirtimes {}  errors {}\n",
            t.meta, t.uptodate, t.skipped, t.deleted, t.dirtimes, t.errors
        );
        if self.file_size_bytes.count > 0 {
            let f = &self.file_size_bytes;
            let c = &self.copy_time_us;
            s += &format!(
                "  file size p50 {} p90 {} p99 {} max {}\n  copy time p50 {} p90 {} p99 {} max {}\n",
                human_bytes(f.p50),
                human_bytes(f.p90),
                human_bytes(f.p99),
                human_bytes(f.max),
                human_micros(c.p50),
                human_micros(c.p90),
                human_micros(c.p99),
                human_micros(c.max)
            );
        }
        for n in &self.notes {
            s += &format!("  note: {n}\n");
        }
        if let Some(l) = &self.error_log {
            s += &format!("  error log: {l}\n");
        }
        s += &format!("  exit status {}", self.exit_code);
        s
    }
}

/// Print a line on stdout; a closed pipe (`| head`) must not kill a migration.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
