//! The old config's filters: `oldest_date` (atime), `newest_date` (mtime) and
//! excluded path prefixes.
//!
//! Every exclude (`--exclude`, config `exclude`, `exclude_file` lines) goes
//! through [`normalize_exclude`] once, here, so every pass matches the same
//! prefixes: `./keepme`, `keepme/.`, `keepme//` and `a/../keepme` all mean
//! `keepme`.

use std::os::unix::ffi::OsStrExt;

use crate::fsops::{self, Kind, Stat};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExcludeError {
    /// An absolute exclude that is not under the source root would match
    /// nothing: most likely the old `exceptions` file written for another
    /// mount point.
    #[error("exclude {}: not under the source root {}; give it relative to the source root or absolute under it", fsops::show(.prefix), fsops::show(.root))]
    OutsideRoot { prefix: Vec<u8>, root: Vec<u8> },
    /// `..` above the root: it would name something outside the tree.
    #[error("exclude {}: climbs out of the source root with `..`", fsops::show(.prefix))]
    Escapes { prefix: Vec<u8> },
    /// `.`, `a/..`, an empty string or the root itself: excluding the whole
    /// tree is never what was meant (and would make the delete pass a no-op).
    #[error("exclude {}: names the source root itself; give a path below it", fsops::show(.prefix))]
    IsRoot { prefix: Vec<u8> },
    /// A pattern with `*`, `?` or `[` that is not a glob (or not UTF-8).
    #[error("exclude {}: not a glob pattern: {msg}", fsops::show(.pattern))]
    BadGlob { pattern: Vec<u8>, msg: String },
}

/// An exclude with `*`, `?` or `[` in it: matched against each name of a
/// path (a pattern without `/`, as rsync does), or against each leading
/// part of the path from the root (a pattern with `/`).
#[derive(Debug, Clone)]
struct Glob {
    whole_path: bool,
    pattern: Vec<u8>,
    matcher: globset::GlobMatcher,
}

fn is_glob(p: &[u8]) -> bool {
    p.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// A glob exclude: relative to the source root (an absolute one must lie
/// under it), `*` never crossing a `/`.
fn glob(p: &[u8], src_root: &[u8]) -> Result<Glob, ExcludeError> {
    let bad = |msg: String| ExcludeError::BadGlob {
        pattern: p.to_vec(),
        msg,
    };
    let root = normalized_root(src_root);
    let rel: &[u8] = match p.strip_prefix(b"/") {
        Some(_) => p
            .strip_prefix(root.as_slice())
            .and_then(|r| r.strip_prefix(b"/"))
            .ok_or_else(|| ExcludeError::OutsideRoot {
                prefix: p.to_vec(),
                root: src_root.to_vec(),
            })?,
        None => p.strip_prefix(b"./").unwrap_or(p),
    };
    let rel = rel.strip_suffix(b"/").unwrap_or(rel);
    let text = std::str::from_utf8(rel).map_err(|_| bad("not UTF-8".into()))?;
    let matcher = globset::GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| bad(e.kind().to_string()))?
        .compile_matcher();
    Ok(Glob {
        whole_path: rel.contains(&b'/'),
        pattern: rel.to_vec(),
        matcher,
    })
}

/// `src_root` as an absolute path with single slashes (`/` stays `/`... as empty).
fn normalized_root(src_root: &[u8]) -> Vec<u8> {
    let parts = absolute_components(src_root);
    let mut out = Vec::new();
    for c in parts {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    out
}

/// Lexical components of `p`: empty ones (repeated, leading and trailing
/// slashes) and `.` dropped, `..` taking back the one before it. `None` when
/// `..` climbs above the start. Lexical on purpose: the walks never follow
/// symlinks, so `a/../b` can only ever be `b` to them.
fn components(p: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

/// One exclude as the walks compare it: relative to the source root,
/// components joined by single slashes. Absolute excludes must lie under
/// `src_root` (itself normalized the same way; on the real filesystem `/..`
/// is `/`, so the root's own `..` stop there).
pub fn normalize_exclude(p: &[u8], src_root: &[u8]) -> Result<Vec<u8>, ExcludeError> {
    let rel: Vec<&[u8]> = if p.starts_with(b"/") {
        let abs = absolute_components(p);
        let root = absolute_components(src_root);
        match abs.strip_prefix(root.as_slice()) {
            Some(rest) => rest.to_vec(),
            None => {
                return Err(ExcludeError::OutsideRoot {
                    prefix: p.to_vec(),
                    root: src_root.to_vec(),
                })
            }
        }
    } else {
        components(p).ok_or_else(|| ExcludeError::Escapes { prefix: p.to_vec() })?
    };
    if rel.is_empty() {
        return Err(ExcludeError::IsRoot { prefix: p.to_vec() });
    }
    Ok(rel.join(&b'/'))
}

/// `a`, `a/b`, `a/b/c` for `a/b/c`.
fn leading_parts(rel: &[u8]) -> impl Iterator<Item = &[u8]> {
    let cuts = rel
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| i);
    cuts.chain(std::iter::once(rel.len()))
        .map(move |i| &rel[..i])
}

/// As `components`, for an absolute path: `..` at `/` stays at `/`.
fn absolute_components(p: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Skip files whose atime is older than this (epoch seconds).
    atime_before: Option<i64>,
    /// Skip files whose mtime is newer than this (epoch seconds).
    mtime_after: Option<i64>,
    /// From `normalize_exclude`: prefixes anchored at the root.
    excludes: Vec<Vec<u8>>,
    /// Bare names (no `/`, no glob): excluded at any depth, as rsync does.
    names: Vec<Vec<u8>>,
    globs: Vec<Glob>,
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
    ) -> Result<Filter, ExcludeError> {
        let (mut prefixes, mut names, mut globs) = (Vec::new(), Vec::new(), Vec::new());
        for p in excludes {
            match p.as_slice() {
                p if is_glob(p) => globs.push(glob(p, src_root)?),
                b"" | b"." | b".." => prefixes.push(normalize_exclude(p, src_root)?),
                p if !p.contains(&b'/') => names.push(p.to_vec()),
                p => prefixes.push(normalize_exclude(p, src_root)?),
            }
        }
        // Config checks bound the ages, but a cutoff must never wrap: an age
        // beyond i64 (or before the epoch's far past) just means "everything".
        let cutoff = |age: u64| now.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX));
        Ok(Filter {
            atime_before: (oldest > 0).then(|| cutoff(oldest)),
            mtime_after: (newest > 0).then(|| cutoff(newest)),
            excludes: prefixes,
            names,
            globs,
        })
    }

    /// What a pass under this filter leaves out, as a short stable string
    /// (the excludes, hex): a clean pass records it, and a `--changes` pass
    /// trusts only a journal since a pass that left out the same. None with
    /// an age filter: what it leaves out moves with the clock, so no pass
    /// under one is a sync a journal can start from.
    pub fn fingerprint(&self) -> Option<String> {
        if self.atime_before.is_some() || self.mtime_after.is_some() {
            return None;
        }
        let tagged = |tag: u8, v: &[u8]| [&[tag][..], v].concat();
        let mut ex: Vec<Vec<u8>> = self.excludes.iter().map(|e| tagged(b'p', e)).collect();
        ex.extend(self.names.iter().map(|n| tagged(b'n', n)));
        ex.extend(self.globs.iter().map(|g| tagged(b'g', &g.pattern)));
        ex.sort();
        let hex: Vec<String> = ex
            .iter()
            .map(|e| e.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        Some(format!("x{}", hex.join(",")))
    }

    pub fn has_excludes(&self) -> bool {
        !(self.excludes.is_empty() && self.names.is_empty() && self.globs.is_empty())
    }

    /// Whether `rel` (relative to the root) is left out: a prefix on whole
    /// components (`a/b` excludes `a/b` and `a/b/c`, not `a/bc`), a bare
    /// name or a name glob matching any of its names, or a path glob
    /// matching it or a directory above it.
    pub fn excluded(&self, rel: &[u8]) -> bool {
        let prefix =
            |p: &Vec<u8>| rel.starts_with(p) && (rel.len() == p.len() || rel[p.len()] == b'/');
        if self.excludes.iter().any(prefix) {
            return true;
        }
        let names = || rel.split(|&b| b == b'/');
        if names().any(|n| self.names.iter().any(|x| x == n)) {
            return true;
        }
        let as_path = |b: &[u8]| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b));
        self.globs.iter().any(|g| match g.whole_path {
            false => names().any(|n| g.matcher.is_match(as_path(n))),
            true => leading_parts(rel).any(|p| g.matcher.is_match(as_path(p))),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_at_any_depth_and_globs() {
        let ex: Vec<Vec<u8>> = [&b".snapshot"[..], b"*.tmp", b"a/*/cache", b"/mnt/src/b/?x"]
            .iter()
            .map(|p| p.to_vec())
            .collect();
        let f = Filter::new(0, 0, 0, &ex, b"/mnt/src").unwrap();
        assert!(f.excluded(b".snapshot"));
        assert!(f.excluded(b"x/y/.snapshot/z"));
        assert!(!f.excluded(b"x/.snapshots"));
        assert!(f.excluded(b"f.tmp") && f.excluded(b"d/e/f.tmp"));
        assert!(!f.excluded(b"d/f.tmp2"));
        assert!(f.excluded(b"a/b/cache") && f.excluded(b"a/b/cache/deep"));
        assert!(!f.excluded(b"a/b/c/cache") && !f.excluded(b"x/a/b/cache"));
        assert!(f.excluded(b"b/yx/z") && !f.excluded(b"b/yyx"));
        let bad = Filter::new(0, 0, 0, &[b"[z-a".to_vec()], b"/mnt/src").unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("exclude [z-a: not a glob pattern"),
            "{bad}"
        );
        assert!(Filter::new(0, 0, 0, &[b"/elsewhere/*.tmp".to_vec()], b"/mnt/src").is_err());
        // Another set of patterns is another fingerprint.
        let g = Filter::new(0, 0, 0, &ex[..2], b"/mnt/src").unwrap();
        assert_ne!(f.fingerprint(), g.fingerprint());
    }

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

    #[test]
    fn every_spelling_of_a_prefix_is_one_prefix() {
        let root = b"/mnt/src";
        for p in [
            &b"keepme"[..],
            b"./keepme",
            b"keepme/.",
            b"keepme//",
            b"a/../keepme",
            b".//keepme/./",
            b"/mnt/src//keepme",
            b"/mnt/./src/x/../keepme/",
            b"/mnt/other/../src/keepme",
        ] {
            assert_eq!(
                normalize_exclude(p, root).as_deref(),
                Ok(&b"keepme"[..]),
                "{}",
                fsops::show(p)
            );
        }
        assert_eq!(normalize_exclude(b"a//b/./c/", root).unwrap(), b"a/b/c");
        assert_eq!(normalize_exclude(b"\xff/..x", root).unwrap(), b"\xff/..x");
        // A root given with dots and slashes of its own.
        assert_eq!(
            normalize_exclude(b"/mnt/src/k", b"/mnt//x/../src/").unwrap(),
            b"k"
        );
    }

    #[test]
    fn the_root_and_above_are_refused() {
        let root = b"/mnt/src";
        for p in [
            &b".."[..],
            b"../x",
            b"a/../..",
            b"./../src/x",
            b"a/b/../../../c",
        ] {
            let e = normalize_exclude(p, root).unwrap_err();
            assert!(matches!(e, ExcludeError::Escapes { .. }), "{e}");
            assert!(e.to_string().contains(&fsops::show(p)), "{e}");
        }
        for p in [
            &b"."[..],
            b"",
            b"./",
            b"a/..",
            b"/mnt/src",
            b"/mnt/src/./",
            b"/mnt/src/a/..",
        ] {
            let e = normalize_exclude(p, root).unwrap_err();
            assert!(
                matches!(e, ExcludeError::IsRoot { .. }),
                "{}: {e}",
                fsops::show(p)
            );
        }
        for p in [&b"/mnt/src/../x"[..], b"/mnt/srcx", b"/mnt", b"/"] {
            let e = normalize_exclude(p, root).unwrap_err();
            assert!(matches!(e, ExcludeError::OutsideRoot { .. }), "{e}");
        }
        assert!(Filter::new(0, 0, 0, &[b"ok".to_vec(), b"..".to_vec()], root).is_err());
        // With / as the source root, / itself is the root.
        let e = normalize_exclude(b"//", b"/").unwrap_err();
        assert!(matches!(e, ExcludeError::IsRoot { .. }), "{e}");
    }

    #[test]
    fn ages_never_wrap() {
        let f = Filter::new(1_000, u64::MAX, 1u64 << 63, &[], b"/").unwrap();
        assert_eq!(f.atime_before, Some(1_000 - i64::MAX));
        assert_eq!(f.mtime_after, Some(1_000 - i64::MAX));
        let f = Filter::new(i64::MIN + 5, 10, 0, &[], b"/").unwrap();
        assert_eq!(f.atime_before, Some(i64::MIN));
    }
}
