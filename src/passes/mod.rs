//! The three passes. Each is a `Processor` for the engine: policy only; every
//! syscall goes through `fsops`.

pub mod changes;
pub(crate) mod compare;
pub mod copy;
pub mod delete;
pub mod dirtime;
pub mod final_pass;
pub mod named;
pub mod one_writer;
pub mod resume;
pub mod sink;
pub mod verify;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::engine::Emitter;
use crate::errlog::{ErrorLog, Side};
use crate::filter::Filter;
use crate::fsops::{self, Ident, OsError, Stat};
use crate::manifest::{Action, Skip};
use crate::stats::{Counters, Histograms};
use serde::{Deserialize, Serialize};

/// The job lock in a target root (see `run`): never copied, deleted or
/// counted; a source that was once a target may hold one too, so the name is
/// skipped at the root of both trees.
pub const JOB_LOCK: &[u8] = b".lmpi.lock";

/// Whether `name`, listed in directory `rel`, is the job lock.
pub fn is_job_lock(rel: &[u8], name: &[u8]) -> bool {
    rel.is_empty() && name == JOB_LOCK
}

/// How a listing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    /// Read to its end.
    Complete,
    /// A read error (reported) cut it short: what was read is still valid.
    Partly,
    /// The pass is stopping: leave the rest.
    Stopped,
}

/// A directory opened and checked: its fd and the fstat that checked it.
pub type Opened = (OwnedFd, Stat);

/// The identities a directory's parent saw on each side; None for a root,
/// or for a target directory a dry run has not created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DirIds {
    pub src: Option<Ident>,
    pub dst: Option<Ident>,
}

/// The two roots' identities, so neither walk ever enters the other tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct RootIds {
    pub src: Ident,
    pub dst: Ident,
}

impl RootIds {
    pub fn of(src: BorrowedFd, dst: BorrowedFd) -> Result<RootIds, OsError> {
        Ok(RootIds {
            src: fsops::fstat(src)?.ident(),
            dst: fsops::fstat(dst)?.ident(),
        })
    }
}

/// What every pass of one rank shares.
pub struct Ctx {
    pub src: OwnedFd,
    pub dst: OwnedFd,
    pub roots: RootIds,
    pub rank: usize,
    pub size: usize,
    pub counters: Arc<Counters>,
    pub hist: Arc<Histograms>,
    pub log: ErrorLog,
    pub filter: Filter,
    /// Only decides whether to act: what is done, or would be, goes to `act`.
    pub dry_run: bool,
    /// Where every action goes (see `act`).
    pub sink: Arc<sink::Sink>,
    pub batch: usize,
    pub is_root: bool,
}

impl Ctx {
    pub fn src(&self) -> BorrowedFd<'_> {
        self.src.as_fd()
    }
    pub fn dst(&self) -> BorrowedFd<'_> {
        self.dst.as_fd()
    }
    /// Open source directory `rel`, checked to be `want` (what its parent
    /// listed; None only for the root).
    pub fn open_src_dir(&self, rel: &[u8], want: Option<Ident>) -> Result<Opened, OsError> {
        fsops::open_dir_checked(self.src(), rel, want)
    }
    pub fn open_dst_dir(&self, rel: &[u8], want: Option<Ident>) -> Result<Opened, OsError> {
        fsops::open_dir_checked(self.dst(), rel, want)
    }
    /// Open `rel` on both sides, source first (if it cannot be opened,
    /// nothing below it is judged). A failure is reported, naming its side,
    /// and gives None. With `missing_target_ok` (a dry run walking directories
    /// the target does not have yet) a missing target gives `(sd, None)`.
    pub fn open_pair(
        &self,
        rel: &[u8],
        ids: DirIds,
        missing_target_ok: bool,
    ) -> Option<(Opened, Option<Opened>)> {
        let sd = match self.open_src_dir(rel, ids.src) {
            Ok(fd) => fd,
            Err(e) => {
                self.err(Side::Source, rel, e);
                return None;
            }
        };
        if missing_target_ok && ids.dst.is_none() && !rel.is_empty() {
            return Some((sd, None));
        }
        match self.open_dst_dir(rel, ids.dst) {
            Ok(fd) => Some((sd, Some(fd))),
            Err(e) if missing_target_ok && e.is_not_found() => Some((sd, None)),
            Err(e) => {
                self.err(Side::Target, rel, e);
                None
            }
        }
    }
    /// A directory met inside one tree that is the other tree's root (a bind
    /// mount, a nested mount): never walked, or the copy would feed itself.
    pub fn is_other_root(&self, side: Side, st: &Stat) -> bool {
        let other = match side {
            Side::Source => self.roots.dst,
            Side::Target => self.roots.src,
        };
        st.kind == fsops::Kind::Dir && st.ident() == other
    }
    pub fn report_other_root(&self, side: Side, rel: &[u8]) {
        let what = match side {
            Side::Source => "is the target root (a bind or nested mount): not walked",
            Side::Target => "is the source root (a bind or nested mount): not walked",
        };
        self.log.error_msg(side, rel, what);
        self.failed_msg(rel, "walk");
    }
    /// The listing loop every pass shares: read `rd` to the end, report a
    /// read error (naming `side` and `rel`) and end there, skip excluded
    /// children (counted) when `filtered`, and hand every other entry and
    /// its relative path to `each`.
    pub(crate) fn list_entries<I>(
        &self,
        rd: &mut fsops::DirReader,
        rel: &[u8],
        side: Side,
        filtered: bool,
        out: &mut Emitter<'_, I>,
        mut each: impl FnMut(&fsops::DirReader, fsops::Entry, Vec<u8>, &mut Emitter<'_, I>),
    ) -> Listed {
        while let Some(e) = rd.next_entry() {
            if out.stopping() {
                return Listed::Stopped;
            }
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    self.err(side, rel, err);
                    return Listed::Partly;
                }
            };
            if is_job_lock(rel, &e.name) {
                continue;
            }
            let child = fsops::join(rel, &e.name);
            if filtered && self.filter.has_excludes() && self.filter.excluded(&child) {
                self.bump(&self.counters.skipped, 1);
                self.act(&child, Action::Skipped(Skip::Exclude));
                continue;
            }
            each(rd, e, child, out);
        }
        Listed::Complete
    }

    pub fn bump(&self, c: &std::sync::atomic::AtomicU64, n: u64) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn err(&self, side: Side, rel: &[u8], e: OsError) {
        self.act(
            rel,
            Action::Failed {
                errno: e.errno,
                call: e.op.into(),
            },
        );
        self.log.error(side, rel, e)
    }
    /// A failure without an errno (said by the caller, in words): recorded
    /// as errno 0 and `what`.
    pub fn failed_msg(&self, rel: &[u8], what: &str) {
        self.act(
            rel,
            Action::Failed {
                errno: 0,
                call: what.into(),
            },
        );
    }
    /// Report an action taken on `rel` (or, in a dry run, one that would
    /// be): the dry run's line and the manifest record come from here.
    pub fn act(&self, rel: &[u8], a: Action) {
        self.sink.act(rel, &a)
    }
}

/// Names of some entries of one directory: one work item's worth.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    pub dir: Vec<u8>,
    pub ids: DirIds,
    pub names: Vec<Vec<u8>>,
    /// The target's listing lacked these names: no target stat needed.
    pub absent: bool,
    /// With `absent`: the inode the source listing gave each name if it
    /// said "regular file" (else 0): such a file is opened and checked
    /// against it directly, without an lstat first.
    pub inos: Vec<u64>,
}

/// One directory's entries gathered into work items of `size` names each,
/// so no item (and no message) grows with the directory.
pub(crate) struct Batcher<T> {
    dir: Vec<u8>,
    ids: DirIds,
    absent: bool,
    inos: Vec<u64>,
    size: usize,
    names: Vec<Vec<u8>>,
    make: fn(Batch) -> T,
}

impl<T> Batcher<T> {
    pub fn new(dir: &[u8], ids: DirIds, size: usize, make: fn(Batch) -> T) -> Self {
        Batcher {
            dir: dir.to_vec(),
            ids,
            absent: false,
            inos: Vec::new(),
            size,
            names: Vec::new(),
            make,
        }
    }

    /// Names known to be missing on the target (from its listing).
    pub fn absent(mut self) -> Self {
        self.absent = true;
        self
    }

    /// Add a name with the inode its listing gave if it is a regular file
    /// (0: not one, or not known).
    pub fn push_listed(&mut self, name: Vec<u8>, file_ino: u64, out: &mut Emitter<'_, T>) {
        self.inos.push(file_ino);
        self.push(name, out);
    }

    /// Add a name; a full batch goes out as one item.
    pub fn push(&mut self, name: Vec<u8>, out: &mut Emitter<'_, T>) {
        self.names.push(name);
        if self.names.len() >= self.size {
            let names = std::mem::take(&mut self.names);
            let inos = std::mem::take(&mut self.inos);
            out.push((self.make)(Batch {
                dir: self.dir.clone(),
                ids: self.ids,
                names,
                absent: self.absent,
                inos,
            }));
        }
    }

    /// Send what is left.
    pub fn finish(self, out: &mut Emitter<'_, T>) {
        if !self.names.is_empty() {
            out.push((self.make)(Batch {
                dir: self.dir,
                ids: self.ids,
                names: self.names,
                absent: self.absent,
                inos: self.inos,
            }));
        }
    }
}
