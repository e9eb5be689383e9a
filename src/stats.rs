//! Per-rank counters. Hot paths bump relaxed atomics; everything that reads them
//! (progress line, memcached pusher, control `status`, final reduce) takes a
//! `Snapshot`, so no reader ever blocks a copy thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

macro_rules! counters {
    ($($name:ident => $key:literal, $doc:literal;)*) => {
        /// Live counters of one rank.
        #[derive(Default, Debug)]
        pub struct Counters { $(#[doc = $doc] pub $name: AtomicU64,)* }

        /// A plain copy of the counters, in `Counter::ALL` order.
        #[derive(Default, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct Snapshot { $(pub $name: u64,)* }

        impl Counters {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Snapshot {
            /// Key names as used in memcached, Graphite and the JSON report.
            pub const KEYS: &'static [&'static str] = &[$($key,)*];
            pub fn to_vec(&self) -> Vec<u64> { vec![$(self.$name,)*] }
            pub fn from_slice(v: &[u64]) -> Snapshot {
                let mut it = v.iter().copied();
                Snapshot { $($name: it.next().unwrap_or(0),)* }
            }
            pub fn pairs(&self) -> Vec<(&'static str, u64)> { vec![$(($key, self.$name),)*] }
        }
    };
}

counters! {
    dirs => "dirs", "directories walked";
    scanned => "scanned", "non-directory entries examined";
    files => "files", "entries created or rewritten (files, links, specials)";
    data => "data", "bytes of file data written";
    resumed => "resumed", "bytes of big files a stopped pass's partial copy already held (not copied again)";
    meta => "meta", "entries whose owner/mode/xattrs/times only were fixed";
    uptodate => "uptodate", "entries already identical on the target";
    skipped => "skipped", "entries skipped by filters or exclusions";
    deleted => "deleted", "entries removed from the target";
    dirtimes => "dirtimes", "directories whose times were set";
    errors => "errors", "errors reported (each is a line in the error log)";
    queued => "queued", "work items waiting in this rank's queue (gauge)";
    inflight => "inflight", "work items being processed by I/O threads (gauge)";
    partial => "partial", "bytes landed in big files whose copy is not complete yet (gauge)";
}

impl Snapshot {
    pub fn sum(&self, other: &Snapshot) -> Snapshot {
        let a = self.to_vec();
        let b = other.to_vec();
        Snapshot::from_slice(&a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<_>>())
    }
}

/// Histograms of file size and per-file copy time, merged at the end of a pass.
pub struct Histograms {
    pub size: Mutex<Histogram<u64>>,
    pub copy_us: Mutex<Histogram<u64>>,
}

impl Default for Histograms {
    fn default() -> Self {
        // 3 significant figures up to 1 PiB / ~11 days: wide enough never to saturate.
        let mk = |max| Histogram::new_with_bounds(1, max, 3).expect("static histogram bounds");
        Histograms {
            size: Mutex::new(mk(1 << 50)),
            copy_us: Mutex::new(mk(1 << 40)),
        }
    }
}

impl Histograms {
    pub fn record(&self, bytes: u64, micros: u64) {
        if let Ok(mut h) = self.size.lock() {
            // Empty files are size 0 (the histogram takes 0 at any low bound).
            h.saturating_record(bytes);
        }
        if let Ok(mut h) = self.copy_us.lock() {
            h.saturating_record(micros.max(1));
        }
    }
}
