//! The old config's filters: `oldest_date` (atime), `newest_date` (mtime) and
//! excluded path prefixes.

use crate::fsops::{self, Kind, Stat};

/// An absolute exclude that is not under the source root would match nothing:
/// most likely the old `exceptions` file written for another mount point.
#[derive(Debug, thiserror::Error)]
#[error("exclude {}: not under the source root {}; give it relative to the source root or absolute under it", fsops::show(.prefix), fsops::show(.root))]
pub struct OutsideRoot {
    pub prefix: Vec<u8>,
    pub root: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Skip files whose atime is older than this (epoch seconds).
    atime_before: Option<i64>,
    /// Skip files whose mtime is newer than this (epoch seconds).
    mtime_after: Option<i64>,
    /// Relative to the root, without leading or trailing '/'.
    excludes: Vec<Vec<u8>>,
}

impl Filter {
    /// `oldest`/`newest` are ages in seconds (0 = off); `src_root` lets absolute
    /// prefixes under the source root be given as the old `exceptions` file did.
    pub fn new(
        now: i64,
        oldest: u64,
        newest: u64,
        excludes: &[Vec<u8>],
        src_root: &[u8],
    ) -> Result<Filter, OutsideRoot> {
        let root = trim_slashes(src_root);
        let mut rel = Vec::new();
        for p in excludes {
            let t = trim_slashes(p);
            if !p.starts_with(b"/") {
                rel.push(t.to_vec());
            } else if root.is_empty()
                || (t.starts_with(root) && (t.len() == root.len() || t[root.len()] == b'/'))
            {
                rel.push(trim_slashes(&t[root.len()..]).to_vec());
            } else {
                return Err(OutsideRoot {
                    prefix: p.clone(),
                    root: src_root.to_vec(),
                });
            }
        }
        rel.retain(|p| !p.is_empty());
        Ok(Filter {
            atime_before: (oldest > 0).then(|| now - oldest as i64),
            mtime_after: (newest > 0).then(|| now - newest as i64),
            excludes: rel,
        })
    }

    pub fn has_excludes(&self) -> bool {
        !self.excludes.is_empty()
    }

    /// Prefix match on whole components: `a/b` excludes `a/b` and `a/b/c`, not `a/bc`.
    pub fn excluded(&self, rel: &[u8]) -> bool {
        self.excludes
            .iter()
            .any(|p| rel.starts_with(p) && (rel.len() == p.len() || rel[p.len()] == b'/'))
    }

    /// Age filters apply to non-directories only, as in the old tool.
    pub fn skip(&self, st: &Stat) -> bool {
        if st.kind == Kind::Dir {
            return false;
        }
        if let Some(t) = self.atime_before {
            if st.atime.sec < t {
                return true;
            }
        }
        if let Some(t) = self.mtime_after {
            if st.mtime.sec > t {
                return true;
            }
        }
        false
    }
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let s = p.iter().position(|&b| b != b'/').unwrap_or(p.len());
    let e = p.iter().rposition(|&b| b != b'/').map_or(s, |i| i + 1);
    &p[s..e.max(s)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_prefixes() {
        let f = Filter::new(
            0,
            0,
            0,
            &[b"a/b".to_vec(), b"/mnt/src/x/".to_vec()],
            b"/mnt/src",
        )
        .unwrap();
        assert!(f.excluded(b"a/b"));
        assert!(f.excluded(b"a/b/c"));
        assert!(!f.excluded(b"a/bc"));
        assert!(!f.excluded(b"a"));
        assert!(f.excluded(b"x/y"));
        assert!(!f.excluded(b"xy"));
        let e = Filter::new(0, 0, 0, &[b"/etc\xff".to_vec()], b"/mnt/src").unwrap_err();
        assert_eq!(
            e.to_string(),
            "exclude /etc\\xff: not under the source root /mnt/src; give it relative to the source root or absolute under it"
        );
        assert!(Filter::new(0, 0, 0, &[b"/mnt/srcx".to_vec()], b"/mnt/src").is_err());
        // A source root of / holds every absolute path.
        let f = Filter::new(0, 0, 0, &[b"/etc".to_vec()], b"/").unwrap();
        assert!(f.excluded(b"etc/passwd"));
    }
}
