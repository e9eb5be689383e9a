//! Rank 0's progress line: wall-clock time, elapsed, what was done, the
//! current (last interval) and mean rates, bytes landed in big files not
//! complete yet, and percent and ETA when the number of entries is known
//! from the previous report of the same source.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::report::{human_bytes, human_count};
use crate::stats::Snapshot;

pub struct Progress {
    pass: &'static str,
    start: Instant,
    last: Option<(Instant, Snapshot)>,
    /// Entries (directories + other entries) the previous pass of this
    /// source walked: the denominator of the percent.
    expected: Option<u64>,
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Entries a snapshot counts as walked.
fn entries(t: &Snapshot) -> u64 {
    t.dirs + t.scanned
}

impl Progress {
    pub fn new(pass: &'static str, start: Instant, expected: Option<u64>) -> Progress {
        Progress {
            pass,
            start,
            last: None,
            expected: expected.filter(|&e| e > 0),
        }
    }

    /// The line for totals `t` now; remembers them for the next rates.
    pub fn line(&mut self, t: &Snapshot) -> String {
        let now = Instant::now();
        let elapsed = now.duration_since(self.start);
        let (since, before) = self.last.unwrap_or((self.start, Snapshot::default()));
        self.last = Some((now, *t));
        let span = now.duration_since(since).as_secs_f64().max(1e-3);
        let mean = elapsed.as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64, secs: f64| a.saturating_sub(b) as f64 / secs;
        let cur_entries = rate(entries(t), entries(&before), span);
        let mut s = format!(
            "{} lmpi {} {} | {} entries{} | copied {} files {}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            self.pass,
            hms(elapsed),
            human_count(entries(t)),
            self.eta(entries(t), cur_entries),
            human_count(t.files),
            human_bytes(t.data),
        );
        s += &format!(
            " | now {}/s {:.0} files/s | mean {}/s {:.0} files/s",
            human_bytes(rate(t.data, before.data, span) as u64),
            rate(t.files, before.files, span),
            human_bytes((t.data as f64 / mean) as u64),
            t.files as f64 / mean,
        );
        if t.partial > 0 {
            s += &format!(" | big files in flight {}", human_bytes(t.partial));
        }
        s + &format!(
            " | meta {} same {} skipped {} deleted {} errors {} | queued {} active {}",
            human_count(t.meta),
            human_count(t.uptodate),
            human_count(t.skipped),
            human_count(t.deleted),
            t.errors,
            t.queued,
            t.inflight
        )
    }

    /// " (45%, ETA 00:01:40)" when the total is known and work moves.
    fn eta(&self, done: u64, per_sec: f64) -> String {
        let Some(total) = self.expected else {
            return String::new();
        };
        let pct = (done as f64 * 100.0 / total as f64).min(99.9);
        let left = total.saturating_sub(done) as f64;
        match per_sec > 0.0 && left > 0.0 {
            true => format!(
                " ({pct:.0}%, ETA {})",
                hms(Duration::from_secs_f64(left / per_sec))
            ),
            false => format!(" ({pct:.0}%)"),
        }
    }
}

/// The entries the previous report at `path` counted, if it is a report
/// of a pass over the same `source` (a report of another tree, or none,
/// gives no percent).
pub fn expected_from(path: Option<&Path>, source: &Path) -> Option<u64> {
    let bytes = crate::bounded::read_bounded(path?, 16 << 20).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if v.get("source")?.as_str()? != source.to_string_lossy() {
        return None;
    }
    let t = v.get("totals")?;
    Some(t.get("dirs")?.as_u64()? + t.get("scanned")?.as_u64()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_and_eta() {
        let mut p = Progress::new("copy", Instant::now(), Some(1000));
        let t = Snapshot {
            dirs: 10,
            scanned: 240,
            ..Default::default()
        };
        let line = p.line(&t);
        assert!(line.contains("250 entries (25%"), "{line}");
        assert!(line.contains(" lmpi copy 00:00:00 |"), "{line}");
        let none = Progress::new("copy", Instant::now(), None).line(&t);
        assert!(!none.contains('%'), "{none}");
    }
}
