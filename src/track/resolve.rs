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
    /// Names under which a directory appeared, went or was renamed: where
    /// a rename on the source may be followed on the target.
    pub moved: std::collections::BTreeSet<Vec<u8>>,
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
    /// Filesystems mounted inside the tree, walked whole.
    pub mounts: u64,
}

/// Where `fd` is now, as an absolute path; Ok(None) if it was removed.
/// A path that cannot be read (longer than PATH_MAX) is a doubt.
fn path_of(fd: BorrowedFd) -> Result<Option<Vec<u8>>, TrackError> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let p = std::fs::read_link(&link).map_err(|e| {
        TrackError::Other(format!(
            "a changed directory's path could not be read ({e})"
        ))
    })?;
    let b = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
    let gone = b.ends_with(b" (deleted)") && fsops::fstat(fd).map_or(true, |s| s.nlink == 0);
    Ok((!gone).then_some(b))
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

/// A handle as the plan sees it.
#[derive(Clone)]
enum Found {
    In(Located),
    /// Removed (its removal is recorded in its parent), or on another
    /// filesystem, or outside the tree.
    Not,
}

/// Where handle `h` is now. Only a handle that no longer opens (ESTALE,
/// ENOENT) or an inode with no names left is gone; any other failure is a
/// doubt (the caller walks).
fn locate(h: &Handle, root: BorrowedFd, root_path: &[u8], fsid: u64) -> Result<Found, TrackError> {
    if h.fsid != fsid {
        return Ok(Found::Not);
    }
    let fd = match h.open(root) {
        Ok(fd) => fd,
        Err(e) if matches!(e.errno, libc::ESTALE | libc::ENOENT) => return Ok(Found::Not),
        Err(e) => {
            return Err(TrackError::Other(format!(
                "a changed inode could not be opened ({e})"
            )))
        }
    };
    let st = fsops::fstat(fd.as_fd())
        .map_err(|e| TrackError::Other(format!("a changed inode could not be read ({e})")))?;
    let Some(path) = path_of(fd.as_fd())? else {
        return Ok(Found::Not);
    };
    Ok(match relative(&path, root_path) {
        Some(rel) => Found::In((rel, st.ident(), st.kind)),
        None => Found::Not,
    })
}

/// An entry changed in directory `h` outside the tree: a doubt if it is a
/// file with other names (one may be inside: the change is theirs too).
fn outside_link(h: &Handle, name: &[u8], root: BorrowedFd) -> Result<(), TrackError> {
    let Ok(fd) = h.open(root) else { return Ok(()) };
    match fsops::stat_at(fd.as_fd(), name) {
        Ok(s) if s.kind != Kind::Dir && s.nlink > 1 => Err(TrackError::Other(
            "a hardlinked file changed through a name outside the tree".into(),
        )),
        _ => Ok(()),
    }
}

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
        path_of(root)?.ok_or_else(|| TrackError::Other("source root: no path".into()))?;
    let mut plan = Plan::default();
    let mut seen: BTreeMap<&Handle, Found> = BTreeMap::new();
    let locate = |h: &'_ Handle| -> Result<Found, TrackError> {
        let Some(fid) = h.as_fid().filter(|_| h.fsid == j.watched.fsid) else {
            return locate(h, root, &root_path, j.watched.fsid);
        };
        let fids = fids.ok_or_else(|| {
            TrackError::Other("it names Lustre FIDs and liblustreapi is not loaded".into())
        })?;
        Ok(locate_fid(fids, &fid, root)?.map_or(Found::Not, Found::In))
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
        let Found::In((rel, id, kind)) = found else {
            if let (Some(name), false) = (name, ondir) {
                outside_link(h, name, root)?;
            }
            plan.skipped += 1;
            continue;
        };
        plan.place((rel, id, kind), name, dirent, ondir);
    }
    // Filesystems mounted inside the tree are not watched (the mark is the
    // source's filesystem): a full walk goes into them, so they are walked.
    for rel in mounts_below(&root_path) {
        let (parent, leaf) = fsops::parent_and_name(&rel);
        let w = plan.dirs.entry(parent.to_vec()).or_default();
        w.names.insert(leaf.to_vec(), true);
        plan.mounts += 1;
    }
    plan.drop_walked();
    Ok(plan)
}

/// Mount points strictly below `root` (relative paths), from
/// /proc/self/mountinfo (its fifth field, with `\ooo` escapes).
fn mounts_below(root: &[u8]) -> Vec<Vec<u8>> {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape_mount)
        .filter_map(|p| relative(&p, root).filter(|r| !r.is_empty()))
        .collect()
}

fn unescape_mount(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let oct = field
            .get(i + 1..i + 4)
            .filter(|o| field[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(o) => {
                out.push(
                    o.iter()
                        .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

impl Plan {
    /// One located change: entry `name` (None: the object itself) of the
    /// object at `rel`, by the kind of change it was.
    fn place(
        &mut self,
        (rel, id, kind): Located,
        name: Option<&Vec<u8>>,
        dirent: bool,
        ondir: bool,
    ) {
        match (name, kind) {
            (Some(name), Kind::Dir) => {
                let w = self.dirs.entry(rel).or_default();
                w.id = Some(id);
                if ondir && !dirent {
                    w.subdirs.insert(name.clone());
                } else {
                    *w.names.entry(name.clone()).or_default() |= dirent;
                }
                if ondir && dirent {
                    w.moved.insert(name.clone());
                }
            }
            (None, Kind::Dir) if rel.is_empty() => {
                let w = self.dirs.entry(rel).or_default();
                w.id = Some(id);
                w.itself = true;
            }
            // A directory itself: settled from its parent.
            (None, Kind::Dir) => {
                let (parent, leaf) = fsops::parent_and_name(&rel);
                let w = self.dirs.entry(parent.to_vec()).or_default();
                w.subdirs.insert(leaf.to_vec());
            }
            // Anything else: an entry of its parent.
            (_, _) => {
                let (parent, leaf) = fsops::parent_and_name(&rel);
                let w = self.dirs.entry(parent.to_vec()).or_default();
                w.names.entry(leaf.to_vec()).or_default();
            }
        }
    }

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
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount(br"/a\040b\012c\134"), b"/a b\nc\\".to_vec());
        assert_eq!(unescape_mount(br"/x\09"), br"/x\09".to_vec());
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative(b"/a/b", b"/a"), Some(b"b".to_vec()));
        assert_eq!(relative(b"/a", b"/a"), Some(vec![]));
        assert_eq!(relative(b"/ab", b"/a"), None);
        assert_eq!(relative(b"/x/y", b"/"), Some(b"x/y".to_vec()));
    }
}
