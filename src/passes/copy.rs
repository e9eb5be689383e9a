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

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::{get_names, put_names, Ctx};
use crate::engine::{Emitter, Processor};
use crate::errlog::Side;
use crate::fsops::{self, Kind, OsError, Stat};
use crate::wire::{Malformed, Reader, Wire, Writer};

#[derive(Debug)]
pub enum Item {
    Dir {
        rel: Vec<u8>,
    },
    Batch {
        dir: Vec<u8>,
        names: Vec<Vec<u8>>,
    },
    Chunk {
        dir: Vec<u8>,
        name: Vec<u8>,
        tmp: Vec<u8>,
        id: u64,
        off: u64,
        len: u64,
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
            Item::Batch { dir, names } => {
                w.u8(1).bytes(dir);
                put_names(w, names);
            }
            Item::Chunk {
                dir,
                name,
                tmp,
                id,
                off,
                len,
            } => {
                w.u8(2)
                    .bytes(dir)
                    .bytes(name)
                    .bytes(tmp)
                    .u64(*id)
                    .u64(*off)
                    .u64(*len);
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
            1 => Item::Batch {
                dir: r.bytes()?.to_vec(),
                names: get_names(r)?,
            },
            2 => Item::Chunk {
                dir: r.bytes()?.to_vec(),
                name: r.bytes()?.to_vec(),
                tmp: r.bytes()?.to_vec(),
                id: r.u64()?,
                off: r.u64()?,
                len: r.u64()?,
            },
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

struct PendingFile {
    dir: Vec<u8>,
    name: Vec<u8>,
    tmp: Vec<u8>,
    st: Stat,
    remaining: u64,
    failed: bool,
    started: Instant,
}

pub struct CopyOpts {
    pub chunk_threshold: u64,
    pub chunk_size: u64,
    /// Compare xattrs of files that are otherwise up to date.
    pub check_xattrs: bool,
}

/// Where an entry's xattrs are read or written: through an open fd, or as
/// `name` in directory `dir` without following a symlink.
#[derive(Clone, Copy)]
struct At<'a> {
    fd: Option<BorrowedFd<'a>>,
    dir: BorrowedFd<'a>,
    name: &'a [u8],
}

impl<'a> At<'a> {
    fn fd(fd: BorrowedFd<'a>) -> At<'a> {
        At {
            fd: Some(fd),
            dir: fd,
            name: b"",
        }
    }

    fn name(dir: BorrowedFd<'a>, name: &'a [u8]) -> At<'a> {
        At {
            fd: None,
            dir,
            name,
        }
    }
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

/// Hardlinked source files seen by this rank: (dev, ino) -> their rel paths.
type LinkGroups = HashMap<(u64, u64), Vec<Vec<u8>>>;

/// One chunk of a big file, as a thread of this rank copies it.
struct ChunkJob {
    dir: Vec<u8>,
    name: Vec<u8>,
    tmp: Vec<u8>,
    off: u64,
    len: u64,
}

/// What a newly created file in a target directory already has.
#[derive(Debug, Clone, Copy)]
struct Landing {
    /// Its group: the directory's if setgid, else ours.
    gid: u32,
    /// The directory has a default ACL, which new files inherit.
    inherits_acl: bool,
}

impl Landing {
    /// Assume the worst: always chown, chmod and sync xattrs.
    const UNKNOWN: Landing = Landing {
        gid: u32::MAX,
        inherits_acl: true,
    };
}

/// Below this, page-cache advice costs more syscalls than it saves.
const BIG_FOR_ADVICE: u64 = 1 << 20;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn same_data(s: &Stat, d: &Stat) -> bool {
    s.kind == d.kind
        && s.size == d.size
        && s.mtime == d.mtime
        && (!matches!(s.kind, Kind::Char | Kind::Block) || s.rdev == d.rdev)
}

fn same_meta(s: &Stat, d: &Stat) -> bool {
    s.uid == d.uid && s.gid == d.gid && (s.kind == Kind::Symlink || s.perm == d.perm)
}

/// Lustre's own attributes: layouts (`lustre.lov`, `trusted.lov`, `trusted.lmv`,
/// `trusted.dmv`) are the Lustre layer's job, and FIDs, link EAs, SOM, HSM
/// state belong to the inode. Never copied, never removed.
const LUSTRE_INTERNAL: &[&[u8]] = &[
    b"trusted.lov",
    b"trusted.lma",
    b"trusted.link",
    b"trusted.lmv",
    b"trusted.dmv",
    b"trusted.som",
    b"trusted.fid",
    b"trusted.version",
    b"trusted.hsm",
];

/// Extended attributes lmpi copies.
fn copy_key(key: &[u8], is_root: bool) -> bool {
    !key.starts_with(b"lustre.")
        && !LUSTRE_INTERNAL.contains(&key)
        && (is_root || key.starts_with(b"user.") || key.starts_with(b"system.posix_acl"))
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

    /// Phase 2 seeds: this rank's hardlink groups.
    pub fn take_link_groups(&self) -> Vec<Item> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .drain()
            .map(|(_, mut paths)| {
                paths.sort();
                paths.dedup();
                Item::LinkGroup { paths }
            })
            .collect()
    }

    /// After a stop: files whose chunks never all arrived lose their temp file.
    pub fn abandon_pending(&self) -> usize {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let n = p.len();
        for (_, f) in p.drain() {
            if let Ok(dd) = self.ctx.open_dst_dir(&f.dir) {
                let _ = fsops::unlink_at(dd.as_fd(), &f.tmp);
            }
        }
        n
    }

    fn dir(&self, rel: &[u8], out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let sd = match c.open_src_dir(rel) {
            Ok(fd) => fd,
            Err(e) => return c.err(Side::Source, rel, e),
        };
        let dd = match c.open_dst_dir(rel) {
            Ok(fd) => fd,
            // In a dry run a new directory's target does not exist: keep walking.
            Err(e) if c.dry_run && e.is_not_found() => return self.list(rel, sd, None, out),
            Err(e) => return c.err(Side::Target, rel, e),
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
        let mut batch: Vec<Vec<u8>> = Vec::new();
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
            batch.push(e.name);
            if batch.len() >= c.batch {
                out.push(Item::Batch {
                    dir: rel.to_vec(),
                    names: std::mem::take(&mut batch),
                });
            }
        }
        if !batch.is_empty() {
            out.push(Item::Batch {
                dir: rel.to_vec(),
                names: batch,
            });
        }
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

    /// Create the target file `out_name` (O_EXCL) for source `name`: with the
    /// source's layout on Lustre. A layout that cannot be read or applied is
    /// reported for this file, which is then created with the default layout.
    fn create_target(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        rel: &[u8],
        name: &[u8],
        out_name: &[u8],
        perm: u32,
    ) -> Result<(OwnedFd, Option<crate::lustre::Layout>), OsError> {
        let Some(l) = &self.lustre else {
            return fsops::create_at(dd, out_name, perm).map(|f| (f, None));
        };
        let lay = match l.layout_of(sd, name) {
            Ok(lay) => lay,
            Err(e) => {
                self.ctx.log.error_msg(
                    Side::Source,
                    rel,
                    &format!("layout not read, default used: {e}"),
                );
                return fsops::create_at(dd, out_name, perm).map(|f| (f, None));
            }
        };
        match l.create_file(dd, out_name, perm, &lay) {
            Ok(f) => Ok((f, Some(lay))),
            Err(e) if e.errno == libc::EEXIST => Err(e),
            Err(e) => {
                self.ctx.log.error_msg(
                    Side::Target,
                    rel,
                    &format!("layout not applied, default used: {e}"),
                );
                fsops::create_at(dd, out_name, perm).map(|f| (f, None))
            }
        }
    }

    /// Owner, mode and xattrs (ACLs included) of a directory; never its times.
    /// Directories are few, so their xattrs are compared on every pass.
    fn sync_dir_meta(&self, sd: BorrowedFd, dd: BorrowedFd, s: &Stat, d: &Stat) -> Res<()> {
        if self.ctx.dry_run {
            return Ok(());
        }
        let mut changed = false;
        if s.uid != d.uid || s.gid != d.gid {
            on_dst(fsops::fchown(dd, s.uid, s.gid))?;
            changed = true;
        }
        let perm = if self.ctx.is_root {
            s.perm
        } else {
            s.perm | 0o700
        };
        if d.perm != perm || changed {
            // chown may have cleared setgid: set the mode after it.
            on_dst(fsops::fchmod(dd, perm))?;
            changed = true;
        }
        changed |= self.sync_xattrs(At::fd(sd), At::fd(dd), true)?;
        if changed {
            self.ctx.bump(&self.ctx.counters.meta, 1);
        }
        Ok(())
    }

    /// Make the target's xattrs exactly the source's (only compare unless
    /// `apply`); true if they differ(ed).
    fn sync_xattrs(&self, src: At, dst: At, apply: bool) -> Res<bool> {
        let s = self.xattr_map(src).map_err(|e| Fail::Os(Side::Source, e))?;
        let d = self.xattr_map(dst).map_err(|e| Fail::Os(Side::Target, e))?;
        let mut changed = false;
        for (k, v) in &s {
            if d.get(k) != Some(v) {
                if apply {
                    on_dst(fsops::set_xattr(dst.fd, dst.dir, dst.name, k, v))?;
                }
                changed = true;
            }
        }
        for k in d.keys().filter(|k| !s.contains_key(*k)) {
            if apply {
                on_dst(fsops::remove_xattr(dst.fd, dst.dir, dst.name, k))?;
            }
            changed = true;
        }
        Ok(changed)
    }

    /// What a file created in target directory `dd` starts with. One fstat and
    /// one getxattr per batch save an fchown and an xattr sync per file.
    fn landing(&self, dd: BorrowedFd) -> Landing {
        let Ok(st) = fsops::fstat(dd) else {
            return Landing::UNKNOWN;
        };
        let gid = if st.perm & 0o2000 != 0 {
            st.gid
        } else {
            self.egid
        };
        let inherits_acl = !matches!(
            fsops::get_xattr(Some(dd), dd, b"", b"system.posix_acl_default"),
            Err(e) if e.errno == libc::ENODATA || e.errno == libc::ENOTSUP
        );
        Landing { gid, inherits_acl }
    }

    fn xattr_map(&self, at: At) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>, OsError> {
        let mut m = std::collections::BTreeMap::new();
        let keys = match fsops::list_xattrs(at.fd, at.dir, at.name) {
            Ok(k) => k,
            Err(e) if e.errno == libc::EPERM || e.errno == libc::EACCES => return Ok(m),
            Err(e) => return Err(e),
        };
        for k in keys.into_iter().filter(|k| copy_key(k, self.ctx.is_root)) {
            match fsops::get_xattr(at.fd, at.dir, at.name, &k) {
                Ok(v) => {
                    m.insert(k, v);
                }
                Err(e) if e.errno == libc::ENODATA => {}
                Err(e) => return Err(e),
            }
        }
        Ok(m)
    }

    fn copy_xattrs(
        &self,
        sfd: Option<BorrowedFd>,
        dfd: Option<BorrowedFd>,
        sd: BorrowedFd,
        sname: &[u8],
        dd: BorrowedFd,
        dname: &[u8],
    ) -> Res<()> {
        let keys = match fsops::list_xattrs(sfd, sd, sname) {
            Ok(k) => k,
            Err(e) if e.errno == libc::EPERM || e.errno == libc::EACCES => return Ok(()),
            Err(e) => return Err(Fail::Os(Side::Source, e)),
        };
        for key in keys.iter().filter(|k| copy_key(k, self.ctx.is_root)) {
            let val = match fsops::get_xattr(sfd, sd, sname, key) {
                Ok(v) => v,
                Err(e) if e.errno == libc::ENODATA => continue,
                Err(e) => return Err(Fail::Os(Side::Source, e)),
            };
            on_dst(fsops::set_xattr(dfd, dd, dname, key, &val))?;
        }
        Ok(())
    }

    fn batch(&self, dir: &[u8], names: Vec<Vec<u8>>, out: &mut Emitter<'_, Item>) {
        let c = &self.ctx;
        let sd = match c.open_src_dir(dir) {
            Ok(fd) => fd,
            Err(e) => return c.err(Side::Source, dir, e),
        };
        let dd = match c.open_dst_dir(dir) {
            Ok(fd) => Some(fd),
            Err(e) if c.dry_run && e.is_not_found() => None,
            Err(e) => return c.err(Side::Target, dir, e),
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
        let meta_ok = same_meta(s, d);
        let (src, dst) = (At::name(sd, name), At::name(dd, name));
        let xattrs_ok = !self.opts.check_xattrs || !self.sync_xattrs(src, dst, false)?;
        if meta_ok && xattrs_ok {
            c.bump(&c.counters.uptodate, 1);
            return Ok(());
        }
        if c.dry_run {
            let what = if meta_ok { "xattrs" } else { "owner/mode" };
            crate::report::say(&format!("would fix {what}: {}", fsops::show(rel)));
            return Ok(());
        }
        if !meta_ok {
            if s.uid != d.uid || s.gid != d.gid {
                on_dst(fsops::chown_at(dd, name, s.uid, s.gid))?;
            }
            if s.kind != Kind::Symlink {
                on_dst(fsops::chmod_at(dd, name, s.perm))?;
            }
        }
        // After chmod: it rewrites the ACL mask, which the sync then checks.
        if self.opts.check_xattrs {
            self.sync_xattrs(src, dst, true)?;
        }
        c.bump(&c.counters.meta, 1);
        Ok(())
    }

    fn same_link(&self, sd: BorrowedFd, dd: BorrowedFd, name: &[u8]) -> Res<bool> {
        Ok(on_src(fsops::readlink_at(sd, name))? == on_dst(fsops::readlink_at(dd, name))?)
    }

    /// Owner, mode, xattrs, then times: the times go last because they are what
    /// makes the file look complete.
    fn finish_file(
        &self,
        sfd: BorrowedFd,
        dfd: BorrowedFd,
        sd: BorrowedFd,
        dd: BorrowedFd,
        s: &Stat,
        landing: Landing,
    ) -> Res<()> {
        let l = landing;
        if s.uid != self.euid || s.gid != l.gid {
            on_dst(fsops::fchown(dfd, s.uid, s.gid))?;
        }
        // An inherited default ACL changes the mode a file is created with.
        if s.perm & 0o7000 != 0 || !self.ctx.is_root || l.inherits_acl {
            on_dst(fsops::fchmod(dfd, s.perm))?;
        }
        if l.inherits_acl {
            self.sync_xattrs(At::fd(sfd), At::fd(dfd), true)?;
        } else {
            self.copy_xattrs(Some(sfd), Some(dfd), sd, b"", dd, b"")?;
        }
        on_dst(fsops::futimes(dfd, s.atime, s.mtime))
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_file(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        rel: &[u8],
        name: &[u8],
        s: &Stat,
        replace: bool,
        landing: Landing,
    ) -> Res<()> {
        let t0 = Instant::now();
        let src = on_src(fsops::open_read_at(sd, name))?;
        let tmp = if replace {
            Some(self.temp_name())
        } else {
            None
        };
        let out_name: &[u8] = tmp.as_deref().unwrap_or(name);
        let dst = match self.create_target(sd, dd, rel, name, out_name, s.perm & 0o777) {
            Ok((f, _)) => f,
            // Someone created it since we looked: go the replace way.
            Err(e) if e.errno == libc::EEXIST && !replace => {
                return self.copy_file(sd, dd, rel, name, s, true, landing)
            }
            Err(e) => return Err(Fail::Os(Side::Target, e)),
        };
        let r = (|| -> Res<u64> {
            if s.size >= BIG_FOR_ADVICE {
                fsops::advise_sequential(src.as_fd());
            }
            let bytes = self.copy_data(src.as_fd(), dst.as_fd(), 0, s.size, s.maybe_sparse())?;
            // Holes at the end (or a source that shrank) leave the file short.
            if bytes != s.size {
                on_dst(fsops::ftruncate(dst.as_fd(), s.size))?;
            }
            let after = on_src(fsops::fstat(src.as_fd()))?;
            if after.size != s.size || after.mtime != s.mtime {
                return Err(Fail::Changed);
            }
            self.finish_file(src.as_fd(), dst.as_fd(), sd, dd, s, landing)?;
            if let Some(t) = &tmp {
                on_dst(fsops::rename_at(dd, t, name))?;
            }
            Ok(bytes)
        })();
        match r {
            Ok(bytes) => {
                let c = &self.ctx;
                c.bump(&c.counters.files, 1);
                c.bump(&c.counters.data, bytes);
                c.hist.record(s.size, t0.elapsed().as_micros() as u64);
                Ok(())
            }
            Err(f) => {
                // Never leave a partial file behind under any name.
                let _ = fsops::unlink_at(dd, out_name);
                Err(f)
            }
        }
    }

    fn copy_data(
        &self,
        src: BorrowedFd,
        dst: BorrowedFd,
        off: u64,
        end: u64,
        sparse: bool,
    ) -> Res<u64> {
        let segs = on_src(fsops::data_segments(src, off, end, sparse))?;
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            let mut bytes = 0;
            for (a, z) in segs {
                bytes += fsops::copy_range(src, dst, a, z - a, &mut buf).map_err(|e| {
                    let side = if e.op == "read" {
                        Side::Source
                    } else {
                        Side::Target
                    };
                    Fail::Os(side, e)
                })?;
                if z - a >= BIG_FOR_ADVICE {
                    fsops::advise_dontneed(src, a, z - a);
                }
            }
            Ok(bytes)
        })
    }

    fn make_symlink(&self, sd: BorrowedFd, dd: BorrowedFd, name: &[u8], s: &Stat) -> Res<()> {
        let target = on_src(fsops::readlink_at(sd, name))?;
        match fsops::symlink_at(&target, dd, name) {
            Err(e) if e.errno == libc::EEXIST => {
                on_dst(fsops::unlink_at(dd, name))?;
                on_dst(fsops::symlink_at(&target, dd, name))?;
            }
            r => on_dst(r)?,
        }
        if self.ctx.is_root || s.uid != self.euid || s.gid != self.egid {
            on_dst(fsops::chown_at(dd, name, s.uid, s.gid))?;
        }
        on_dst(fsops::utimes_at(dd, name, s.atime, s.mtime))?;
        self.ctx.bump(&self.ctx.counters.files, 1);
        Ok(())
    }

    fn make_special(&self, dd: BorrowedFd, name: &[u8], s: &Stat) -> Res<()> {
        match fsops::mknod_at(dd, name, s) {
            Err(e) if e.errno == libc::EEXIST => {
                on_dst(fsops::unlink_at(dd, name))?;
                on_dst(fsops::mknod_at(dd, name, s))?;
            }
            r => on_dst(r)?,
        }
        if self.ctx.is_root || s.uid != self.euid || s.gid != self.egid {
            on_dst(fsops::chown_at(dd, name, s.uid, s.gid))?;
        }
        if s.perm & 0o7000 != 0 {
            on_dst(fsops::chmod_at(dd, name, s.perm))?;
        }
        on_dst(fsops::utimes_at(dd, name, s.atime, s.mtime))?;
        self.ctx.bump(&self.ctx.counters.files, 1);
        Ok(())
    }

    /// Big file: a temp file of full size, chunks for anyone to copy, and a
    /// pending entry here that the last chunk completes.
    fn start_chunked(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        dir: &[u8],
        name: &[u8],
        s: &Stat,
        out: &mut Emitter<'_, Item>,
    ) -> Res<()> {
        let tmp = self.temp_name();
        let rel = fsops::join(dir, name);
        let (f, layout) = on_dst(self.create_target(sd, dd, &rel, name, &tmp, s.perm & 0o777))?;
        if let Err(e) = fsops::ftruncate(f.as_fd(), s.size) {
            let _ = fsops::unlink_at(dd, &tmp);
            return Err(Fail::Os(Side::Target, e));
        }
        drop(f);
        // On Lustre, chunks cover whole stripes (stripe size x count) so no two
        // ranks write into the same stripe.
        let align = layout.map(|l| l.chunk_alignment()).unwrap_or(0);
        let cs = match self.opts.chunk_size.max(1) {
            cs if align > 0 => cs.div_ceil(align) * align,
            cs => cs,
        };
        let n = s.size.div_ceil(cs);
        let id = ((self.ctx.rank as u64) << 40) | self.seq.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                PendingFile {
                    dir: dir.to_vec(),
                    name: name.to_vec(),
                    tmp: tmp.clone(),
                    st: *s,
                    remaining: n,
                    failed: false,
                    started: Instant::now(),
                },
            );
        for i in 0..n {
            let off = i * cs;
            out.push(Item::Chunk {
                dir: dir.to_vec(),
                name: name.to_vec(),
                tmp: tmp.clone(),
                id,
                off,
                len: cs.min(s.size - off),
            });
        }
        Ok(())
    }

    fn chunk(&self, id: u64, job: ChunkJob, out: &mut Emitter<'_, Item>) {
        if self.lustre.is_some() {
            return self.chunk_one(id, &job, out);
        }
        let Some(mut job) = self.writers.enter(id, job) else {
            return;
        };
        loop {
            self.chunk_one(id, &job, out);
            match self.writers.next(id) {
                Some(j) => job = j,
                None => return,
            }
        }
    }

    fn chunk_one(&self, id: u64, job: &ChunkJob, out: &mut Emitter<'_, Item>) {
        let ChunkJob {
            dir,
            name,
            tmp,
            off,
            len,
        } = job;
        let (off, len) = (*off, *len);
        let rel = fsops::join(dir, name);
        let r = (|| -> Res<u64> {
            if out.stopping() {
                return Err(Fail::Changed);
            }
            let sd = on_src(self.ctx.open_src_dir(dir))?;
            let dd = on_dst(self.ctx.open_dst_dir(dir))?;
            let src = on_src(fsops::open_read_at(sd.as_fd(), name))?;
            let st = on_src(fsops::fstat(src.as_fd()))?;
            let dst = on_dst(fsops::open_write_at(dd.as_fd(), tmp))?;
            self.copy_data(
                src.as_fd(),
                dst.as_fd(),
                off,
                (off + len).min(st.size.max(off)),
                st.maybe_sparse(),
            )
        })();
        let ok = match r {
            Ok(bytes) => {
                self.ctx.bump(&self.ctx.counters.data, bytes);
                true
            }
            Err(Fail::Changed) => false, // stopping: abandoned, not an error
            Err(f) => {
                self.report(&rel, f);
                false
            }
        };
        out.send_to((id >> 40) as usize, Item::ChunkDone { id, ok });
    }

    fn chunk_done(&self, id: u64, ok: bool) {
        let done = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let Some(f) = p.get_mut(&id) else { return };
            f.remaining = f.remaining.saturating_sub(1);
            f.failed |= !ok;
            if f.remaining > 0 {
                return;
            }
            p.remove(&id)
        };
        let Some(f) = done else { return };
        let rel = fsops::join(&f.dir, &f.name);
        let r = (|| -> Res<()> {
            let dd = on_dst(self.ctx.open_dst_dir(&f.dir))?;
            if f.failed {
                let _ = fsops::unlink_at(dd.as_fd(), &f.tmp);
                return Ok(());
            }
            let sd = on_src(self.ctx.open_src_dir(&f.dir))?;
            let src = on_src(fsops::open_read_at(sd.as_fd(), &f.name))?;
            let after = on_src(fsops::fstat(src.as_fd()))?;
            let dst = on_dst(fsops::open_write_at(dd.as_fd(), &f.tmp))?;
            let res = (|| {
                if after.size != f.st.size || after.mtime != f.st.mtime {
                    return Err(Fail::Changed);
                }
                self.finish_file(
                    src.as_fd(),
                    dst.as_fd(),
                    sd.as_fd(),
                    dd.as_fd(),
                    &f.st,
                    Landing::UNKNOWN,
                )?;
                on_dst(fsops::rename_at(dd.as_fd(), &f.tmp, &f.name))
            })();
            if res.is_err() {
                let _ = fsops::unlink_at(dd.as_fd(), &f.tmp);
            }
            res
        })();
        match r {
            Ok(()) if !f.failed => {
                let c = &self.ctx;
                c.bump(&c.counters.files, 1);
                c.hist
                    .record(f.st.size, f.started.elapsed().as_micros() as u64);
            }
            Ok(()) => {}
            Err(e) => self.report(&rel, e),
        }
    }

    /// Copy a hardlink group once, then link every other name to it.
    fn link_group(&self, paths: &[Vec<u8>]) {
        let Some(first) = paths.first() else { return };
        let c = &self.ctx;
        let (pdir, pname) = fsops::parent_and_name(first);
        let r = (|| -> Res<(std::os::fd::OwnedFd, Stat)> {
            let sd = on_src(c.open_src_dir(pdir))?;
            let dd = on_dst(c.open_dst_dir(pdir))?;
            let s = on_src(fsops::stat_at(sd.as_fd(), pname))?;
            c.bump(&c.counters.scanned, 1);
            let d = match fsops::stat_at(dd.as_fd(), pname) {
                Ok(d) => Some(d),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(Fail::Os(Side::Target, e)),
            };
            match &d {
                Some(d) if same_data(&s, d) => {
                    self.settle_in_place(sd.as_fd(), dd.as_fd(), pname, first, &s, d)?
                }
                _ if c.dry_run => {
                    crate::report::say(&format!("would copy: {}", fsops::show(first)))
                }
                _ => {
                    // A directory in the way goes; a file in the way is replaced atomically.
                    let replace = match &d {
                        Some(d) if d.kind == Kind::Dir => {
                            on_dst(fsops::remove_tree_at(dd.as_fd(), pname))?;
                            false
                        }
                        Some(_) => true,
                        None => false,
                    };
                    let (sd, dd) = (sd.as_fd(), dd.as_fd());
                    self.copy_file(sd, dd, first, pname, &s, replace, Landing::UNKNOWN)?
                }
            }
            let d = on_dst(fsops::stat_at(dd.as_fd(), pname))?;
            Ok((dd, d))
        })();
        let (pdd, pst) = match r {
            Ok(v) => v,
            Err(_) if c.dry_run => return,
            Err(f) => return self.report(first, f),
        };
        for other in &paths[1..] {
            let (odir, oname) = fsops::parent_and_name(other);
            let r = (|| -> Res<()> {
                let dd = on_dst(c.open_dst_dir(odir))?;
                c.bump(&c.counters.scanned, 1);
                match fsops::stat_at(dd.as_fd(), oname) {
                    Ok(d) if d.dev == pst.dev && d.ino == pst.ino => {
                        c.bump(&c.counters.uptodate, 1);
                        return Ok(());
                    }
                    Ok(d) => {
                        if c.dry_run {
                            crate::report::say(&format!("would link: {}", fsops::show(other)));
                            return Ok(());
                        }
                        if d.kind == Kind::Dir {
                            on_dst(fsops::remove_tree_at(dd.as_fd(), oname))?;
                        } else {
                            // Link to a temp name, then rename over: the old file stays until the new link is in place.
                            let tmp = self.temp_name();
                            on_dst(fsops::link_at(pdd.as_fd(), pname, dd.as_fd(), &tmp))?;
                            if let Err(e) = fsops::rename_at(dd.as_fd(), &tmp, oname) {
                                let _ = fsops::unlink_at(dd.as_fd(), &tmp);
                                return Err(Fail::Os(Side::Target, e));
                            }
                            c.bump(&c.counters.files, 1);
                            return Ok(());
                        }
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(Fail::Os(Side::Target, e)),
                }
                if c.dry_run {
                    crate::report::say(&format!("would link: {}", fsops::show(other)));
                    return Ok(());
                }
                on_dst(fsops::link_at(pdd.as_fd(), pname, dd.as_fd(), oname))?;
                c.bump(&c.counters.files, 1);
                Ok(())
            })();
            if let Err(f) = r {
                self.report(other, f);
            }
        }
    }
}

/// Spread inodes evenly over ranks.
fn mix(dev: u64, ino: u64) -> u64 {
    let mut x = dev.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ino;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

impl Processor for CopyPass {
    type Item = Item;

    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        match item {
            Item::Dir { rel } => self.dir(&rel, out),
            Item::Batch { dir, names } => self.batch(&dir, names, out),
            Item::Chunk {
                dir,
                name,
                tmp,
                id,
                off,
                len,
            } => self.chunk(
                id,
                ChunkJob {
                    dir,
                    name,
                    tmp,
                    off,
                    len,
                },
                out,
            ),
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
            Item::Batch { dir, names } => {
                format!("{} entries in {}", names.len(), fsops::show(dir))
            }
            Item::Chunk {
                dir,
                name,
                off,
                len,
                ..
            } => {
                format!(
                    "chunk {}+{} of {}",
                    off,
                    len,
                    fsops::show(&fsops::join(dir, name))
                )
            }
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
            Item::Batch {
                dir: b"d".to_vec(),
                names: vec![b"x".to_vec(), b"-y z".to_vec()],
            },
            Item::Chunk {
                dir: b"d".to_vec(),
                name: b"n".to_vec(),
                tmp: b"t".to_vec(),
                id: 5,
                off: 6,
                len: 7,
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
