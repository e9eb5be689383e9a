//! Copy pass: make the target hold everything the source holds.
//!
//! Phase 1 walks the source. Directories are created by the item that lists
//! their parent; files are compared (type, size, mtime ns, mode, owner) and
//! copied when they differ. A file is written under a temporary name when it
//! replaces something, so a crash keeps the old version; a new file is written
//! in place and gets its times last, so a partial file never matches the
//! source. Files with several links go to an owner rank chosen by inode, and
//! phase 2 copies each group once and links the rest. Big files are split
//! into chunks that any rank may copy; the owner finishes the file when the
//! last chunk reports back.
//!
//! This module is the walk and the up-to-date decision; `data` writes
//! content, `meta` owner/mode/xattrs/times, `chunked` big files, `links`
//! hardlink groups.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::{get_names, put_names, Batch, Batcher, Ctx};
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Kind, OsError, Stat};
use crate::wire::{Malformed, Reader, Wire, Writer};

mod chunked;
mod data;
mod links;
mod meta;

pub use chunked::ChunkJob;
use chunked::PendingFile;
use links::{mix, LinkGroups};
use meta::{same_data, same_meta, At, Landing};

#[derive(Debug)]
pub enum Item {
    Dir {
        rel: Vec<u8>,
    },
    Batch(Batch),
    /// A piece of big file `id` of the rank that found it.
    Chunk {
        id: u64,
        job: ChunkJob,
    },
    ChunkDone {
        id: u64,
        ok: bool,
    },
    LinkRef {
        dev: u64,
        ino: u64,
        rel: Vec<u8>,
    },
    LinkGroup {
        paths: Vec<Vec<u8>>,
    },
}

impl Wire for Item {
    fn encode(&self, w: &mut Writer) {
        match self {
            Item::Dir { rel } => {
                w.u8(0).bytes(rel);
            }
            Item::Batch(b) => {
                w.u8(1);
                b.encode(w);
            }
            Item::Chunk { id, job } => {
                w.u8(2)
                    .bytes(&job.dir)
                    .bytes(&job.name)
                    .bytes(&job.tmp)
                    .u64(*id)
                    .u64(job.off)
                    .u64(job.len);
            }
            Item::ChunkDone { id, ok } => {
                w.u8(3).u64(*id).u8(*ok as u8);
            }
            Item::LinkRef { dev, ino, rel } => {
                w.u8(4).u64(*dev).u64(*ino).bytes(rel);
            }
            Item::LinkGroup { paths } => {
                w.u8(5);
                put_names(w, paths);
            }
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        Ok(match r.u8()? {
            0 => Item::Dir {
                rel: r.bytes()?.to_vec(),
            },
            1 => Item::Batch(Batch::decode(r)?),
            2 => {
                let (dir, name, tmp) = (
                    r.bytes()?.to_vec(),
                    r.bytes()?.to_vec(),
                    r.bytes()?.to_vec(),
                );
                let id = r.u64()?;
                let (off, len) = (r.u64()?, r.u64()?);
                Item::Chunk {
                    id,
                    job: ChunkJob {
                        dir,
                        name,
                        tmp,
                        off,
                        len,
                    },
                }
            }
            3 => Item::ChunkDone {
                id: r.u64()?,
                ok: r.u8()? != 0,
            },
            4 => Item::LinkRef {
                dev: r.u64()?,
                ino: r.u64()?,
                rel: r.bytes()?.to_vec(),
            },
            5 => Item::LinkGroup {
                paths: get_names(r)?,
            },
            _ => return Err(Malformed),
        })
    }
}

/// Why one entry was not done.
enum Fail {
    Os(Side, OsError),
    /// The source changed while we copied it: the target must not look up to date.
    Changed,
}

type Res<T> = Result<T, Fail>;

fn on_src<T>(r: Result<T, OsError>) -> Res<T> {
    r.map_err(|e| Fail::Os(Side::Source, e))
}
fn on_dst<T>(r: Result<T, OsError>) -> Res<T> {
    r.map_err(|e| Fail::Os(Side::Target, e))
}

pub struct CopyOpts {
    pub chunk_threshold: u64,
    pub chunk_size: u64,
    /// Compare xattrs of files that are otherwise up to date.
    pub check_xattrs: bool,
}

pub struct CopyPass {
    pub ctx: Ctx,
    opts: CopyOpts,
    /// Layouts and MDT placement, when both trees are on Lustre.
    lustre: Option<crate::lustre::Lustre>,
    seq: AtomicU64,
    pending: Mutex<HashMap<u64, PendingFile>>,
    links: Mutex<LinkGroups>,
    /// Chunks of one file written by one thread of this rank at a time (not on Lustre).
    writers: super::one_writer::OneWriter<ChunkJob>,
    euid: u32,
    egid: u32,
}

impl CopyPass {
    pub fn new(ctx: Ctx, opts: CopyOpts, lustre: Option<crate::lustre::Lustre>) -> CopyPass {
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        CopyPass {
            ctx,
            opts,
            lustre,
            seq: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            writers: Default::default(),
            euid,
            egid,
        }
    }

    fn temp_name(&self) -> Vec<u8> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!(".lmpi-{}-{}-{n}.part", self.ctx.rank, std::process::id()).into_bytes()
    }

    fn report(&self, rel: &[u8], f: Fail) {
        match f {
            Fail::Os(side, e) => self.ctx.err(side, rel, e),
            Fail::Changed => self.ctx.log.error_msg(
                Side::Source,
                rel,
                "changed while being copied; target left out of date",
            ),
        }
    }

    fn dir(&self, rel: &[u8], out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let Some((sd, dd)) = c.open_pair(rel, c.dry_run) else {
            return;
        };
        let Some(dd) = dd else {
            return self.list(rel, sd, None, out);
        };
        c.bump(&c.counters.dirs, 1);
        match (fsops::fstat(sd.as_fd()), fsops::fstat(dd.as_fd())) {
            (Ok(s), Ok(d)) => {
                if let Err(f) = self.sync_dir_meta(sd.as_fd(), dd.as_fd(), &s, &d) {
                    self.report(rel, f);
                }
            }
            (Err(e), _) => c.err(Side::Source, rel, e),
            (_, Err(e)) => c.err(Side::Target, rel, e),
        }
        self.list(rel, sd, Some(dd), out);
    }

    /// Read a source directory: subdirectories are created on the target and
    /// queued; everything else goes out in batches.
    fn list(
        &self,
        rel: &[u8],
        sd: std::os::fd::OwnedFd,
        dd: Option<std::os::fd::OwnedFd>,
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        let mut rd = fsops::DirReader::new(sd);
        let mut batch = Batcher::new(rel, c.batch, Item::Batch);
        // First-level directories go round-robin over the configured MDTs.
        let mdts = self
            .lustre
            .as_ref()
            .map(|l| l.mdts.as_slice())
            .filter(|m| rel.is_empty() && !m.is_empty());
        let mut nth_dir = 0usize;
        while let Some(e) = rd.next_entry() {
            if out.stopping() {
                return;
            }
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    c.err(Side::Source, rel, err);
                    break;
                }
            };
            let child = fsops::join(rel, &e.name);
            if c.filter.has_excludes() && c.filter.excluded(&child) {
                c.bump(&c.counters.skipped, 1);
                continue;
            }
            let kind = match rd.kind(&e) {
                Ok(k) => k,
                Err(err) if err.is_not_found() => continue,
                Err(err) => {
                    c.err(Side::Source, &child, err);
                    continue;
                }
            };
            if kind == Kind::Dir {
                let mdt = mdts.map(|m| m[nth_dir % m.len()]);
                nth_dir += 1;
                if self.make_child_dir(
                    rd.fd(),
                    dd.as_ref().map(|d| d.as_fd()),
                    &e.name,
                    &child,
                    mdt,
                ) {
                    out.push(Item::Dir { rel: child });
                }
                continue;
            }
            batch.push(e.name, out);
        }
        batch.finish(out);
    }

    /// Make sure the target has directory `name`; false if it cannot be walked.
    fn make_child_dir(
        &self,
        sd: BorrowedFd,
        dd: Option<BorrowedFd>,
        name: &[u8],
        rel: &[u8],
        mdt: Option<u32>,
    ) -> bool {
        let c = &self.ctx;
        let Some(dd) = dd else { return true }; // dry run below a missing dir
        let st = match fsops::stat_at(sd, name) {
            Ok(st) => st,
            Err(e) if e.is_not_found() => return false, // vanished since readdir
            Err(e) => {
                c.err(Side::Source, rel, e);
                return false;
            }
        };
        match fsops::stat_at(dd, name) {
            Ok(d) if d.kind == Kind::Dir => return true,
            Ok(_) => {
                if c.dry_run {
                    crate::report::say(&format!(
                        "would replace with a directory: {}",
                        fsops::show(rel)
                    ));
                    return true;
                }
                if let Err(e) = fsops::remove_tree_at(dd, name) {
                    c.err(Side::Target, rel, e);
                    return false;
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                c.err(Side::Target, rel, e);
                return false;
            }
        }
        if c.dry_run {
            crate::report::say(&format!("would create directory: {}", fsops::show(rel)));
            return true;
        }
        // Without root, keep the directory writable for us; the dirtime pass sets the final mode.
        let perm = if c.is_root { st.perm } else { st.perm | 0o700 };
        let made = match (&self.lustre, mdt) {
            (Some(l), Some(mdt)) => l.mkdir_on_mdt(dd, name, perm, mdt),
            _ => fsops::mkdir_at(dd, name, perm),
        };
        match made {
            Ok(()) => {
                // A new directory takes the source's default layout; existing ones are left as they are.
                if let Some(l) = &self.lustre {
                    match l.layout_of(sd, name) {
                        Ok(lay) if lay.is_unset() => {}
                        Ok(lay) => {
                            if let Err(e) = l.set_dir_layout(dd, name, &lay) {
                                c.err(Side::Target, rel, e);
                            }
                        }
                        Err(e) => c.err(Side::Source, rel, e),
                    }
                }
                true
            }
            Err(e) if e.errno == libc::EEXIST => true,
            Err(e) => {
                c.err(Side::Target, rel, e);
                false
            }
        }
    }

    fn batch(&self, dir: &[u8], names: Vec<Vec<u8>>, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let Some((sd, dd)) = c.open_pair(dir, c.dry_run) else {
            return;
        };
        let landing = dd
            .as_ref()
            .map(|d| self.landing(d.as_fd()))
            .unwrap_or(Landing::UNKNOWN);
        for name in names {
            if out.stopping() {
                return;
            }
            let rel = fsops::join(dir, &name);
            if let Err(f) = self.entry(
                sd.as_fd(),
                dd.as_ref().map(|d| d.as_fd()),
                dir,
                &name,
                &rel,
                landing,
                out,
            ) {
                self.report(&rel, f);
            }
        }
    }

    // The walk's state for one entry; bundling it in a struct would only rename the arguments.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        sd: BorrowedFd,
        dd: Option<BorrowedFd>,
        dir: &[u8],
        name: &[u8],
        rel: &[u8],
        landing: Landing,
        out: &mut Emitter<'_, Item>,
    ) -> Res<()> {
        let c = &self.ctx;
        let s = match fsops::stat_at(sd, name) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => {
                c.log
                    .note(Side::Source, rel, "vanished before it could be copied");
                return Ok(());
            }
            Err(e) => return Err(Fail::Os(Side::Source, e)),
        };
        if s.kind == Kind::Dir {
            // It became a directory since the listing: walk it like any other.
            if self.make_child_dir(sd, dd, name, rel, None) {
                out.push(Item::Dir { rel: rel.to_vec() });
            }
            return Ok(());
        }
        c.bump(&c.counters.scanned, 1);
        if c.filter.skip(&s) {
            c.bump(&c.counters.skipped, 1);
            return Ok(());
        }
        if s.kind == Kind::File && s.nlink > 1 {
            let owner = (mix(s.dev, s.ino) % c.size as u64) as usize;
            out.send_to(
                owner,
                Item::LinkRef {
                    dev: s.dev,
                    ino: s.ino,
                    rel: rel.to_vec(),
                },
            );
            return Ok(());
        }
        let Some(dd) = dd else {
            crate::report::say(&format!("would copy: {}", fsops::show(rel)));
            return Ok(());
        };
        let d = match fsops::stat_at(dd, name) {
            Ok(d) => Some(d),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(Fail::Os(Side::Target, e)),
        };
        if let Some(d) = &d {
            if same_data(&s, d) && (s.kind != Kind::Symlink || self.same_link(sd, dd, name)?) {
                return self.settle_in_place(sd, dd, name, rel, &s, d);
            }
        }
        if c.dry_run {
            crate::report::say(&format!("would copy: {}", fsops::show(rel)));
            return Ok(());
        }
        if let Some(d) = &d {
            if d.kind == Kind::Dir {
                on_dst(fsops::remove_tree_at(dd, name))?;
            } else if s.kind != Kind::File {
                on_dst(fsops::unlink_at(dd, name))?;
            }
        }
        let exists = matches!(&d, Some(d) if d.kind != Kind::Dir) && s.kind == Kind::File;
        match s.kind {
            Kind::File if s.size >= self.opts.chunk_threshold => {
                self.start_chunked(sd, dd, dir, name, &s, out)
            }
            Kind::File => self.copy_file(sd, dd, rel, name, &s, exists, landing),
            Kind::Symlink => self.make_symlink(sd, dd, name, &s),
            _ => self.make_special(dd, name, &s),
        }
    }

    /// `d` already holds `s`'s data: fix owner, mode and (with `check_xattrs`)
    /// xattrs in place, never copying; count it as up to date or metadata-only.
    fn settle_in_place(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        rel: &[u8],
        s: &Stat,
        d: &Stat,
    ) -> Res<()> {
        let c = &self.ctx;
        let (src, dst) = (At::name(sd, name), At::name(dd, name));
        if !same_meta(s, d) {
            if c.dry_run {
                crate::report::say(&format!("would fix owner/mode: {}", fsops::show(rel)));
                return Ok(());
            }
            if s.uid != d.uid || s.gid != d.gid {
                on_dst(fsops::chown_at(dd, name, s.uid, s.gid))?;
            }
            if s.kind != Kind::Symlink {
                on_dst(fsops::chmod_at(dd, name, s.perm))?;
            }
            // After chmod: it rewrites the ACL mask, which the sync then checks.
            if self.opts.check_xattrs {
                self.sync_xattrs(src, dst, true)?;
            }
            c.bump(&c.counters.meta, 1);
            return Ok(());
        }
        // Owner and mode match: only xattrs can differ, and only if asked to
        // look. One read of each side both compares and fixes.
        if self.opts.check_xattrs && self.sync_xattrs(src, dst, !c.dry_run)? {
            if c.dry_run {
                crate::report::say(&format!("would fix xattrs: {}", fsops::show(rel)));
            } else {
                c.bump(&c.counters.meta, 1);
            }
            return Ok(());
        }
        c.bump(&c.counters.uptodate, 1);
        Ok(())
    }

    fn same_link(&self, sd: BorrowedFd, dd: BorrowedFd, name: &[u8]) -> Res<bool> {
        Ok(on_src(fsops::readlink_at(sd, name))? == on_dst(fsops::readlink_at(dd, name))?)
    }
}

impl Processor for CopyPass {
    type Item = Item;

    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        match item {
            Item::Dir { rel } => self.dir(&rel, out),
            Item::Batch(b) => self.batch(&b.dir, b.names, out),
            Item::Chunk { id, job } => self.chunk(id, job, out),
            Item::ChunkDone { id, ok } => self.chunk_done(id, ok),
            Item::LinkRef { dev, ino, rel } => {
                self.links
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((dev, ino))
                    .or_default()
                    .push(rel);
            }
            Item::LinkGroup { paths } => self.link_group(&paths),
        }
    }

    fn describe(&self, item: &Item) -> String {
        match item {
            Item::Dir { rel } => format!("dir {}", fsops::show(rel)),
            Item::Batch(b) => {
                format!("{} entries in {}", b.names.len(), fsops::show(&b.dir))
            }
            Item::Chunk { job, .. } => format!(
                "chunk {}+{} of {}",
                job.off,
                job.len,
                fsops::show(&fsops::join(&job.dir, &job.name))
            ),
            Item::ChunkDone { .. } => "finishing a chunked file".into(),
            Item::LinkRef { rel, .. } => format!("hardlink {}", fsops::show(rel)),
            Item::LinkGroup { paths } => format!(
                "hardlink group {}",
                paths.first().map(|p| fsops::show(p)).unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_roundtrip() {
        let items = vec![
            Item::Dir {
                rel: b"a/\xff\n".to_vec(),
            },
            Item::Batch(Batch {
                dir: b"d".to_vec(),
                names: vec![b"x".to_vec(), b"-y z".to_vec()],
            }),
            Item::Chunk {
                id: 5,
                job: ChunkJob {
                    dir: b"d".to_vec(),
                    name: b"n".to_vec(),
                    tmp: b"t".to_vec(),
                    off: 6,
                    len: 7,
                },
            },
            Item::ChunkDone { id: 9, ok: true },
            Item::LinkRef {
                dev: 1,
                ino: 2,
                rel: b"r".to_vec(),
            },
            Item::LinkGroup {
                paths: vec![b"a".to_vec(), b"b".to_vec()],
            },
        ];
        for it in items {
            let mut w = Writer::new();
            it.encode(&mut w);
            let buf = w.finish();
            let back = Item::decode(&mut Reader::new(&buf)).expect("decode");
            assert_eq!(format!("{it:?}"), format!("{back:?}"));
        }
    }
}
