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

impl Synced {
    fn encode(&self) -> String {
        format!(
            "lmpi-synced 1 started={} source={}:{}",
            self.started_ns, self.source_root.dev, self.source_root.ino
        )
    }

    fn decode(v: &[u8]) -> Option<Synced> {
        let text = std::str::from_utf8(v).ok()?;
        let rest = text.strip_prefix("lmpi-synced 1 ")?;
        let mut started = None;
        let mut source = None;
        for f in rest.split(' ') {
            if let Some(v) = f.strip_prefix("started=") {
                started = v.parse().ok();
            } else if let Some(v) = f.strip_prefix("source=") {
                let (d, i) = v.split_once(':')?;
                source = Some(Ident {
                    dev: d.parse().ok()?,
                    ino: i.parse().ok()?,
                });
            }
        }
        Some(Synced {
            started_ns: started?,
            source_root: source?,
        })
    }
}

/// Record on target root `dst` that a clean pass began at `started_ns`.
pub fn mark(dst: BorrowedFd, s: Synced) -> Result<(), OsError> {
    fsops::set_xattr(Some(dst), dst, b"", KEY, s.encode().as_bytes())
}

/// The last clean pass, if one was recorded (and the record is readable).
pub fn read(dst: BorrowedFd) -> Option<Synced> {
    let v = fsops::get_xattr(Some(dst), dst, b"", KEY).ok()?;
    Synced::decode(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Synced {
            started_ns: 1_796_398_500_979_514_812,
            source_root: Ident { dev: 7, ino: 9 },
        };
        assert_eq!(Synced::decode(s.encode().as_bytes()), Some(s));
        assert_eq!(Synced::decode(b"lmpi-synced 1 started=x source=1:2"), None);
    }
}
