//! Delete pass: remove from the target what is definitely gone from the source.
//!
//! "Definitely" means the source said ENOENT for that name inside a source
//! directory we could open. Any other answer (EIO, EACCES, ESTALE, ENOTCONN…)
//! is reported and the entry is kept. Doomed directories are emptied by all
//! ranks in parallel (phase 1); the empty directories are then removed deepest
//! first, one depth level at a time across all ranks (phase 2).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use super::{Batch, Batcher, Ctx};
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Kind};
use crate::wire::{Malformed, Reader, Wire, Writer};

#[derive(Debug)]
pub enum Item {
    /// A target directory whose source counterpart exists: compare entries.
    Dir { rel: Vec<u8> },
    /// A target directory to empty completely.
    Purge { rel: Vec<u8> },
    /// Non-directories in a purged directory.
    PurgeBatch(Batch),
}

impl Wire for Item {
    fn encode(&self, w: &mut Writer) {
        match self {
            Item::Dir { rel } => {
                w.u8(0).bytes(rel);
            }
            Item::Purge { rel } => {
                w.u8(1).bytes(rel);
            }
            Item::PurgeBatch(b) => {
                w.u8(2);
                b.encode(w);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        Ok(match r.u8()? {
            0 => Item::Dir {
                rel: r.bytes()?.to_vec(),
            },
            1 => Item::Purge {
                rel: r.bytes()?.to_vec(),
            },
            2 => Item::PurgeBatch(Batch::decode(r)?),
            _ => return Err(Malformed),
        })
    }
}

pub struct DeletePass {
    pub ctx: Ctx,
    /// Deletions this rank may still make (its share of --max-delete).
    budget: AtomicI64,
    /// Directories emptied by this rank, removed in phase 2.
    purged: Mutex<Vec<Vec<u8>>>,
}

impl DeletePass {
    pub fn new(ctx: Ctx, budget: Option<u64>) -> DeletePass {
        let b = budget
            .map(|b| b.min(i64::MAX as u64) as i64)
            .unwrap_or(i64::MAX);
        DeletePass {
            ctx,
            budget: AtomicI64::new(b),
            purged: Mutex::new(Vec::new()),
        }
    }

    pub fn budget_exhausted(&self) -> bool {
        self.budget.load(Ordering::Relaxed) < 0
    }

    /// Take one deletion from the budget; false once --max-delete is reached.
    fn allow(&self) -> bool {
        self.budget.fetch_sub(1, Ordering::Relaxed) > 0
    }

    fn dir(&self, rel: &[u8], out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let Some((sd, Some(dd))) = c.open_pair(rel, false) else {
            return;
        };
        c.bump(&c.counters.dirs, 1);
        let mut rd = fsops::DirReader::new(dd);
        while let Some(e) = rd.next_entry() {
            if out.stopping() {
                return;
            }
            let e = match e {
                Ok(e) => e,
                Err(err) => return c.err(Side::Target, rel, err),
            };
            let child = fsops::join(rel, &e.name);
            if c.filter.has_excludes() && c.filter.excluded(&child) {
                c.bump(&c.counters.skipped, 1);
                continue;
            }
            c.bump(&c.counters.scanned, 1);
            match fsops::stat_at(sd.as_fd(), &e.name) {
                Ok(s) => {
                    if s.kind == Kind::Dir && rd.kind(&e).ok() == Some(Kind::Dir) {
                        out.push(Item::Dir { rel: child });
                    }
                }
                Err(err) if err.errno == libc::ENOENT => {
                    self.remove(rd.fd(), &e.name, e.kind, &child, out)
                }
                Err(err) => c.err(Side::Source, &child, err),
            }
        }
    }

    fn remove(
        &self,
        dd: BorrowedFd,
        name: &[u8],
        kind: Option<Kind>,
        rel: &[u8],
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        let kind = match kind {
            Some(k) => k,
            None => match fsops::stat_at(dd, name) {
                Ok(s) => s.kind,
                Err(e) if e.is_not_found() => return,
                Err(e) => return c.err(Side::Target, rel, e),
            },
        };
        if c.dry_run {
            let slash = if kind == Kind::Dir { "/" } else { "" };
            crate::report::say(&format!("would delete: {}{slash}", fsops::show(rel)));
            c.bump(&c.counters.deleted, 1);
            return;
        }
        if kind == Kind::Dir {
            out.push(Item::Purge { rel: rel.to_vec() });
            return;
        }
        if !self.allow() {
            return;
        }
        match fsops::unlink_at(dd, name) {
            Ok(()) => c.bump(&c.counters.deleted, 1),
            Err(e) if e.is_not_found() => {}
            Err(e) => c.err(Side::Target, rel, e),
        }
    }

    fn purge(&self, rel: &[u8], out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let dd = match c.open_dst_dir(rel) {
            Ok(fd) => fd,
            Err(e) => return c.err(Side::Target, rel, e),
        };
        self.purged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rel.to_vec());
        let mut rd = fsops::DirReader::new(dd);
        let mut batch = Batcher::new(rel, c.batch, Item::PurgeBatch);
        while let Some(e) = rd.next_entry() {
            if out.stopping() {
                return;
            }
            let e = match e {
                Ok(e) => e,
                Err(err) => return c.err(Side::Target, rel, err),
            };
            // Unknown: try it as a file; unlink of a directory fails and is reported.
            let kind = rd.kind(&e).unwrap_or(Kind::File);
            if kind == Kind::Dir {
                out.push(Item::Purge {
                    rel: fsops::join(rel, &e.name),
                });
            } else {
                batch.push(e.name, out);
            }
        }
        batch.finish(out);
    }

    fn purge_batch(&self, dir: &[u8], names: &[Vec<u8>], out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let dd = match c.open_dst_dir(dir) {
            Ok(fd) => fd,
            Err(e) => return c.err(Side::Target, dir, e),
        };
        for name in names {
            if out.stopping() || !self.allow() {
                return;
            }
            match fsops::unlink_at(dd.as_fd(), name) {
                Ok(()) => c.bump(&c.counters.deleted, 1),
                Err(e) if e.is_not_found() => {}
                Err(e) => c.err(Side::Target, &fsops::join(dir, name), e),
            }
        }
    }

    /// Depth (number of components) of every directory this rank emptied.
    pub fn purged_depths(&self) -> u64 {
        let p = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        p.iter().map(|r| depth(r)).max().unwrap_or(0)
    }

    /// Phase 2, one level: remove the emptied directories at `level`.
    pub fn remove_level(&self, level: u64) {
        let c = &self.ctx;
        let p = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        for rel in p.iter().filter(|r| depth(r) == level) {
            if !self.allow() {
                return;
            }
            let (parent, name) = fsops::parent_and_name(rel);
            let r = c
                .open_dst_dir(parent)
                .and_then(|dd| fsops::rmdir_at(dd.as_fd(), name));
            match r {
                Ok(()) => c.bump(&c.counters.deleted, 1),
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
            Item::Dir { rel } => self.dir(&rel, out),
            Item::Purge { rel } => self.purge(&rel, out),
            Item::PurgeBatch(b) => self.purge_batch(&b.dir, &b.names, out),
        }
    }
    fn describe(&self, item: &Item) -> String {
        match item {
            Item::Dir { rel } => format!("compare {}", fsops::show(rel)),
            Item::Purge { rel } => format!("purge {}", fsops::show(rel)),
            Item::PurgeBatch(b) => {
                format!("delete {} in {}", b.names.len(), fsops::show(&b.dir))
            }
        }
    }
}
