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
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Batch, Batcher, Ctx, DirIds};
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Kind, OsError, Stat};
use crate::manifest::{Action, Fix, Skip};
use serde::{Deserialize, Serialize};

/// An attribute of Lustre's own (layouts, FIDs, link EAs): never copied,
/// never compared.
pub(crate) fn is_lustre_internal(key: &[u8]) -> bool {
    meta::LUSTRE_INTERNAL.contains(&key)
}

/// lmpi's own records (`trusted.lmpi.*`: resume records, the target
/// root's last clean pass): never copied, removed or compared.
pub(crate) fn is_lmpi_own(key: &[u8]) -> bool {
    key.starts_with(b"trusted.lmpi.")
}

mod chunked;
mod data;
mod join;
mod links;
mod meta;
mod resume;
mod temps;

pub use chunked::{ChunkEnd, ChunkJob};
use chunked::{Partial, PendingFile};
pub(crate) use join::Names;
pub(crate) use links::mix;
use links::LinkGroups;
pub(crate) use meta::{dir_source_mark, DIR_SOURCE_KEY};
use meta::{grants_privilege, same_data, same_meta, At, Landing};

#[derive(Debug, Serialize, Deserialize)]
pub enum Item {
    Dir {
        rel: Vec<u8>,
        ids: DirIds,
    },
    Batch(Batch),
    /// A piece of big file `id` of the rank that found it.
    Chunk {
        id: u64,
        job: ChunkJob,
    },
    /// How the chunk at `off` ended; `bytes` landed (and synced) when in.
    ChunkDone {
        id: u64,
        off: u64,
        end: ChunkEnd,
        bytes: u64,
    },
    LinkRef {
        dev: u64,
        ino: u64,
        name: LinkName,
    },
    LinkGroup {
        dev: u64,
        ino: u64,
        names: Vec<LinkName>,
    },
}

/// One name of a hardlinked inode, with the identities of its directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkName {
    pub rel: Vec<u8>,
    pub ids: DirIds,
}

/// Why one entry was not done.
enum Fail {
    Os(Side, OsError),
    /// The source changed while we copied it: the target must not look up to date.
    Changed,
    /// Fixing an existing target file in place would grant a privilege to
    /// data lmpi may not have written: the caller copies it again.
    Untrusted,
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
    /// Compare the data of files that are otherwise up to date, block by
    /// block, and copy again those that differ (`--content`).
    pub content: bool,
    /// Copy project IDs and compare them where the source has them.
    pub copy_project_ids: bool,
    /// Agreed by all ranks of this job; names its temp files, so a temp file
    /// of another (killed) job can be told from a live one.
    pub token: u64,
}

pub struct CopyPass {
    pub ctx: Arc<Ctx>,
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
    /// The target refused inode flags once: said once.
    flags_noted: std::sync::atomic::AtomicBool,
    /// The target refused a resume record once: said once.
    resume_noted: std::sync::atomic::AtomicBool,
    /// A privilege was due on a file lmpi did not write: said once.
    untrusted_noted: std::sync::atomic::AtomicBool,
    /// Partial copies this rank wrote chunks into, by file id: synced after
    /// a stop, before any record lists those chunks.
    written: Mutex<HashMap<u64, chunked::Written>>,
    /// Big files of this rank whose chunks all reported back, not all in
    /// (a stop): their partial copies stay for the next pass.
    kept: Mutex<Vec<PendingFile>>,
    /// Big files a chunk of which failed on this rank (said once each).
    chunk_failed: Mutex<std::collections::HashSet<u64>>,
    /// Project IDs: what this pass learnt about both sides (see `meta`).
    projects: meta::Projects,
}

impl CopyPass {
    pub fn new(ctx: Arc<Ctx>, opts: CopyOpts, lustre: Option<crate::lustre::Lustre>) -> CopyPass {
        // SAFETY: geteuid and getegid take no arguments, read and write no
        // memory of ours and cannot fail.
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
            flags_noted: Default::default(),
            resume_noted: Default::default(),
            untrusted_noted: Default::default(),
            written: Default::default(),
            kept: Default::default(),
            chunk_failed: Default::default(),
            projects: Default::default(),
        }
    }

    fn report(&self, rel: &[u8], f: Fail) {
        match f {
            Fail::Os(side, e) => self.ctx.err(side, rel, e),
            Fail::Changed => {
                self.ctx.failed_msg(rel, "changed");
                self.ctx.log.error_msg(
                    Side::Source,
                    rel,
                    "changed while being copied; target left out of date",
                )
            }
            // Callers of settle_in_place copy instead; reaching here is a bug
            // of ours, said as an error rather than granted.
            Fail::Untrusted => self.ctx.log.error_msg(
                Side::Target,
                rel,
                "owner, setuid or capability not granted in place to data lmpi did not write",
            ),
        }
    }

    fn dir(&self, rel: &[u8], ids: DirIds, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let Some(((sd, s), dd)) = c.open_pair(rel, ids, c.dry_run) else {
            return;
        };
        let Some((dd, d)) = dd else {
            return self.list(rel, ids, sd, None, out);
        };
        c.bump(&c.counters.dirs, 1);
        self.settle_dir(rel, sd.as_fd(), dd.as_fd(), &s, &d);
        let ids = DirIds {
            src: Some(s.ident()),
            dst: Some(d.ident()),
        };
        self.list(rel, ids, sd, Some(dd), out);
    }

    /// First-level directories go round-robin over the configured MDTs:
    /// where the `nth` directory of directory `rel` goes.
    pub(crate) fn first_level_mdt(&self, rel: &[u8], nth: usize) -> Option<u32> {
        let m = self.lustre.as_ref()?.mdts.as_slice();
        (rel.is_empty() && !m.is_empty()).then(|| m[nth % m.len()])
    }

    /// Owner, mode and xattrs of a directory both sides have; failures reported.
    pub(crate) fn settle_dir(
        &self,
        rel: &[u8],
        sd: BorrowedFd,
        dd: BorrowedFd,
        s: &Stat,
        d: &Stat,
    ) {
        // What sync_dir_meta changes besides xattrs (only those are recorded).
        let keep = if self.ctx.is_root { 0 } else { 0o700 };
        let due = s.uid != d.uid || s.gid != d.gid || d.perm != s.perm | keep;
        match self.sync_dir_meta((sd, dd), (s, d), rel) {
            Ok(()) if due => {
                // A dry run changes nothing, so sync_dir_meta counted nothing.
                if self.ctx.dry_run {
                    self.ctx.bump(&self.ctx.counters.meta, 1);
                }
                self.ctx.act(rel, Action::Fixed(Fix::OwnerMode))
            }
            Ok(()) => {}
            Err(f) => self.report(rel, f),
        }
        // Project ID and project-inherit: recorded as a flags fix.
        match self.dir_project(sd, dd) {
            Ok(true) => {
                if !due {
                    self.ctx.bump(&self.ctx.counters.meta, 1);
                }
                self.ctx.act(rel, Action::Fixed(Fix::Flags));
            }
            Ok(false) => {}
            Err(f) => self.report(rel, f),
        }
    }

    /// Read a source directory (and its target, to join the two):
    /// subdirectories are created on the target and queued; everything else
    /// goes out in batches. Without `dd` (a dry run below a directory the
    /// target lacks) every name is new.
    pub(crate) fn list(
        &self,
        rel: &[u8],
        ids: DirIds,
        sd: OwnedFd,
        dd: Option<OwnedFd>,
        out: &mut Emitter<'_, Item>,
    ) {
        match dd {
            Some(dd) => drop(self.list_joined(rel, ids, (sd, dd), out)),
            None => drop(self.list_source(rel, ids, sd, None, None, out)),
        }
    }

    /// Make sure the target has directory `name`; its identities on both
    /// sides for the work item, or None if it must not be walked.
    /// `absent`: the target's listing has no such name (skip its stat).
    pub(crate) fn make_child_dir(
        &self,
        sd: BorrowedFd,
        dd: Option<BorrowedFd>,
        name: &[u8],
        rel: &[u8],
        mdt: Option<u32>,
        absent: bool,
    ) -> Option<DirIds> {
        let c = &self.ctx;
        let st = match fsops::stat_at(sd, name) {
            Ok(st) if st.kind == Kind::Dir => st,
            Ok(_) => {
                c.err(Side::Source, rel, fsops::changed("stat"));
                return None;
            }
            Err(e) if e.is_not_found() => return None, // vanished since readdir
            Err(e) => {
                c.err(Side::Source, rel, e);
                return None;
            }
        };
        if c.is_other_root(Side::Source, &st) {
            c.report_other_root(Side::Source, rel);
            return None;
        }
        let mut ids = DirIds {
            src: Some(st.ident()),
            dst: None,
        };
        let Some(dd) = dd else {
            // A dry run below a directory the target lacks: this one is new too.
            let created = Action::Created {
                kind: Kind::Dir,
                replaced: false,
            };
            c.act(rel, created);
            return Some(ids);
        };
        match self.target_dir(sd, dd, (name, rel), &st, mdt, absent) {
            Ok(Some(id)) => {
                ids.dst = Some(id);
                Some(ids)
            }
            Ok(None) => Some(ids), // dry run: would create it
            Err(e) => {
                c.err(Side::Target, rel, e);
                None
            }
        }
    }

    /// The target directory for source directory `st`: the one there, or a
    /// new one (with the source's default layout on Lustre).
    fn target_dir(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        (name, rel): (&[u8], &[u8]),
        st: &Stat,
        mdt: Option<u32>,
        absent: bool,
    ) -> Result<Option<fsops::Ident>, OsError> {
        let c = &self.ctx;
        let there = if absent {
            Err(OsError {
                op: "stat",
                errno: libc::ENOENT,
            })
        } else {
            fsops::stat_at(dd, name)
        };
        let replaced = there.is_ok();
        match there {
            Ok(d) if d.kind == Kind::Dir && c.is_other_root(Side::Target, &d) => {
                return Err(fsops::changed("stat"));
            }
            Ok(d) if d.kind == Kind::Dir => return Ok(Some(d.ident())),
            Ok(_) if !c.dry_run => {
                fsops::remove_tree_at(dd, name)?;
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let created = Action::Created {
            kind: Kind::Dir,
            replaced,
        };
        if c.dry_run {
            c.act(rel, created);
            return Ok(None);
        }
        // Without root, keep the directory writable for us; the dirtime pass sets the final mode.
        // No group or other write until its walk sets owner and mode: in a
        // user's setgid directory it starts in their group.
        let perm = if c.is_root {
            st.perm & !0o022
        } else {
            st.perm | 0o700
        };
        let made = match (&self.lustre, mdt) {
            (Some(l), Some(mdt)) => l.mkdir_on_mdt(dd, name, perm, mdt),
            _ => fsops::mkdir_at(dd, name, perm),
        };
        match made {
            Ok(()) => c.act(rel, created),
            Err(OsError {
                errno: libc::EEXIST,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        let Some(l) = &self.lustre else {
            // Its identity goes into the work item, which checks it on open.
            let d = fsops::stat_at(dd, name)?;
            return match d.kind {
                Kind::Dir => Ok(Some(d.ident())),
                _ => Err(fsops::changed("mkdir")),
            };
        };
        // Open what is there now without following a link: a layout is set
        // on exactly this directory.
        let (fd, d) = fsops::open_dir_checked(dd, name, None)?;
        if made.is_ok() {
            // A new directory takes the source's default layout; existing ones are left as they are.
            match l.layout_of(sd, name) {
                Ok(lay) if lay.is_unset() => {}
                Ok(lay) => {
                    if let Err(e) = l.set_dir_layout(fd.as_fd(), b"", &lay) {
                        c.err(Side::Target, rel, e);
                    }
                }
                Err(e) => c.err(Side::Source, rel, e),
            }
        }
        Ok(Some(d.ident()))
    }

    fn batch(&self, b: Batch, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let Some(((sd, _), dd)) = c.open_pair(&b.dir, b.ids, c.dry_run) else {
            return;
        };
        let dd = dd.as_ref().map(|(d, st)| (d.as_fd(), st));
        self.batch_in(sd.as_fd(), dd, &b, out)
    }

    /// Batch `b`'s entries in its directory, already open on both sides
    /// (`dd` with its fstat; None in a dry run below a new directory).
    pub(crate) fn batch_in(
        &self,
        sd: BorrowedFd,
        dd: Option<(BorrowedFd, &Stat)>,
        b: &Batch,
        out: &mut Emitter<'_, Item>,
    ) {
        let landing = dd
            .map(|(d, st)| self.landing(sd, d, st))
            .unwrap_or(Landing::UNKNOWN);
        let here = Here {
            sd,
            dd: dd.map(|(d, _)| d),
            dir: &b.dir,
            ids: b.ids,
            landing,
            absent: b.absent,
        };
        for (i, name) in b.names.iter().enumerate() {
            if out.stopping() {
                return;
            }
            let rel = fsops::join(&b.dir, name);
            let listed = b.inos.get(i).copied().unwrap_or(0);
            if let Err(f) = self.entry(&here, name, &rel, listed, out) {
                self.report(&rel, f);
            }
        }
    }

    /// The source entry's lstat, or for a new regular file (`listed`: its
    /// inode as listed) its fstat and open fd, checked against the listing:
    /// one open instead of an lstat and an open. None: it vanished.
    fn source_entry(
        &self,
        h: &Here,
        name: &[u8],
        rel: &[u8],
        listed: u64,
    ) -> Res<Option<(Stat, Option<OwnedFd>)>> {
        if listed != 0 {
            if let Ok(Some((fd, st))) = fsops::open_listed_file(h.sd, name, listed) {
                return Ok(Some((st, Some(fd))));
            }
            // Not the file the listing saw, or not openable: the lstat way decides.
        }
        match fsops::stat_at(h.sd, name) {
            Ok(s) => Ok(Some((s, None))),
            Err(e) if e.is_not_found() => {
                self.ctx
                    .log
                    .note(Side::Source, rel, "vanished before it could be copied");
                Ok(None)
            }
            Err(e) => Err(Fail::Os(Side::Source, e)),
        }
    }

    fn entry(
        &self,
        h: &Here,
        name: &[u8],
        rel: &[u8],
        listed: u64,
        out: &mut Emitter<'_, Item>,
    ) -> Res<()> {
        let c = &self.ctx;
        let Some((s, opened)) = self.source_entry(h, name, rel, listed)? else {
            return Ok(());
        };
        if s.kind == Kind::Dir {
            // It became a directory since the listing: walk it like any other.
            if let Some(ids) = self.make_child_dir(h.sd, h.dd, name, rel, None, false) {
                out.push(Item::Dir {
                    rel: rel.to_vec(),
                    ids,
                });
            }
            return Ok(());
        }
        c.bump(&c.counters.scanned, 1);
        if c.filter.skip(&s) {
            c.bump(&c.counters.skipped, 1);
            c.act(rel, Action::Skipped(Skip::Age));
            return Ok(());
        }
        if s.kind == Kind::File && s.nlink > 1 {
            let owner = (mix(s.dev, s.ino) % c.size as u64) as usize;
            let name = LinkName {
                rel: rel.to_vec(),
                ids: h.ids,
            };
            out.send_to(
                owner,
                Item::LinkRef {
                    dev: s.dev,
                    ino: s.ino,
                    name,
                },
            );
            return Ok(());
        }
        let Some(dd) = h.dd else {
            self.would_write(rel, &s);
            return Ok(());
        };
        // Absent from the target's listing: no stat. Created since? Then
        // create_at's O_EXCL (or symlink/mknod's EEXIST) finds out.
        let d = match h.absent {
            true => None,
            false => match fsops::stat_at(dd, name) {
                Ok(d) => Some(d),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(Fail::Os(Side::Target, e)),
            },
        };
        if let Some(d) = &d {
            // A target name still linked to others while the source's is
            // alone (a hardlink split on the source) must be broken out.
            let split = s.kind == Kind::File && d.nlink > 1;
            if same_data(&s, d)
                && !split
                && (s.kind != Kind::Symlink || self.same_link(h.sd, dd, name)?)
                && self.same_content(h.sd, dd, (name, rel), (&s, d))?
            {
                let projects = self.files_projects(&h.landing);
                if self.settle_trusted(h.sd, dd, (name, rel), (&s, d), projects)? {
                    return Ok(());
                }
            }
        }
        if c.dry_run {
            self.would_write(rel, &s);
            return Ok(());
        }
        self.replace_entry(h, dd, (name, rel), (&s, opened), d.as_ref(), out)
    }

    /// A dry run's "would copy/create" for source entry `s`, counted as the
    /// real run would count it.
    pub(crate) fn would_write(&self, rel: &[u8], s: &Stat) {
        let c = &self.ctx;
        if s.kind != Kind::Dir {
            c.bump(&c.counters.files, 1);
        }
        if s.kind == Kind::File {
            c.bump(&c.counters.data, s.size);
        }
        c.act(rel, Action::of_new(s));
    }

    /// Write source entry `s` over whatever target `d` is there.
    fn replace_entry(
        &self,
        h: &Here,
        dd: BorrowedFd,
        (name, rel): (&[u8], &[u8]),
        (s, opened): (&Stat, Option<OwnedFd>),
        d: Option<&Stat>,
        out: &mut Emitter<'_, Item>,
    ) -> Res<()> {
        if let Some(d) = d {
            self.unlock(dd, name, d)?;
            if d.kind == Kind::Dir {
                on_dst(fsops::remove_tree_at(dd, name))?;
            } else if s.kind != Kind::File {
                on_dst(fsops::unlink_at(dd, name))?;
            }
        }
        let exists = matches!(d, Some(d) if d.kind != Kind::Dir) && s.kind == Kind::File;
        match s.kind {
            Kind::File if s.size >= self.opts.chunk_threshold => {
                self.start_chunked(h.sd, dd, h.dir, h.ids, name, s, out)
            }
            Kind::File => self.copy_file(h.sd, dd, (rel, name), (s, opened), exists, h.landing),
            Kind::Symlink => self.make_symlink(h.sd, dd, (name, rel), s),
            _ => self.make_special(h.sd, dd, (name, rel), s),
        }?;
        if s.kind != Kind::File {
            let (kind, replaced) = (s.kind, d.is_some());
            self.ctx.act(rel, Action::Created { kind, replaced });
        }
        Ok(())
    }

    /// With `--content`, whether regular file `name` (both sides' stats
    /// equal in size and mtime) holds the same bytes on both sides; always
    /// true without it. A difference is noted once per file: it is copied
    /// again (a corruption under the same size and mtime, which only a
    /// data compare finds).
    fn same_content(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        (name, rel): (&[u8], &[u8]),
        (s, d): (&Stat, &Stat),
    ) -> Res<bool> {
        if !self.opts.content || s.kind != Kind::File {
            return Ok(true);
        }
        let (sf, _) = on_src(fsops::open_read_checked(sd, name, s.ident()))?;
        let (df, _) = on_dst(fsops::open_read_checked(dd, name, d.ident()))?;
        let read = std::sync::atomic::AtomicU64::new(0);
        let diff = super::compare::first_difference(sf.as_fd(), df.as_fd(), 0, s.size, &read)
            .map_err(|(side, e)| Fail::Os(side, e))?;
        if let Some(at) = diff {
            let msg =
                format!("data differ from byte {at} under the same size and mtime: copied again");
            self.ctx.log.note(Side::Target, rel, &msg);
        }
        Ok(diff.is_none())
    }

    /// `settle_in_place`, unless that would grant a privilege (another
    /// owner, a setid bit, a capability) to target bytes lmpi may not have
    /// written: then Ok(false), and the caller copies the file again, so
    /// the privilege lands only on a new inode holding the source's data.
    /// Where nothing is granted (every unchanged file) this costs no call.
    fn settle_trusted(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        (name, rel): (&[u8], &[u8]),
        (s, d): (&Stat, &Stat),
        projects: bool,
    ) -> Res<bool> {
        if !grants_privilege(s, d) {
            match self.settle_in_place(sd, dd, name, rel, (s, d), projects) {
                Err(Fail::Untrusted) => {}
                r => return r.map(|()| true),
            }
        }
        if !self.untrusted_noted.swap(true, Ordering::Relaxed) {
            let msg = "an owner, setuid/setgid bit or capability is due on a target file \
                       whose data lmpi did not write: copied again instead of granted in \
                       place (said once per pass; the manifest lists every such copy)";
            self.ctx.log.note(Side::Target, rel, msg);
        }
        Ok(false)
    }

    /// `d` already holds `s`'s data: fix owner, mode, (with `check_xattrs`)
    /// xattrs, the project ID and inode flags in place, never copying; count
    /// it as up to date or metadata-only.
    fn settle_in_place(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        rel: &[u8],
        (s, d): (&Stat, &Stat),
        projects: bool,
    ) -> Res<()> {
        let c = &self.ctx;
        let (src, dst) = (At::name(sd, name), At::name(dd, name));
        // A project ID that differs (read only where it is cheap enough).
        let project = match projects {
            true => self.project_due(sd, dd, name, s, d)?,
            false => None,
        };
        // True if fixed (or, in a dry run, due); false if the target refused.
        let fix_project = || match &project {
            Some((fd, want)) if !c.dry_run => self.put_project(fd.as_fd(), *want, false),
            p => Ok(p.is_some()),
        };
        if s.flags != d.flags && s.kind == Kind::File && !c.dry_run {
            // Lift the target's flags, fix owner/mode/xattrs, set the source's last.
            self.unlock(dd, name, d)?;
            self.fix_owner_mode(dd, name, s, d)?;
            if self.opts.check_xattrs || s.uid != d.uid || s.gid != d.gid {
                self.sync_xattrs_in_place(src, dst, rel, true)?;
            }
            let _ = fix_project()?;
            let (fd, _) = on_dst(fsops::open_read_checked(dd, name, d.ident()))?;
            self.set_flags(fd.as_fd(), s.flags)?;
            c.bump(&c.counters.meta, 1);
            c.act(rel, Action::Fixed(Fix::Flags));
            return Ok(());
        }
        if !same_meta(s, d) {
            if c.dry_run {
                c.bump(&c.counters.meta, 1);
                c.act(rel, Action::Fixed(Fix::OwnerMode));
                return Ok(());
            }
            self.fix_owner_mode(dd, name, s, d)?;
            // After chmod: it rewrites the ACL mask, which the sync then
            // checks. A chown makes the kernel drop security.capability:
            // then the xattrs are always put back, asked for or not.
            let chowned = s.uid != d.uid || s.gid != d.gid;
            if self.opts.check_xattrs || chowned {
                self.sync_xattrs_in_place(src, dst, rel, true)?;
            }
            let _ = fix_project()?;
            c.bump(&c.counters.meta, 1);
            c.act(rel, Action::Fixed(Fix::OwnerMode));
            return Ok(());
        }
        // Owner and mode match: only xattrs can differ, and only if asked to
        // look. One read of each side both compares and fixes.
        if self.opts.check_xattrs && self.sync_xattrs_in_place(src, dst, rel, !c.dry_run)? {
            let _ = fix_project()?;
            c.bump(&c.counters.meta, 1);
            c.act(rel, Action::Fixed(Fix::Xattrs));
            return Ok(());
        }
        if fix_project()? {
            c.bump(&c.counters.meta, 1);
            c.act(rel, Action::Fixed(Fix::Flags));
            return Ok(());
        }
        c.bump(&c.counters.uptodate, 1);
        Ok(())
    }

    /// Owner, then mode, of target `name` (lstat `d`) to the source's `s`.
    /// Pinned: the change lands on the inode compared, whatever the name
    /// points to by now.
    fn fix_owner_mode(&self, dd: BorrowedFd, name: &[u8], s: &Stat, d: &Stat) -> Res<()> {
        if same_meta(s, d) {
            return Ok(());
        }
        let pin = on_dst(fsops::pin_at(dd, name, Some(d.ident())))?;
        if s.uid != d.uid || s.gid != d.gid {
            on_dst(pin.chown(s.uid, s.gid))?;
        }
        if s.kind != Kind::Symlink {
            on_dst(pin.chmod(s.perm))?;
        }
        Ok(())
    }

    fn same_link(&self, sd: BorrowedFd, dd: BorrowedFd, name: &[u8]) -> Res<bool> {
        Ok(on_src(fsops::readlink_at(sd, name))? == on_dst(fsops::readlink_at(dd, name))?)
    }
}

/// One batch's directory on both sides, as every entry of it needs it.
pub(super) struct Here<'a> {
    sd: BorrowedFd<'a>,
    dd: Option<BorrowedFd<'a>>,
    dir: &'a [u8],
    ids: DirIds,
    landing: Landing,
    /// The target's listing lacked these names.
    absent: bool,
}

impl Processor for CopyPass {
    type Item = Item;

    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        match item {
            Item::Dir { rel, ids } => self.dir(&rel, ids, out),
            Item::Batch(b) => self.batch(b, out),
            Item::Chunk { id, job } => self.chunk(id, job, out),
            Item::ChunkDone {
                id,
                off,
                end,
                bytes,
            } => self.chunk_done(id, off, end, bytes),
            Item::LinkRef { dev, ino, name } => {
                self.links
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((dev, ino))
                    .or_default()
                    .push(name);
            }
            Item::LinkGroup { dev, ino, names } => self.link_group(dev, ino, &names),
        }
    }

    fn is_branch(&self, item: &Item) -> bool {
        matches!(item, Item::Dir { .. })
    }
    fn describe(&self, item: &Item) -> String {
        match item {
            Item::Dir { rel, .. } => format!("dir {}", fsops::show(rel)),
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
            Item::LinkRef { name, .. } => format!("hardlink {}", fsops::show(&name.rel)),
            Item::LinkGroup { names, .. } => format!(
                "hardlink group {}",
                names
                    .first()
                    .map(|n| fsops::show(&n.rel))
                    .unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_roundtrip() {
        let ids = DirIds {
            src: Some(fsops::Ident { dev: 1, ino: 2 }),
            dst: None,
        };
        let id = fsops::Ident { dev: 3, ino: 4 };
        let items = vec![
            Item::Dir {
                rel: b"a/\xff\n".to_vec(),
                ids,
            },
            Item::Batch(Batch {
                dir: b"d".to_vec(),
                ids,
                names: vec![b"x".to_vec(), b"-y z".to_vec()],
                absent: true,
                inos: vec![7, 0],
            }),
            Item::Chunk {
                id: 5,
                job: ChunkJob {
                    dir: b"d".to_vec(),
                    ids,
                    name: b"n".to_vec(),
                    src: id,
                    tmp: b"t".to_vec(),
                    tmp_id: id,
                    off: 6,
                    len: 7,
                },
            },
            Item::ChunkDone {
                id: 9,
                off: 8,
                end: ChunkEnd::In,
                bytes: 10,
            },
            Item::LinkRef {
                dev: 1,
                ino: 2,
                name: LinkName {
                    rel: b"r".to_vec(),
                    ids,
                },
            },
            Item::LinkGroup {
                dev: 1,
                ino: 2,
                names: vec![
                    LinkName {
                        rel: b"a".to_vec(),
                        ids,
                    },
                    LinkName {
                        rel: b"b".to_vec(),
                        ids: DirIds::default(),
                    },
                ],
            },
        ];
        for it in items {
            let buf = postcard::to_allocvec(&it).expect("encode");
            let back: Item = postcard::from_bytes(&buf).expect("decode");
            assert_eq!(format!("{it:?}"), format!("{back:?}"));
        }
    }
}
