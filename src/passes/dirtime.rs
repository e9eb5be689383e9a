//! Dirtime pass: after all changes, give each target directory the source's
//! atime/mtime (ns) — and its mode, which an unprivileged copy kept writable.

use std::os::fd::{AsFd, BorrowedFd};

use super::{Ctx, DirIds};
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Kind, OsError, Stat};
use crate::manifest::{Action, Fix};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Item {
    pub rel: Vec<u8>,
    pub ids: DirIds,
}

pub struct DirtimePass {
    pub ctx: Ctx,
}

impl DirtimePass {
    fn dir(&self, rel: &[u8], ids: DirIds, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        // Times come from the fstat that checked the directory, taken before we read it.
        let (sd, s) = match c.open_src_dir(rel, ids.src) {
            Ok(v) => v,
            Err(e) => return c.err(Side::Source, rel, e),
        };
        c.bump(&c.counters.dirs, 1);
        let dd = if ids.dst.is_none() && !rel.is_empty() {
            Err(OsError {
                op: "open",
                errno: libc::ENOENT,
            })
        } else {
            c.open_dst_dir(rel, ids.dst)
        };
        let dd = match dd {
            Ok((dd, d)) => {
                set_dir(c, dd.as_fd(), rel, &s, &d);
                Some(dd)
            }
            Err(e) if e.is_not_found() || e.errno == libc::ENOTDIR => {
                // Reported, never created: creating is the copy pass's job.
                let (errno, call) = (e.errno, e.op.into());
                c.act(rel, Action::Failed { errno, call });
                c.log.error_msg(
                    Side::Target,
                    rel,
                    "directory missing on the target (run the copy pass first)",
                );
                None
            }
            Err(e) => {
                c.err(Side::Target, rel, e);
                None
            }
        };
        self.children(rel, sd, dd.as_ref().map(|d| d.as_fd()), out);
    }

    /// Queue the subdirectories, each with the identities seen here.
    fn children(
        &self,
        rel: &[u8],
        sd: std::os::fd::OwnedFd,
        dd: Option<BorrowedFd>,
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        let mut rd = fsops::DirReader::new(sd);
        c.list_entries(
            &mut rd,
            rel,
            Side::Source,
            true,
            out,
            |rd, e, child, out| {
                if rd.kind(&e).ok() != Some(Kind::Dir) {
                    return;
                }
                let s = match fsops::stat_at(rd.fd(), &e.name) {
                    Ok(s) if s.kind == Kind::Dir => s,
                    Ok(_) => return,
                    Err(err) if err.is_not_found() => return,
                    Err(err) => return c.err(Side::Source, &child, err),
                };
                if c.is_other_root(Side::Source, &s) {
                    return c.report_other_root(Side::Source, &child);
                }
                let dst = dd
                    .and_then(|d| fsops::stat_at(d, &e.name).ok())
                    .filter(|d| d.kind == Kind::Dir && !c.is_other_root(Side::Target, d))
                    .map(|d| d.ident());
                let ids = DirIds {
                    src: Some(s.ident()),
                    dst,
                };
                out.push(Item { rel: child, ids });
            },
        );
    }
}

impl Processor for DirtimePass {
    type Item = Item;
    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        self.dir(&item.rel, item.ids, out)
    }
    fn is_branch(&self, _: &Item) -> bool {
        true
    }
    fn describe(&self, item: &Item) -> String {
        format!("dirtime {}", fsops::show(&item.rel))
    }
}

/// Give target directory `dd` (fstat `d`) the mode (an unprivileged copy
/// kept it writable) and then the times of source directory `s`.
pub(crate) fn set_dir(c: &Ctx, dd: BorrowedFd, rel: &[u8], s: &Stat, d: &Stat) {
    if d.perm != s.perm {
        let r = if c.dry_run {
            Ok(())
        } else {
            fsops::fchmod(dd, s.perm)
        };
        match r {
            Ok(()) => c.act(rel, Action::Fixed(Fix::OwnerMode)),
            Err(e) => c.err(Side::Target, rel, e),
        }
    }
    if d.atime == s.atime && d.mtime == s.mtime {
        c.bump(&c.counters.uptodate, 1);
    } else if c.dry_run {
        c.bump(&c.counters.dirtimes, 1);
        c.act(rel, Action::Fixed(Fix::Times));
    } else if let Err(e) = fsops::futimes(dd, s.atime, s.mtime) {
        c.err(Side::Target, rel, e);
    } else {
        c.bump(&c.counters.dirtimes, 1);
        c.act(rel, Action::Fixed(Fix::Times));
    }
}
