//! Delete pass: remove from the target what is definitely gone from the source.
//!
//! "Definitely" means the source said ENOENT for that name inside a source
//! directory we could open. Any other answer (EIO, EACCES, ESTALE, ENOTCONN…)
//! is reported and the entry is kept. Doomed directories are emptied by all
//! ranks in parallel (phase 1); the empty directories are then removed deepest
//! first, one depth level at a time across all ranks (phase 2).
//!
//! With `--max-delete N` the walk first only plans: every entry it would
//! remove (whole doomed subtrees included) is counted, and the
//! non-directories recorded by their directory. Only if the whole job's
//! count is at most N are the recorded entries removed (nothing else), so
//! the cap is one global cap, not per-rank shares.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{resume, Batch, Batcher, Ctx, DirIds};
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Ident, Kind, Stat};
use crate::manifest::Action;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub enum Item {
    /// A target directory whose source counterpart exists: compare entries.
    Dir { rel: Vec<u8>, ids: DirIds },
    /// A target directory to empty completely: its identity and its parent's.
    Purge {
        rel: Vec<u8>,
        id: Ident,
        parent: Option<Ident>,
    },
    /// Non-directories in a purged directory.
    PurgeBatch(Batch),
}

/// A target directory: its path and the identity it must still have.
type DirKey = (Vec<u8>, Option<Ident>);

/// What a planning walk found due on this rank.
#[derive(Default)]
struct Plan {
    /// Non-directories to unlink, by directory.
    files: HashMap<DirKey, Vec<Vec<u8>>>,
    /// Entries due, directories included (each is one rmdir in phase 2).
    due: u64,
    /// Names are recorded only up to this many: past it the job is over its
    /// cap whatever the other ranks found, so memory stays bounded.
    cap: u64,
}

pub struct DeletePass {
    pub ctx: Arc<Ctx>,
    /// With --max-delete: what the planning walk found.
    plan: Option<Mutex<Plan>>,
    /// The walk plans instead of removing (until `take_plan`).
    planning: AtomicBool,
    /// Directories emptied by this rank (with their parent's identity),
    /// removed in phase 2.
    purged: Mutex<Vec<(Vec<u8>, Option<Ident>)>>,
}

impl DeletePass {
    /// `max_delete`: plan first (see the module doc); None removes at once.
    pub fn new(ctx: Arc<Ctx>, max_delete: Option<u64>) -> DeletePass {
        DeletePass {
            ctx,
            plan: max_delete.map(|cap| {
                Mutex::new(Plan {
                    cap,
                    ..Default::default()
                })
            }),
            planning: AtomicBool::new(max_delete.is_some()),
            purged: Mutex::new(Vec::new()),
        }
    }

    fn plan(&self) -> Option<std::sync::MutexGuard<'_, Plan>> {
        if !self.planning.load(Ordering::Relaxed) {
            return None;
        }
        let p = self.plan.as_ref()?;
        Some(p.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// In a planning walk: record non-directories `names` of directory
    /// `dir` (`id`) as due and return true; else false (remove them now).
    fn planned(&self, dir: &[u8], id: Option<Ident>, names: &[Vec<u8>]) -> bool {
        let Some(mut p) = self.plan() else {
            return false;
        };
        p.due += names.len() as u64;
        if p.due <= p.cap {
            let slot = p.files.entry((dir.to_vec(), id)).or_default();
            slot.extend(names.iter().cloned());
        }
        true
    }

    /// Entries this rank's planning walk found due (0 without a plan).
    pub fn due(&self) -> u64 {
        self.plan().map_or(0, |p| p.due)
    }

    /// End the planning: the recorded removals as work items of at most
    /// `batch` names; from now on the pass removes what it is given.
    pub fn take_plan(&self) -> Vec<Item> {
        let files = self.plan().map(|mut p| std::mem::take(&mut p.files));
        self.planning.store(false, Ordering::Relaxed);
        let mut items = Vec::new();
        for ((dir, id), names) in files.unwrap_or_default() {
            for part in names.chunks(self.ctx.batch.max(1)) {
                items.push(Item::PurgeBatch(Batch {
                    dir: dir.clone(),
                    ids: DirIds { src: None, dst: id },
                    names: part.to_vec(),
                    absent: false,
                    inos: Vec::new(),
                }));
            }
        }
        items
    }

    fn dir(&self, rel: &[u8], ids: DirIds, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let Some(((sd, _), Some((dd, d)))) = c.open_pair(rel, ids, false) else {
            return;
        };
        c.bump(&c.counters.dirs, 1);
        let here = d.ident();
        let mut rd = fsops::DirReader::new(dd);
        c.list_entries(
            &mut rd,
            rel,
            Side::Target,
            true,
            out,
            |rd, e, child, out| {
                c.bump(&c.counters.scanned, 1);
                match fsops::stat_at(sd.as_fd(), &e.name) {
                    Ok(s) if s.kind == Kind::Dir && rd.kind(&e).ok() == Some(Kind::Dir) => {
                        if let Some(ids) = self.child_ids(rd.fd(), &e.name, &child, &s) {
                            out.push(Item::Dir { rel: child, ids });
                        }
                    }
                    Ok(_) => {}
                    // A big file's partial copy a stopped pass left: kept
                    // while its source file is there (`passes::resume`).
                    Err(err)
                        if err.errno == libc::ENOENT
                            && resume::is_partial_name(&e.name)
                            && resume::still_wanted(sd.as_fd(), rd.fd(), &e.name) => {}
                    Err(err) if err.errno == libc::ENOENT => {
                        self.remove(rd.fd(), here, &e.name, e.kind, &child, out)
                    }
                    Err(err) => c.err(Side::Source, &child, err),
                }
            },
        );
    }

    /// Identities of a directory present on both sides, or None (reported)
    /// if it must not be walked: a root of the other tree, or not a
    /// directory on the target any more.
    fn child_ids(&self, dd: BorrowedFd, name: &[u8], rel: &[u8], s: &Stat) -> Option<DirIds> {
        let c = &self.ctx;
        if c.is_other_root(Side::Source, s) {
            c.report_other_root(Side::Source, rel);
            return None;
        }
        match fsops::stat_at(dd, name) {
            Ok(d) if c.is_other_root(Side::Target, &d) => {
                c.report_other_root(Side::Target, rel);
                None
            }
            Ok(d) if d.kind == Kind::Dir => Some(DirIds {
                src: Some(s.ident()),
                dst: Some(d.ident()),
            }),
            Ok(_) => None, // no longer a directory: the copy pass handles type changes
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                c.err(Side::Target, rel, e);
                None
            }
        }
    }

    pub(crate) fn remove(
        &self,
        dd: BorrowedFd,
        here: Ident,
        name: &[u8],
        kind: Option<Kind>,
        rel: &[u8],
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        let st = match kind {
            Some(k) if k != Kind::Dir => None,
            _ => match fsops::stat_at(dd, name) {
                Ok(s) => Some(s),
                Err(e) if e.is_not_found() => return,
                Err(e) => return c.err(Side::Target, rel, e),
            },
        };
        let is_dir = st.is_some_and(|s| s.kind == Kind::Dir);
        // A dry run goes the real run's way, reading only: a doomed
        // directory is listed whole and counted entry by entry (as the real
        // run removes it, and as --max-delete counts it).
        if let Some(s) = st.filter(|_| is_dir) {
            if c.is_other_root(Side::Target, &s) {
                return c.report_other_root(Side::Target, rel);
            }
            out.push(Item::Purge {
                rel: rel.to_vec(),
                id: s.ident(),
                parent: Some(here),
            });
            return;
        }
        let parent = fsops::parent_and_name(rel).0;
        if self.planned(parent, Some(here), &[name.to_vec()]) {
            return;
        }
        if c.dry_run {
            c.bump(&c.counters.deleted, 1);
            return c.act(rel, Action::Removed { dir: false });
        }
        match fsops::unlink_at(dd, name) {
            Ok(()) => {
                c.bump(&c.counters.deleted, 1);
                c.act(rel, Action::Removed { dir: false });
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => c.err(Side::Target, rel, e),
        }
    }

    fn purge(&self, rel: &[u8], id: Ident, parent: Option<Ident>, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let (dd, _) = match c.open_dst_dir(rel, Some(id)) {
            Ok(fd) => fd,
            Err(e) => return c.err(Side::Target, rel, e),
        };
        if let Some(mut p) = self.plan() {
            p.due += 1; // its rmdir in phase 2
        }
        self.purged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((rel.to_vec(), parent));
        let mut rd = fsops::DirReader::new(dd);
        let ids = DirIds {
            src: None,
            dst: Some(id),
        };
        let mut batch = Batcher::new(rel, ids, c.batch, Item::PurgeBatch);
        // Not filtered: a doomed directory goes whole.
        let done = c.list_entries(
            &mut rd,
            rel,
            Side::Target,
            false,
            out,
            |rd, e, child, out| {
                // Unknown: try it as a file; unlink of a directory fails and is reported.
                if rd.kind(&e).unwrap_or(Kind::File) != Kind::Dir {
                    return batch.push(e.name, out);
                }
                match fsops::stat_at(rd.fd(), &e.name) {
                    Ok(s) if c.is_other_root(Side::Target, &s) => {
                        c.report_other_root(Side::Target, &child)
                    }
                    Ok(s) => out.push(Item::Purge {
                        rel: child,
                        id: s.ident(),
                        parent: Some(id),
                    }),
                    Err(err) if err.is_not_found() => {}
                    Err(err) => c.err(Side::Target, &child, err),
                }
            },
        );
        if done != super::Listed::Stopped {
            batch.finish(out);
        }
    }

    fn purge_batch(&self, b: &Batch, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        if self.planned(&b.dir, b.ids.dst, &b.names) {
            return;
        }
        let (dd, _) = match c.open_dst_dir(&b.dir, b.ids.dst) {
            Ok(fd) => fd,
            Err(e) => return c.err(Side::Target, &b.dir, e),
        };
        for name in &b.names {
            if out.stopping() {
                return;
            }
            let rel = || fsops::join(&b.dir, name);
            if c.dry_run {
                c.bump(&c.counters.deleted, 1);
                c.act(&rel(), Action::Removed { dir: false });
                continue;
            }
            match fsops::unlink_at(dd.as_fd(), name) {
                Ok(()) => {
                    c.bump(&c.counters.deleted, 1);
                    c.act(&rel(), Action::Removed { dir: false });
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => c.err(Side::Target, &rel(), e),
            }
        }
    }

    /// Depth (number of components) of every directory this rank emptied.
    pub fn purged_depths(&self) -> u64 {
        let p = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        p.iter().map(|(r, _)| depth(r)).max().unwrap_or(0)
    }

    /// Phase 2, one level: remove the emptied directories at `level`.
    pub fn remove_level(&self, level: u64) {
        let c = &self.ctx;
        let p = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        for (rel, pid) in p.iter().filter(|(r, _)| depth(r) == level) {
            let (parent, name) = fsops::parent_and_name(rel);
            let r = match c.dry_run {
                true => Ok(()),
                false => c
                    .open_dst_dir(parent, *pid)
                    .and_then(|(dd, _)| fsops::rmdir_at(dd.as_fd(), name)),
            };
            match r {
                Ok(()) => {
                    c.bump(&c.counters.deleted, 1);
                    c.act(rel, Action::Removed { dir: true });
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => c.err(Side::Target, rel, e),
            }
        }
    }
}

fn depth(rel: &[u8]) -> u64 {
    1 + rel.iter().filter(|&&b| b == b'/').count() as u64
}

impl Processor for DeletePass {
    type Item = Item;
    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        match item {
            Item::Dir { rel, ids } => self.dir(&rel, ids, out),
            Item::Purge { rel, id, parent } => self.purge(&rel, id, parent, out),
            Item::PurgeBatch(b) => self.purge_batch(&b, out),
        }
    }
    fn is_branch(&self, item: &Item) -> bool {
        !matches!(item, Item::PurgeBatch(_))
    }
    fn describe(&self, item: &Item) -> String {
        match item {
            Item::Dir { rel, .. } => format!("compare {}", fsops::show(rel)),
            Item::Purge { rel, .. } => format!("purge {}", fsops::show(rel)),
            Item::PurgeBatch(b) => {
                format!("delete {} in {}", b.names.len(), fsops::show(&b.dir))
            }
        }
    }
}
