//! Dirtime pass: after all changes, give each target directory the source's
//! atime/mtime (ns) — and its mode, which an unprivileged copy kept writable.

use std::os::fd::AsFd;

use super::Ctx;
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Kind};
use crate::wire::{Malformed, Reader, Wire, Writer};

#[derive(Debug)]
pub struct Item {
    pub rel: Vec<u8>,
}

impl Wire for Item {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.rel);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        Ok(Item {
            rel: r.bytes()?.to_vec(),
        })
    }
}

pub struct DirtimePass {
    pub ctx: Ctx,
}

impl DirtimePass {
    fn dir(&self, rel: &[u8], out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let sd = match c.open_src_dir(rel) {
            Ok(fd) => fd,
            Err(e) => return c.err(Side::Source, rel, e),
        };
        // Times first, from a stat taken before we read the directory.
        let s = match fsops::fstat(sd.as_fd()) {
            Ok(s) => s,
            Err(e) => return c.err(Side::Source, rel, e),
        };
        c.bump(&c.counters.dirs, 1);
        match c.open_dst_dir(rel) {
            Ok(dd) => match fsops::fstat(dd.as_fd()) {
                Ok(d) => {
                    if d.perm != s.perm && !c.dry_run {
                        if let Err(e) = fsops::fchmod(dd.as_fd(), s.perm) {
                            c.err(Side::Target, rel, e);
                        }
                    }
                    if d.atime != s.atime || d.mtime != s.mtime {
                        if c.dry_run {
                            crate::report::say(&format!("would set times: {}", fsops::show(rel)));
                        } else if let Err(e) = fsops::futimes(dd.as_fd(), s.atime, s.mtime) {
                            c.err(Side::Target, rel, e);
                        } else {
                            c.bump(&c.counters.dirtimes, 1);
                        }
                    } else {
                        c.bump(&c.counters.uptodate, 1);
                    }
                }
                Err(e) => c.err(Side::Target, rel, e),
            },
            Err(e) if e.is_not_found() || e.errno == libc::ENOTDIR => {
                // Reported, never created: creating is the copy pass's job.
                c.log.error_msg(
                    Side::Target,
                    rel,
                    "directory missing on the target (run the copy pass first)",
                );
            }
            Err(e) => c.err(Side::Target, rel, e),
        }
        let mut rd = fsops::DirReader::new(sd);
        while let Some(e) = rd.next_entry() {
            if out.stopping() {
                return;
            }
            let e = match e {
                Ok(e) => e,
                Err(err) => return c.err(Side::Source, rel, err),
            };
            if rd.kind(&e).ok() != Some(Kind::Dir) {
                continue;
            }
            let child = fsops::join(rel, &e.name);
            if c.filter.has_excludes() && c.filter.excluded(&child) {
                c.bump(&c.counters.skipped, 1);
                continue;
            }
            out.push(Item { rel: child });
        }
    }
}

impl Processor for DirtimePass {
    type Item = Item;
    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        self.dir(&item.rel, out)
    }
    fn describe(&self, item: &Item) -> String {
        format!("dirtime {}", fsops::show(&item.rel))
    }
}
