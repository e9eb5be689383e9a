//! Verify pass: proof that the target holds the source. Read-only on both
//! sides: every directory is listed on both, every entry compared (type,
//! size, mtime in ns, mode, owner, symlink target, device numbers, xattrs and
//! ACLs, hardlink count and grouping, inode flags, directory times, project IDs, and
//! files' Lustre layouts when both trees are on Lustre), names only the target
//! has are reported, and with `--content` the data of every (or a sampled)
//! regular file is read on both sides and compared, big files in chunks that
//! any rank may take. Each difference is one line in the error log naming
//! the path and what differs; the exit status is 0 only if nothing differs.
//!
//! Content is compared byte for byte rather than by hash: both sides are
//! read by the same thread, so a hash would only add CPU time and a (tiny)
//! chance of a collision.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::{Batch, Batcher, Ctx, DirIds};
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Ident, Kind, Stat};

#[derive(Debug, Serialize, Deserialize)]
pub enum Item {
    Dir {
        rel: Vec<u8>,
        ids: DirIds,
    },
    /// Non-directories both listings have.
    Batch(Batch),
    /// One entry a manifest names (`--from-manifest`); `removed`: its last
    /// record says it was removed, so it must be gone from the target.
    Named {
        rel: Vec<u8>,
        removed: bool,
    },
    /// Bytes `off..off + len` of big file `rel` (identities on both sides).
    Chunk {
        rel: Vec<u8>,
        ids: (Ident, Ident),
        off: u64,
        len: u64,
    },
    /// A hardlinked file's inodes, for the rank that owns its source inode.
    Link(links::LinkName),
    /// The rest of a `--from-manifest` file.
    Manifest(from_manifest::Piece),
}

mod from_manifest;
mod links;
pub use from_manifest::first_pieces;

/// What the verify pass reads besides metadata.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOpts {
    /// Compare file data.
    pub content: bool,
    /// Of the files, the fraction whose data is compared (1.0: all),
    /// chosen by a hash of the path, so the same files every run.
    pub sample: f64,
    pub chunk_threshold: u64,
    pub chunk_size: u64,
    /// The walk covers the whole tree (not --from-manifest): hardlink
    /// counts are checked per group at the end.
    pub whole_tree: bool,
    /// `--from-manifest` files larger than this are refused.
    pub manifest_max_bytes: u64,
}

pub struct VerifyPass {
    pub ctx: Ctx,
    pub opts: VerifyOpts,
    /// Both trees on Lustre: layouts are compared too.
    pub lustre: Option<crate::lustre::Lustre>,
    /// Hardlink groups of the source inodes this rank owns.
    pub links: links::LinkGroups,
    /// Errors of this rank's walk after which some names went unseen (a
    /// directory not opened or listed to its end, an entry not stat'ed).
    pub missed: std::sync::atomic::AtomicU64,
    /// `--from-manifest`: the manifests naming the entries to compare.
    pub from: Vec<std::path::PathBuf>,
}

/// Kernel-maintained attributes that differ between any two filesystems.
const NOT_COMPARED: &[&[u8]] = &[b"security.selinux"];

impl VerifyPass {
    /// One difference: a line naming the path (counted as an error), and
    /// a `failed 0 differs` record in the manifest, which a copy or final
    /// pass takes with `--from-manifest` to repair exactly these.
    fn differs(&self, rel: &[u8], what: &str) {
        let call = "differs".to_string();
        self.ctx
            .act(rel, crate::manifest::Action::Failed { errno: 0, call });
        self.ctx.log.error_msg(Side::Target, rel, what);
    }

    /// An error after which the walk did not see some names (reported).
    fn unseen(&self, side: Side, rel: &[u8], e: fsops::OsError) {
        self.missed_some();
        self.ctx.err(side, rel, e);
    }

    /// The walk goes on past names it did not see (already reported).
    fn missed_some(&self) {
        self.missed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The walk of this rank went on past names it could not see.
    pub fn missed_names(&self) -> bool {
        self.missed.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    fn dir(&self, rel: &[u8], ids: DirIds, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let (sd, s) = match c.open_src_dir(rel, ids.src) {
            Ok(v) => v,
            Err(e) => return self.unseen(Side::Source, rel, e),
        };
        c.bump(&c.counters.dirs, 1);
        let (dd, d) = match c.open_dst_dir(rel, ids.dst) {
            Ok(v) => v,
            Err(e) if e.is_not_found() || e.errno == libc::ENOTDIR => {
                return self.differs(rel, "directory missing on the target");
            }
            Err(e) => return self.unseen(Side::Target, rel, e),
        };
        let diffs = self.dir_diffs((sd.as_fd(), &s), (dd.as_fd(), &d), rel);
        self.judge(rel, diffs);
        let Some(mut only_target) = self.target_names(rel, &dd) else {
            return;
        };
        let ids = DirIds {
            src: Some(s.ident()),
            dst: Some(d.ident()),
        };
        let listed = self.source_names(rel, (sd, dd.as_fd(), ids), &mut only_target, out);
        if listed {
            for name in only_target {
                self.differs(&fsops::join(rel, &name), "only on the target");
            }
        }
    }

    /// The target directory's names (the job's lock file left out), or
    /// None if it cannot be read to its end (reported).
    fn target_names(&self, rel: &[u8], dd: &OwnedFd) -> Option<HashSet<Vec<u8>>> {
        let fd = match fsops::open_dir_at(dd.as_fd(), b".") {
            Ok(fd) => fd,
            Err(e) => {
                self.unseen(Side::Target, rel, e);
                return None;
            }
        };
        let mut rd = fsops::DirReader::new(fd);
        let mut names = HashSet::new();
        while let Some(e) = rd.next_entry() {
            match e {
                Ok(e) if super::is_job_lock(rel, &e.name) => {}
                Ok(e) => {
                    names.insert(e.name);
                }
                Err(err) => {
                    self.unseen(Side::Target, rel, err);
                    return None;
                }
            }
        }
        Some(names)
    }

    /// Walk the source listing: subdirectories become items, other names
    /// go out in batches; names the target lacks are differences. True if
    /// the listing was read to its end.
    fn source_names(
        &self,
        rel: &[u8],
        (sd, dd, ids): (OwnedFd, BorrowedFd, DirIds),
        only_target: &mut HashSet<Vec<u8>>,
        out: &mut Emitter<'_, Item>,
    ) -> bool {
        let c = &self.ctx;
        let mut batch = Batcher::new(rel, ids, c.batch, Item::Batch);
        let mut rd = fsops::DirReader::new(sd);
        let listed = c.list_entries(
            &mut rd,
            rel,
            Side::Source,
            true,
            out,
            |rd, e, child, out| {
                if !only_target.remove(&e.name) {
                    return self.differs(&child, "missing on the target");
                }
                if rd.kind(&e).ok() == Some(Kind::Dir) {
                    self.subdir(rd.fd(), dd, &e.name, child, out);
                } else {
                    batch.push(e.name, out);
                }
            },
        );
        batch.finish(out);
        if listed != super::Listed::Complete {
            // Reported by list_entries; the names after the failure went unseen.
            self.missed_some();
        }
        listed == super::Listed::Complete
    }

    /// A source directory: walked if the target has a directory there.
    fn subdir(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        child: Vec<u8>,
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        let s = match fsops::stat_at(sd, name) {
            Ok(s) if s.kind == Kind::Dir => s,
            Ok(_) => return, // replaced since the listing: not judged now
            Err(e) if e.is_not_found() => return,
            Err(e) => return self.unseen(Side::Source, &child, e),
        };
        if c.is_other_root(Side::Source, &s) {
            self.missed_some();
            return c.report_other_root(Side::Source, &child);
        }
        match fsops::stat_at(dd, name) {
            Ok(d) if d.kind == Kind::Dir && !c.is_other_root(Side::Target, &d) => {
                let ids = DirIds {
                    src: Some(s.ident()),
                    dst: Some(d.ident()),
                };
                out.push(Item::Dir { rel: child, ids });
            }
            Ok(d) => self.differs(&child, &format!("type dir vs {}", d.kind.name())),
            Err(e) if e.is_not_found() => self.differs(&child, "missing on the target"),
            Err(e) => self.unseen(Side::Target, &child, e),
        }
    }

    fn batch(&self, b: Batch, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let opened = (
            c.open_src_dir(&b.dir, b.ids.src),
            c.open_dst_dir(&b.dir, b.ids.dst),
        );
        let (sd, dd) = match opened {
            (Ok((sd, _)), Ok((dd, _))) => (sd, dd),
            (Err(e), _) => return self.unseen(Side::Source, &b.dir, e),
            (_, Err(e)) => return self.unseen(Side::Target, &b.dir, e),
        };
        // Files' project IDs cost an open per side: compared where the
        // directory has projects on either side (as the copy decides).
        let projects = has_projects(sd.as_fd()) || has_projects(dd.as_fd());
        for name in b.names {
            if out.stopping() {
                return;
            }
            let rel = fsops::join(&b.dir, &name);
            self.entry(sd.as_fd(), dd.as_fd(), &name, &rel, out);
            if projects {
                self.file_project(sd.as_fd(), dd.as_fd(), &name, &rel);
            }
        }
    }

    /// Compare one non-directory both sides list.
    fn entry(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        rel: &[u8],
        out: &mut Emitter<'_, Item>,
    ) {
        let c = &self.ctx;
        let s = match fsops::stat_at(sd, name) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return, // gone since the listing
            Err(e) => return self.unseen(Side::Source, rel, e),
        };
        c.bump(&c.counters.scanned, 1);
        if c.filter.skip(&s) {
            return c.bump(&c.counters.skipped, 1);
        }
        let d = match fsops::stat_at(dd, name) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return self.differs(rel, "missing on the target"),
            Err(e) => return self.unseen(Side::Target, rel, e),
        };
        let mut diffs = self.entry_diffs(sd, dd, name, &s, &d);
        if diffs.is_empty() {
            let at = (At::Name(sd, name), At::Name(dd, name));
            diffs.extend(self.xattr_diffs(at.0, at.1, rel));
        }
        if diffs.is_empty() && s.kind == Kind::File && self.lustre.is_some() {
            diffs.extend(self.file_layout_diff(sd, dd, name, rel, (&s, &d)));
        }
        let clean = diffs.is_empty();
        self.judge(rel, diffs);
        if s.kind == Kind::File && d.kind == Kind::File && s.nlink > 1 {
            self.link_name(rel, &s, &d, out);
        }
        if clean && s.kind == Kind::File && self.wants_content(rel) {
            self.content(sd, dd, name, rel, (&s, &d), out);
        }
    }

    /// Metadata differences of two entries of the same name.
    fn entry_diffs(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        s: &Stat,
        d: &Stat,
    ) -> Vec<String> {
        if s.kind != d.kind {
            let kinds = (s.kind.name(), d.kind.name());
            return vec![format!("type {} vs {}", kinds.0, kinds.1)];
        }
        let mut diffs = self.meta_diffs(s, d);
        match s.kind {
            Kind::File => {
                if s.size != d.size {
                    diffs.push(format!("size {} vs {}", s.size, d.size));
                }
                // A hardlinked file of a whole-tree walk is judged by its
                // group (links.rs): it may have names outside the tree.
                let by_group = self.opts.whole_tree && s.nlink > 1;
                if s.nlink != d.nlink && !by_group {
                    diffs.push(format!("hard links {} vs {}", s.nlink, d.nlink));
                }
                if s.flags != d.flags {
                    diffs.push(format!("inode flags {:#x} vs {:#x}", s.flags, d.flags));
                }
            }
            Kind::Symlink => match (fsops::readlink_at(sd, name), fsops::readlink_at(dd, name)) {
                (Ok(a), Ok(b)) if a != b => diffs.push(format!(
                    "symlink target {} vs {}",
                    fsops::show(&a),
                    fsops::show(&b)
                )),
                (Ok(_), Ok(_)) => {}
                _ => diffs.push("symlink target unreadable".into()),
            },
            Kind::Char | Kind::Block if s.rdev != d.rdev => {
                diffs.push(format!("device {:#x} vs {:#x}", s.rdev, d.rdev));
            }
            _ => {}
        }
        if s.kind != Kind::Symlink && s.mtime != d.mtime {
            diffs.push(format!("mtime {} vs {}", show_time(s), show_time(d)));
        }
        diffs
    }

    /// Mode and owner, for every kind.
    fn meta_diffs(&self, s: &Stat, d: &Stat) -> Vec<String> {
        let mut diffs = Vec::new();
        if s.perm != d.perm && s.kind != Kind::Symlink {
            diffs.push(format!("mode {:o} vs {:o}", s.perm, d.perm));
        }
        if (s.uid, s.gid) != (d.uid, d.gid) {
            diffs.push(format!("owner {}:{} vs {}:{}", s.uid, s.gid, d.uid, d.gid));
        }
        diffs
    }

    /// Extended attributes (ACLs are `system.posix_acl_*` among them).
    fn xattr_diffs(&self, s: At, d: At, rel: &[u8]) -> Vec<String> {
        let (a, b) = match (xattrs(s), xattrs(d)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) => {
                self.ctx.err(Side::Source, rel, e);
                return Vec::new();
            }
            (_, Err(e)) => {
                self.ctx.err(Side::Target, rel, e);
                return Vec::new();
            }
        };
        let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("xattr {}", fsops::show(k)))
            .collect()
    }

    fn judge(&self, rel: &[u8], diffs: Vec<String>) {
        let c = &self.ctx;
        if diffs.is_empty() {
            c.bump(&c.counters.uptodate, 1);
        } else {
            self.differs(rel, &format!("differs: {}", diffs.join(", ")));
        }
    }

    fn wants_content(&self, rel: &[u8]) -> bool {
        if !self.opts.content || self.opts.sample <= 0.0 {
            return false;
        }
        if self.opts.sample >= 1.0 {
            return true;
        }
        // A fixed-key hash: the same files are sampled on every rank and run.
        let mut h = std::hash::DefaultHasher::new();
        rel.hash(&mut h);
        (h.finish() as f64 / u64::MAX as f64) < self.opts.sample
    }

    /// Compare the data of a file whose metadata matched: here if small,
    /// else as chunks for any rank.
    fn content(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        rel: &[u8],
        (s, d): (&Stat, &Stat),
        out: &mut Emitter<'_, Item>,
    ) {
        if s.size < self.opts.chunk_threshold.max(1) {
            return self.compare_range(sd, dd, name, rel, (s.ident(), d.ident()), (0, s.size));
        }
        let step = self.opts.chunk_size.max(4096);
        let mut off = 0;
        while off < s.size {
            let len = step.min(s.size - off);
            out.push(Item::Chunk {
                rel: rel.to_vec(),
                ids: (s.ident(), d.ident()),
                off,
                len,
            });
            off += len;
        }
    }

    fn chunk(&self, rel: &[u8], ids: (Ident, Ident), off: u64, len: u64) {
        let c = &self.ctx;
        let (dir, name) = fsops::parent_and_name(rel);
        let (sd, dd) = match (c.open_src_dir(dir, None), c.open_dst_dir(dir, None)) {
            (Ok((sd, _)), Ok((dd, _))) => (sd, dd),
            (Err(e), _) => return c.err(Side::Source, dir, e),
            (_, Err(e)) => return c.err(Side::Target, dir, e),
        };
        self.compare_range(sd.as_fd(), dd.as_fd(), name, rel, ids, (off, len));
    }

    /// Read `off..off + len` of both files (checked to be the listed
    /// inodes) and compare; the first differing byte is named.
    fn compare_range(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        rel: &[u8],
        ids: (Ident, Ident),
        (off, len): (u64, u64),
    ) {
        let c = &self.ctx;
        let sf = match fsops::open_read_checked(sd, name, ids.0) {
            Ok((fd, _)) => fd,
            Err(e) => return c.err(Side::Source, rel, e),
        };
        let df = match fsops::open_read_checked(dd, name, ids.1) {
            Ok((fd, _)) => fd,
            Err(e) => return c.err(Side::Target, rel, e),
        };
        if len >= 1 << 20 {
            fsops::advise_sequential(sf.as_fd());
            fsops::advise_sequential(df.as_fd());
        }
        match super::compare::first_difference(sf.as_fd(), df.as_fd(), off, len, &c.counters.data) {
            Ok(None) => {}
            Ok(Some(at)) => self.differs(rel, &format!("differs: content at byte {at}")),
            Err((side, e)) => c.err(side, rel, e),
        }
    }
}

impl VerifyPass {
    /// One entry from a manifest: compared alone (a directory's own
    /// metadata, not its subtree), or checked gone if it was removed.
    fn named(&self, rel: &[u8], removed: bool, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        if rel.is_empty() {
            return; // the roots: their times move with every pass
        }
        let (dir, name) = fsops::parent_and_name(rel);
        let opened = (c.open_src_dir(dir, None), c.open_dst_dir(dir, None));
        let (sd, dd) = match opened {
            (Ok((sd, _)), Ok((dd, _))) => (sd, dd),
            (Err(e), _) if removed && e.is_not_found() => return self.gone(c, rel, dir),
            (Err(e), _) => return c.err(Side::Source, dir, e),
            (_, Err(e)) if removed && e.is_not_found() => return,
            (_, Err(e)) => return c.err(Side::Target, dir, e),
        };
        let (sd, dd) = (sd.as_fd(), dd.as_fd());
        match fsops::stat_at(sd, name) {
            Ok(s) if s.kind == Kind::Dir => self.named_dir(sd, dd, name, rel),
            Ok(_) => self.entry(sd, dd, name, rel, out),
            Err(e) if e.is_not_found() => match fsops::stat_at(dd, name) {
                Err(e) if e.is_not_found() => {}
                Ok(_) => self.differs(rel, "only on the target"),
                Err(e) => c.err(Side::Target, rel, e),
            },
            Err(e) => c.err(Side::Source, rel, e),
        }
    }

    /// A removed entry whose source parent is gone too: the target must
    /// not have it.
    fn gone(&self, c: &Ctx, rel: &[u8], dir: &[u8]) {
        match c.open_dst_dir(dir, None) {
            Err(e) if e.is_not_found() => {}
            Err(e) => c.err(Side::Target, dir, e),
            Ok((dd, _)) => {
                let (_, name) = fsops::parent_and_name(rel);
                if fsops::stat_at(dd.as_fd(), name).is_ok() {
                    self.differs(rel, "only on the target");
                }
            }
        }
    }

    fn named_dir(&self, sd: BorrowedFd, dd: BorrowedFd, name: &[u8], rel: &[u8]) {
        let c = &self.ctx;
        let opened = (fsops::open_dir_at(sd, name), fsops::open_dir_at(dd, name));
        let (s, d) = match opened {
            (Ok(s), Ok(d)) => (s, d),
            (Err(e), _) => return c.err(Side::Source, rel, e),
            (_, Err(e)) if e.is_not_found() || e.errno == libc::ENOTDIR => {
                return self.differs(rel, "directory missing on the target");
            }
            (_, Err(e)) => return c.err(Side::Target, rel, e),
        };
        let (st, dt) = match (fsops::fstat(s.as_fd()), fsops::fstat(d.as_fd())) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) => return c.err(Side::Source, rel, e),
            (_, Err(e)) => return c.err(Side::Target, rel, e),
        };
        let diffs = self.dir_diffs((s.as_fd(), &st), (d.as_fd(), &dt), rel);
        self.judge(rel, diffs);
    }

    /// A directory's own differences (not its entries'): mode, owner, mtime,
    /// xattrs and ACLs, project ID; both opened and fstat'ed by the caller.
    fn dir_diffs(
        &self,
        (sd, s): (BorrowedFd, &Stat),
        (dd, d): (BorrowedFd, &Stat),
        rel: &[u8],
    ) -> Vec<String> {
        let mut diffs = self.meta_diffs(s, d);
        if s.mtime != d.mtime {
            diffs.push(format!("mtime {} vs {}", show_time(s), show_time(d)));
        }
        diffs.extend(self.xattr_diffs(At::Fd(sd), At::Fd(dd), rel));
        diffs.extend(project_diff(sd, dd));
        diffs
    }
}

impl VerifyPass {
    /// A regular file's project ID on both sides (files only: a symlink
    /// cannot be opened, a fifo is not worth it).
    fn file_project(&self, sd: BorrowedFd, dd: BorrowedFd, name: &[u8], rel: &[u8]) {
        let Ok(s) = fsops::stat_at(sd, name) else {
            return;
        };
        if s.kind != Kind::File {
            return;
        }
        let Ok(d) = fsops::stat_at(dd, name) else {
            return;
        };
        let opened = (
            fsops::open_read_checked(sd, name, s.ident()),
            fsops::open_read_checked(dd, name, d.ident()),
        );
        if let (Ok((a, _)), Ok((b, _))) = opened {
            if let Some(diff) = project_diff(a.as_fd(), b.as_fd()) {
                self.differs(rel, &format!("differs: {diff}"));
            }
        }
    }
}

impl VerifyPass {
    /// Lustre layouts of two open files, the source's as this run's copy
    /// creates it (wide-striping rule): the difference, if any. Directory
    /// default layouts are not compared: the copy sets them only on the
    /// directories it creates, never on existing ones (the root included).
    fn layout_diff(&self, s: BorrowedFd, d: BorrowedFd, rel: &[u8]) -> Option<String> {
        let l = self.lustre.as_ref()?;
        let a = l
            .layout_of_fd(s)
            .map_err(|e| self.ctx.err(Side::Source, rel, e))
            .ok()
            .map(|a| l.as_created(&a))?;
        let b = l
            .layout_of_fd(d)
            .map_err(|e| self.ctx.err(Side::Target, rel, e))
            .ok()?;
        (a != b).then(|| format!("layout {a} vs {b}"))
    }

    /// A file's layout, read through fds checked to be the files just
    /// compared (never by a name that may be a link by now).
    fn file_layout_diff(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        rel: &[u8],
        (s, d): (&Stat, &Stat),
    ) -> Option<String> {
        let open = |dir, st: &Stat, side| {
            fsops::open_read_checked(dir, name, st.ident())
                .map_err(|e| self.ctx.err(side, rel, e))
                .ok()
        };
        let (sf, _) = open(sd, s, Side::Source)?;
        let (df, _) = open(dd, d, Side::Target)?;
        self.layout_diff(sf.as_fd(), df.as_fd(), rel)
    }
}

/// An entry with a project ID or the inherit flag.
fn has_projects(fd: BorrowedFd) -> bool {
    fsops::get_fsxattr(fd)
        .is_ok_and(|x| x.fsx_projid != 0 || x.fsx_xflags & fsops::XFLAG_PROJINHERIT != 0)
}

/// The project ID and inherit flag of two open entries, where both sides
/// have project IDs at all.
fn project_diff(s: BorrowedFd, d: BorrowedFd) -> Option<String> {
    let (a, b) = (fsops::get_fsxattr(s).ok()?, fsops::get_fsxattr(d).ok()?);
    let inherit = |x: &fsops::FsXattr| x.fsx_xflags & fsops::XFLAG_PROJINHERIT != 0;
    if a.fsx_projid != b.fsx_projid {
        return Some(format!("project {} vs {}", a.fsx_projid, b.fsx_projid));
    }
    (inherit(&a) != inherit(&b)).then(|| "project-inherit flag".to_string())
}

/// Where an xattr list is read: an open fd, or a name in a directory (a
/// symlink's own attributes, without following it).
#[derive(Clone, Copy)]
enum At<'a> {
    Fd(BorrowedFd<'a>),
    Name(BorrowedFd<'a>, &'a [u8]),
}

fn xattrs(at: At) -> fsops::Res<BTreeMap<Vec<u8>, Vec<u8>>> {
    let (fd, dir, name): (Option<BorrowedFd>, BorrowedFd, &[u8]) = match at {
        At::Fd(fd) => (Some(fd), fd, b""),
        At::Name(dir, name) => (None, dir, name),
    };
    let mut map = BTreeMap::new();
    for key in fsops::list_xattrs(fd, dir, name)? {
        if NOT_COMPARED.contains(&key.as_slice())
            || super::copy::is_lustre_internal(&key)
            || super::copy::is_lmpi_own(&key)
        {
            continue;
        }
        match fsops::get_xattr(fd, dir, name, &key) {
            Ok(v) => {
                map.insert(key, v);
            }
            Err(e) if e.errno == libc::ENODATA => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(map)
}

fn show_time(s: &Stat) -> String {
    format!("{}.{:09}", s.mtime.sec, s.mtime.nsec)
}

impl Processor for VerifyPass {
    type Item = Item;
    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        match item {
            Item::Dir { rel, ids } => self.dir(&rel, ids, out),
            Item::Batch(b) => self.batch(b, out),
            Item::Chunk { rel, ids, off, len } => self.chunk(&rel, ids, off, len),
            Item::Named { rel, removed } => self.named(&rel, removed, out),
            Item::Link(n) => self.link_check(n),
            Item::Manifest(p) => self.piece(p, out),
        }
    }
    fn is_branch(&self, item: &Item) -> bool {
        matches!(item, Item::Dir { .. })
    }
    fn describe(&self, item: &Item) -> String {
        match item {
            Item::Dir { rel, .. } => format!("verify dir {}", fsops::show(rel)),
            Item::Batch(b) => format!("verify {} in {}", b.names.len(), fsops::show(&b.dir)),
            Item::Chunk { rel, off, .. } => format!("verify {} @{off}", fsops::show(rel)),
            Item::Named { rel, .. } => format!("verify {}", fsops::show(rel)),
            Item::Link(n) => format!("verify the hard links of {}", fsops::show(&n.rel)),
            Item::Manifest(p) => match self.from.get(p.file) {
                Some(f) => format!("read {} from line {}", f.display(), p.at.line + 1),
                None => "read a manifest".into(),
            },
        }
    }
}
