//! The target root's record of the last clean final pass: when a final pass
//! that ended with nothing failed began, and from which source root (a copy
//! pass leaves directory times to a later pass, so it does not count).
//! A journal stands for every change since that pass only if its tracker
//! was watching before the pass began.

use std::os::fd::BorrowedFd;

use crate::fsops::{self, Ident, OsError};

/// Only root can write `trusted.*`: no user can forge or move it. Keys
/// under `trusted.lmpi.` are lmpi's own, never copied or compared.
pub const KEY: &[u8] = b"trusted.lmpi.synced";

/// Clocks of the tracker's node and rank 0's may differ this much.
pub const CLOCK_SKEW_NS: u128 = 2_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub started_ns: u128,
    pub source_root: Ident,
}

/// The record, with what the pass left out (`Filter::fingerprint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub synced: Synced,
    pub filter: String,
}

impl Record {
    fn encode(&self) -> String {
        let s = &self.synced;
        format!(
            "lmpi-synced 2 started={} source={}:{} filter={}",
            s.started_ns, s.source_root.dev, s.source_root.ino, self.filter
        )
    }

    fn decode(v: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(v).ok()?;
        let rest = text.strip_prefix("lmpi-synced 2 ")?;
        let (mut started, mut source, mut filter) = (None, None, None);
        for f in rest.split(' ') {
            if let Some(v) = f.strip_prefix("started=") {
                started = v.parse().ok();
            } else if let Some(v) = f.strip_prefix("source=") {
                let (d, i) = v.split_once(':')?;
                source = Some(Ident {
                    dev: d.parse().ok()?,
                    ino: i.parse().ok()?,
                });
            } else if let Some(v) = f.strip_prefix("filter=") {
                filter = Some(v.to_string());
            }
        }
        let synced = Synced {
            started_ns: started?,
            source_root: source?,
        };
        Some(Record {
            synced,
            filter: filter?,
        })
    }
}

/// Record on target root `dst` that a clean pass began at `started_ns`.
pub fn mark(dst: BorrowedFd, r: &Record) -> Result<(), OsError> {
    fsops::set_xattr(Some(dst), dst, b"", KEY, r.encode().as_bytes())
}

/// The last clean pass, if one was recorded (and the record is readable).
pub fn read(dst: BorrowedFd) -> Option<Record> {
    let v = fsops::get_xattr(Some(dst), dst, b"", KEY).ok()?;
    Record::decode(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let synced = Synced {
            started_ns: 1_796_398_500_979_514_812,
            source_root: Ident { dev: 7, ino: 9 },
        };
        let r = Record {
            synced,
            filter: "x6162,63".into(),
        };
        assert_eq!(Record::decode(r.encode().as_bytes()), Some(r));
        assert_eq!(
            Record::decode(b"lmpi-synced 2 started=x source=1:2 filter=x"),
            None
        );
        assert_eq!(Record::decode(b"lmpi-synced 1 started=1 source=1:2"), None);
    }
}
