//! The downtime pass: copy, delete and dirtime in one walk.
//!
//! Each directory is read once on each side (the copy pass's listing join):
//! a source name the target lacks is created without a target stat; one
//! both have is compared as the copy pass does; a name only the target has
//! is removed (as the delete pass does) once a stat of it on the source
//! says ENOENT, and only if both listings were read to their end.
//! Every directory's source times are recorded on the rank that walked it
//! and set after all ranks have finished every change (the walk, hardlink
//! groups, removed directories): a stop leaves them for the next pass.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{copy, delete, dirtime, Ctx, DirIds, Listed};
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Ident, Stat};
use crate::manifest::{Action, Skip};

#[derive(Debug, Serialize, Deserialize)]
pub enum Item {
    /// A directory on both sides (or only on the source in a dry run).
    Dir { rel: Vec<u8>, ids: DirIds },
    /// The copy pass's work: batches, chunks, hardlinks.
    Copy(copy::Item),
    /// The delete pass's work: doomed subtrees.
    Delete(delete::Item),
    /// Entries of one directory a change journal named (`--changes`),
    /// each with whether one appeared, went or was renamed under that
    /// name; `itself`: the directory's own attributes changed.
    Names {
        rel: Vec<u8>,
        ids: DirIds,
        names: Vec<(Vec<u8>, bool)>,
        /// Subdirectories whose own attributes changed: settled, not walked.
        subdirs: Vec<Vec<u8>>,
        itself: bool,
    },
}

/// A copy item, except that a directory found by it is walked the final way.
fn from_copy(i: copy::Item) -> Item {
    match i {
        copy::Item::Dir { rel, ids } => Item::Dir { rel, ids },
        other => Item::Copy(other),
    }
}

/// A target directory whose source times are set after the walk.
struct DirTimes {
    rel: Vec<u8>,
    id: Ident,
    src: Stat,
}

pub struct FinalPass {
    ctx: Arc<Ctx>,
    copy: copy::CopyPass,
    delete: delete::DeletePass,
    /// Directories this rank walked (see `set_dir_times`).
    dirs: Mutex<Vec<DirTimes>>,
}

impl FinalPass {
    pub fn new(copy: copy::CopyPass, delete: delete::DeletePass) -> FinalPass {
        FinalPass {
            ctx: copy.ctx.clone(),
            copy,
            delete,
            dirs: Mutex::new(Vec::new()),
        }
    }

    pub fn copy(&self) -> &copy::CopyPass {
        &self.copy
    }

    pub fn delete(&self) -> &delete::DeletePass {
        &self.delete
    }

    fn dir(&self, rel: &[u8], ids: DirIds, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let Some(((sd, s), dd)) = c.open_pair(rel, ids, c.dry_run) else {
            return;
        };
        let Some((dd, d)) = dd else {
            // A dry run below a directory the target lacks: copies to tell,
            // and the new directory's times, which the real run sets last.
            c.bump(&c.counters.dirtimes, 1);
            c.act(rel, Action::Fixed(crate::manifest::Fix::Times));
            return out.mapped(from_copy, |o| self.copy.list(rel, ids, sd, None, o));
        };
        c.bump(&c.counters.dirs, 1);
        self.copy.settle_dir(rel, sd.as_fd(), dd.as_fd(), &s, &d);
        self.record_times(rel, d.ident(), s);
        let ids = DirIds {
            src: Some(s.ident()),
            dst: Some(d.ident()),
        };
        let joined = out.mapped(from_copy, |o| self.copy.list_joined(rel, ids, (sd, dd), o));
        // Nothing is judged gone unless both listings were read to their end.
        if let (Listed::Complete, Some(only_target)) = (joined.listed, joined.only_target) {
            let (sd, dd) = (joined.sd.as_fd(), joined.dd.as_fd());
            self.remove_gone(rel, sd, dd, d.ident(), only_target, out);
        }
    }

    /// Names only the target has: removed once the source says ENOENT.
    fn remove_gone(
        &self,
        rel: &[u8],
        sd: BorrowedFd,
        dd: BorrowedFd,
        here: Ident,
        only_target: copy::Names,
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        for (name, kind) in only_target {
            if out.stopping() {
                return;
            }
            let child = fsops::join(rel, &name);
            if c.filter.has_excludes() && c.filter.excluded(&child) {
                c.bump(&c.counters.skipped, 1);
                c.act(&child, Action::Skipped(Skip::Exclude));
                continue;
            }
            c.bump(&c.counters.scanned, 1);
            match fsops::stat_at(sd, &name) {
                Err(e) if e.errno == libc::ENOENT => out.mapped(Item::Delete, |o| {
                    self.delete.remove(dd, here, &name, kind, &child, o)
                }),
                Ok(_) => {} // appeared on the source since its listing: the next pass copies it
                Err(e) => c.err(Side::Source, &child, e),
            }
        }
    }

    /// Only the named entries of directory `rel` (`--changes`). A
    /// directory the target lacks is new, and its parent's record walks it
    /// whole; one the source lacks went, and its parent's record removes it.
    fn names(
        &self,
        rel: &[u8],
        ids: DirIds,
        names: Vec<(Vec<u8>, bool)>,
        itself: bool,
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        let opened = c.open_src_dir(rel, ids.src).map(|src| {
            let dst = c.open_dst_dir(rel, None).map_err(|e| (Side::Target, e));
            (src, dst)
        });
        let ((sd, s), (dd, d)) = match opened.map_err(|e| (Side::Source, e)) {
            Ok((src, Ok(dst))) => (src, dst),
            Ok((_, Err((side, e)))) | Err((side, e)) if !e.is_not_found() => {
                return c.err(side, rel, e)
            }
            _ => return,
        };
        c.bump(&c.counters.dirs, 1);
        if itself {
            self.copy.settle_dir(rel, sd.as_fd(), dd.as_fd(), &s, &d);
        }
        self.record_times(rel, d.ident(), s);
        let ids = DirIds {
            src: Some(s.ident()),
            dst: Some(d.ident()),
        };
        let mut files = Vec::new();
        for (name, dirent) in names {
            if out.stopping() {
                return;
            }
            // Only written or changed in place: still there, the copy looks.
            if !dirent {
                files.push(name);
                continue;
            }
            let child = fsops::join(rel, &name);
            match fsops::stat_at(sd.as_fd(), &name) {
                Err(e) if e.errno == libc::ENOENT => {
                    self.gone(dd.as_fd(), d.ident(), &name, &child, out)
                }
                Ok(st) if st.kind == fsops::Kind::Dir => {
                    self.renamed_dir(rel, (sd.as_fd(), dd.as_fd()), &name, out)
                }
                Ok(_) => files.push(name),
                Err(e) => c.err(Side::Source, &child, e),
            }
        }
        if !files.is_empty() {
            let b = super::Batch {
                dir: rel.to_vec(),
                ids,
                names: files,
                absent: false,
                inos: Vec::new(),
            };
            // In the directory already open: no second open of each side.
            let dd = Some((dd.as_fd(), &d));
            out.mapped(from_copy, |o| self.copy.batch_in(sd.as_fd(), dd, &b, o));
        }
    }

    /// A name the source just said ENOENT for: removed from the target as
    /// the delete pass removes (unless excluded).
    fn gone(
        &self,
        dd: BorrowedFd,
        here: Ident,
        name: &[u8],
        child: &[u8],
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        if c.filter.has_excludes() && c.filter.excluded(child) {
            c.bump(&c.counters.skipped, 1);
            return c.act(child, Action::Skipped(Skip::Exclude));
        }
        c.bump(&c.counters.scanned, 1);
        out.mapped(Item::Delete, |o| {
            self.delete.remove(dd, here, name, None, child, o)
        });
    }

    /// Subdirectories of `rel` whose own owner, mode, xattrs or times
    /// changed: settled and their times recorded, not walked (their
    /// entries, if changed, have records of their own). One the target
    /// lacks is walked as new.
    fn settle_subdirs(&self, rel: &[u8], subdirs: Vec<Vec<u8>>, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        for name in subdirs {
            let child = fsops::join(rel, &name);
            let (sd, s) = match c.open_src_dir(&child, None) {
                Ok(v) => v,
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    c.err(Side::Source, &child, e);
                    continue;
                }
            };
            match c.open_dst_dir(&child, None) {
                Ok((dd, d)) => {
                    self.copy.settle_dir(&child, sd.as_fd(), dd.as_fd(), &s, &d);
                    self.record_times(&child, d.ident(), s);
                }
                Err(e) if e.is_not_found() => {
                    let parents = c
                        .open_src_dir(rel, None)
                        .and_then(|(ps, _)| c.open_dst_dir(rel, None).map(|(pd, _)| (ps, pd)));
                    match parents {
                        Ok((ps, pd)) => self.renamed_dir(rel, (ps.as_fd(), pd.as_fd()), &name, out),
                        Err(e) => c.err(Side::Target, rel, e),
                    }
                }
                Err(e) => c.err(Side::Target, &child, e),
            }
        }
    }

    /// A directory appeared, or was renamed, under `name`: walked whole
    /// (created on the target if needed), as a new directory is.
    fn renamed_dir(
        &self,
        rel: &[u8],
        (sd, dd): (BorrowedFd, BorrowedFd),
        name: &[u8],
        out: &mut Emitter<'_, Item>,
    ) {
        let child = fsops::join(rel, name);
        if let Some(ids) = self
            .copy
            .make_child_dir(sd, Some(dd), name, &child, None, false)
        {
            out.push(Item::Dir { rel: child, ids });
        }
    }

    fn record_times(&self, rel: &[u8], id: Ident, src: Stat) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(DirTimes {
                rel: rel.to_vec(),
                id,
                src,
            });
    }

    /// After every change of the pass on every rank: the source times of
    /// each directory this rank walked (deepest first, though no order is
    /// needed once nothing else changes).
    pub fn set_dir_times(&self) {
        let c = &self.ctx;
        let mut dirs = std::mem::take(&mut *self.dirs.lock().unwrap_or_else(|p| p.into_inner()));
        dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.iter().filter(|&&b| b == b'/').count()));
        for d in dirs {
            // A dry run says which times would be set (set_dir changes nothing then).
            match c.open_dst_dir(&d.rel, Some(d.id).filter(|_| !d.rel.is_empty())) {
                Ok((fd, now)) => dirtime::set_dir(c, fd.as_fd(), &d.rel, &d.src, &now),
                Err(e) if c.dry_run && e.is_not_found() => {}
                Err(e) => c.err(Side::Target, &d.rel, e),
            }
        }
    }
}

impl Processor for FinalPass {
    type Item = Item;

    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        match item {
            Item::Dir { rel, ids } => self.dir(&rel, ids, out),
            Item::Copy(i) => out.mapped(from_copy, |o| self.copy.process(i, o)),
            Item::Delete(i) => out.mapped(Item::Delete, |o| self.delete.process(i, o)),
            Item::Names {
                rel,
                ids,
                names,
                subdirs,
                itself,
            } => {
                self.names(&rel, ids, names, itself, out);
                self.settle_subdirs(&rel, subdirs, out);
            }
        }
    }

    fn is_branch(&self, item: &Item) -> bool {
        match item {
            Item::Dir { .. } => true,
            Item::Copy(i) => self.copy.is_branch(i),
            Item::Delete(i) => self.delete.is_branch(i),
            Item::Names { .. } => true,
        }
    }
    fn describe(&self, item: &Item) -> String {
        match item {
            Item::Dir { rel, .. } => format!("sync {}", fsops::show(rel)),
            Item::Copy(i) => self.copy.describe(i),
            Item::Delete(i) => self.delete.describe(i),
            Item::Names { rel, names, .. } => {
                format!("{} changed entries of {}", names.len(), fsops::show(rel))
            }
        }
    }
}
