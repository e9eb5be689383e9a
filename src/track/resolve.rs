//! From a journal's handles to the directories of the source tree that the
//! final pass visits: each handle is opened again by identity and named by
//! where it is now (`/proc/self/fd`), never by a path seen when it changed.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use super::handle::Handle;
use super::journal::{Journal, Watched};
use super::{Change, TrackError};
use crate::fsops::{self, Ident, Kind};

/// The tree a tracker watches, as its journal names it.
pub fn watched(root: &Path) -> Result<Watched, TrackError> {
    let fd = fsops::open_root(root).map_err(|e| TrackError::os(root, e.op, e.errno))?;
    watched_fd(fd.as_fd()).map_err(|e| TrackError::os(root, e.op, e.errno))
}

pub fn watched_fd(fd: BorrowedFd) -> Result<Watched, fsops::OsError> {
    let st = fsops::fstat(fd)?;
    let sfs = rustix::fs::fstatfs(fd).map_err(|e| fsops::OsError {
        op: "fstatfs",
        errno: e.raw_os_error(),
    })?;
    // SAFETY: fsid_t is two C ints (repr(C), 8 bytes, no padding), which
    // is what fanotify reports as the event's fsid; any bit pattern is valid.
    let fsid: [u8; 8] = unsafe { std::mem::transmute(sfs.f_fsid) };
    Ok(Watched {
        fsid: u64::from_ne_bytes(fsid),
        root_dev: st.dev,
        root_ino: st.ino,
    })
}

/// What changed in one source directory.
#[derive(Debug, Default)]
pub struct DirWork {
    pub id: Option<Ident>,
    /// Names to look at, and whether an entry appeared, went or was
    /// renamed under that name (then a directory there is walked whole).
    pub names: BTreeMap<Vec<u8>, bool>,
    /// Subdirectories whose own attributes changed (settled, not walked).
    pub subdirs: std::collections::BTreeSet<Vec<u8>>,
    /// The directory's own attributes changed.
    pub itself: bool,
}

/// The journal's changes inside the tree, by directory (relative path).
#[derive(Debug, Default)]
pub struct Plan {
    pub dirs: BTreeMap<Vec<u8>, DirWork>,
    /// Handles that no longer open (gone: their removal is recorded in
    /// their parent) or that are outside the tree.
    pub skipped: u64,
}

/// Where `fd` is now, as an absolute path; None if it was removed.
fn path_of(fd: BorrowedFd) -> Option<Vec<u8>> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let p = std::fs::read_link(link).ok()?;
    let b = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
    let gone = b.ends_with(b" (deleted)") && fsops::fstat(fd).map_or(true, |s| s.nlink == 0);
    (!gone).then_some(b)
}

/// `path` relative to the tree's root path `root`; None if outside it.
fn relative(path: &[u8], root: &[u8]) -> Option<Vec<u8>> {
    if path == root {
        return Some(Vec::new());
    }
    let root = if root == b"/" { &b""[..] } else { root };
    path.strip_prefix(root)?
        .strip_prefix(b"/")
        .map(<[u8]>::to_vec)
}

/// Where a handle's inode is now: path relative to the root, identity, kind.
type Located = (Vec<u8>, Ident, Kind);

/// Where FID `fid` is now under `root`; None if it is gone (its removal is
/// recorded in its parent) or outside the tree.
fn locate_fid(
    fids: &super::changelog::FidPaths,
    fid: &lustre_sys::lu_fid,
    root: BorrowedFd,
) -> Result<Option<Located>, TrackError> {
    let Some(rel) = fids.path(fid)? else {
        return Ok(None);
    };
    let st = if rel.is_empty() {
        fsops::fstat(root)
    } else {
        let (parent, leaf) = fsops::parent_and_name(&rel);
        fsops::open_dir_beneath(root, parent).and_then(|d| fsops::stat_at(d.as_fd(), leaf))
    };
    match st {
        Ok(st) => Ok(Some((rel, st.ident(), st.kind))),
        Err(e) if e.errno == libc::ENOENT => Ok(None),
        Err(e) => Err(TrackError::os(
            Path::new(&super::changelog::fid_text(fid)),
            e.op,
            e.errno,
        )),
    }
}

/// Resolve every change of `j` against the source root `root`; FIDs with
/// `fids` (a journal with FIDs and no way to resolve them is an error).
pub fn plan(
    j: &Journal,
    root: BorrowedFd,
    fids: Option<&super::changelog::FidPaths>,
) -> Result<Plan, TrackError> {
    let root_path =
        path_of(root).ok_or_else(|| TrackError::Other("source root: no path".into()))?;
    let mut plan = Plan::default();
    let mut seen: BTreeMap<&Handle, Option<Located>> = BTreeMap::new();
    let locate = |h: &'_ Handle| -> Result<Option<Located>, TrackError> {
        if h.fsid != j.watched.fsid {
            return Ok(None);
        }
        if let Some(fid) = h.as_fid() {
            let fids = fids.ok_or_else(|| {
                TrackError::Other("it names Lustre FIDs and liblustreapi is not loaded".into())
            })?;
            return locate_fid(fids, &fid, root);
        }
        Ok(located(h, root, &root_path))
    };
    for c in &j.changes {
        let (h, name, dirent, ondir) = match c {
            Change::Entry {
                dir,
                name,
                dirent,
                ondir,
            } => (dir, Some(name), *dirent, *ondir),
            Change::Itself(h) => (h, None, false, false),
            Change::Loss(_) => continue,
        };
        let found = match seen.get(h) {
            Some(f) => f.clone(),
            None => {
                let f = locate(h)?;
                seen.insert(h, f.clone());
                f
            }
        };
        let Some((rel, id, kind)) = found else {
            plan.skipped += 1;
            continue;
        };
        match (name, kind) {
            (Some(name), Kind::Dir) => {
                let w = plan.dirs.entry(rel).or_default();
                w.id = Some(id);
                if ondir && !dirent {
                    w.subdirs.insert(name.clone());
                } else {
                    *w.names.entry(name.clone()).or_default() |= dirent;
                }
            }
            (None, Kind::Dir) if rel.is_empty() => {
                let w = plan.dirs.entry(rel).or_default();
                w.id = Some(id);
                w.itself = true;
            }
            // A directory itself: settled from its parent.
            (None, Kind::Dir) => {
                let (parent, leaf) = fsops::parent_and_name(&rel);
                let w = plan.dirs.entry(parent.to_vec()).or_default();
                w.subdirs.insert(leaf.to_vec());
            }
            // Anything else: an entry of its parent.
            (_, _) => {
                let (parent, leaf) = fsops::parent_and_name(&rel);
                let w = plan.dirs.entry(parent.to_vec()).or_default();
                w.names.entry(leaf.to_vec()).or_default();
            }
        }
    }
    plan.drop_walked();
    Ok(plan)
}

/// Where kernel handle `h` is now under `root` (at `root_path`).
fn located(h: &Handle, root: BorrowedFd, root_path: &[u8]) -> Option<Located> {
    let fd = h.open(root).ok()?;
    let st = fsops::fstat(fd.as_fd()).ok()?;
    let rel = relative(&path_of(fd.as_fd())?, root_path)?;
    Some((rel, st.ident(), st.kind))
}

impl Plan {
    /// A name that appeared, went or was renamed is walked whole if it is
    /// a directory: no other item may visit a directory below it, or two
    /// would change one directory at once (one removing the other's temp
    /// file as a name the source lacks).
    fn drop_walked(&mut self) {
        let walked: std::collections::HashSet<Vec<u8>> = self
            .dirs
            .iter()
            .flat_map(|(rel, w)| {
                w.names
                    .iter()
                    .filter(|(_, &dirent)| dirent)
                    .map(move |(n, _)| fsops::join(rel, n))
            })
            .collect();
        let below = |rel: &[u8]| {
            let cuts = rel
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'/')
                .map(|(i, _)| i);
            walked.contains(rel) || cuts.into_iter().any(|i| walked.contains(&rel[..i]))
        };
        let before = self.dirs.len();
        self.dirs.retain(|rel, _| !below(rel));
        self.skipped += (before - self.dirs.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative(b"/a/b", b"/a"), Some(b"b".to_vec()));
        assert_eq!(relative(b"/a", b"/a"), Some(vec![]));
        assert_eq!(relative(b"/ab", b"/a"), None);
        assert_eq!(relative(b"/x/y", b"/"), Some(b"x/y".to_vec()));
    }
}
