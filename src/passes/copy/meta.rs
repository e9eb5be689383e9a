//! Everything about a target entry except its data: owner, mode, xattrs
//! (ACLs included), project IDs, inode flags and times, and what a new file
//! inherits from its directory.

use super::*;

/// Where an entry's xattrs are read or written: through an open fd, or as
/// `name` in directory `dir` without following a symlink.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) fd: Option<BorrowedFd<'a>>,
    pub(super) dir: BorrowedFd<'a>,
    pub(super) name: &'a [u8],
}

impl<'a> At<'a> {
    pub(super) fn fd(fd: BorrowedFd<'a>) -> At<'a> {
        At {
            fd: Some(fd),
            dir: fd,
            name: b"",
        }
    }

    pub(super) fn name(dir: BorrowedFd<'a>, name: &'a [u8]) -> At<'a> {
        At {
            fd: None,
            dir,
            name,
        }
    }
}

/// What a newly created file in a target directory already has.
#[derive(Debug, Clone, Copy)]
pub(super) struct Landing {
    /// Its group: the directory's if setgid, else ours.
    pub(super) gid: u32,
    /// The directory has a default ACL, which new files inherit.
    pub(super) inherits_acl: bool,
    /// The project ID a new file gets here (the directory's if it has the
    /// project-inherit flag, else 0); None: not known, or not asked.
    pub(super) projid: Option<u32>,
    /// The source directory has a project ID or the inherit flag: the
    /// project IDs of its up-to-date files are compared. Where it has
    /// neither, only with `check_xattrs` (an open and an ioctl per file on
    /// each side are too dear for the trees, by far the most, that have no
    /// project IDs; a new file's is always read, on the fd already open).
    pub(super) src_projects: bool,
}

impl Landing {
    /// Assume the worst: always chown, chmod and sync xattrs.
    pub(super) const UNKNOWN: Landing = Landing {
        gid: u32::MAX,
        inherits_acl: true,
        projid: None,
        src_projects: true,
    };
}

/// An entry's project ID and project-inherit flag (which only directories
/// use: a file's is never compared or set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Project {
    pub(super) id: u32,
    pub(super) inherit: bool,
}

impl Project {
    fn of(x: &fsops::FsXattr) -> Project {
        Project {
            id: x.fsx_projid,
            inherit: x.fsx_xflags & fsops::XFLAG_PROJINHERIT != 0,
        }
    }

    /// Worth copying to a new entry, whatever the target does by default.
    fn is_set(self) -> bool {
        self.id != 0 || self.inherit
    }
}

/// What one pass learnt about project IDs (an ioctl per entry and side, so
/// asked only while both sides answer): the source has none (never asked
/// again); the target refused them (its errno; the target is not asked
/// again, the source only until an entry with a project ID shows that the
/// one note is due); the note was given (nothing is asked any more).
#[derive(Default)]
pub(super) struct Projects {
    src_none: std::sync::atomic::AtomicBool,
    dst_refused: std::sync::atomic::AtomicI32,
    noted: std::sync::atomic::AtomicBool,
}

/// The answers of a filesystem (or a kernel) without project IDs.
fn no_projects(errno: i32) -> bool {
    matches!(errno, libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL)
}

/// Errors that leave an up-to-date entry's project ID for the next pass:
/// it is gone, changed, or not ours to open.
fn project_later(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOENT | libc::EACCES | libc::EPERM | libc::ELOOP | fsops::ECHANGED
    )
}

pub(super) fn same_data(s: &Stat, d: &Stat) -> bool {
    s.kind == d.kind
        && s.size == d.size
        && s.mtime == d.mtime
        && (!matches!(s.kind, Kind::Char | Kind::Block) || s.rdev == d.rdev)
}

/// Whether giving existing target file `d` the owner and mode of source
/// `s` in place would grant a privilege: another owner, or a setuid or
/// setgid bit (with its group) that `d` does not have yet. Size and mtime
/// equal are no proof that the bytes are the source's: whoever could write
/// `d` (its owner, or a user who replaced it) may have planted them, so
/// such a file is copied again instead. A setid bit `d` already has is
/// proof enough: the kernel clears it on any write without CAP_FSETID.
pub(super) fn grants_privilege(s: &Stat, d: &Stat) -> bool {
    let new_setid = s.perm & !d.perm & 0o6000 != 0;
    let regrouped_setgid = s.perm & 0o2000 != 0 && s.gid != d.gid;
    s.kind == Kind::File && (s.uid != d.uid || new_setid || regrouped_setgid)
}

/// Xattrs that grant a privilege to whoever runs the file (a capability;
/// an SELinux label can make a domain transition): set on an existing
/// target file only after its data is lmpi's own (see `grants_privilege`).
const PRIVILEGED_XATTRS: &[&[u8]] = &[b"security.capability", b"security.selinux"];

/// The mode a new target file is created with, before its owner and full
/// mode are set after its data. Never group or other write: a writer who
/// opened it now could change bytes that then get a setid bit or
/// capability (a write after those clears them). Owner bits only where
/// the file starts in a group other than ours and the source's (a user's
/// setgid directory) or inherits an ACL (a user's default ACL): either
/// would let them read bytes they cannot read on the source until the
/// chown. The common case (a directory without either) costs no chmod.
pub(super) fn creation_mode(s: &Stat, l: &Landing, egid: u32) -> u32 {
    match (l.gid == s.gid || l.gid == egid) && !l.inherits_acl {
        true => s.perm & 0o755,
        false => s.perm & 0o700,
    }
}

/// The source file read as `before` is still that file as `after` (fstat
/// of the fd the data came from): size, mtime and ctime. ctime is the
/// witness: an owner who rewrites a copied region and sets the mtime back
/// moves it, and no user can set it back.
pub(super) fn unchanged(before: &Stat, after: &Stat) -> bool {
    after.size == before.size && after.mtime == before.mtime && after.ctime == before.ctime
}

pub(super) fn same_meta(s: &Stat, d: &Stat) -> bool {
    s.uid == d.uid && s.gid == d.gid && (s.kind == Kind::Symlink || s.perm == d.perm)
}

/// On a target directory: the identity of its source directory.
pub(crate) const DIR_SOURCE_KEY: &[u8] = b"trusted.lmpi.src";

/// `DIR_SOURCE_KEY`'s value for source directory `s`.
pub(crate) fn dir_source_mark(s: &Stat) -> Vec<u8> {
    format!("{}:{}", s.dev, s.ino).into_bytes()
}

/// Lustre's own attributes: layouts (`lustre.lov`, `trusted.lov`, `trusted.lmv`,
/// `trusted.dmv`) are the Lustre layer's job, and FIDs, link EAs, SOM, HSM
/// state belong to the inode. Never copied, never removed.
pub(crate) const LUSTRE_INTERNAL: &[&[u8]] = &[
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
pub(super) fn copy_key(key: &[u8], is_root: bool) -> bool {
    !key.starts_with(b"lustre.")
        && !LUSTRE_INTERNAL.contains(&key)
        && !super::is_lmpi_own(key)
        && (is_root || key.starts_with(b"user.") || key.starts_with(b"system.posix_acl"))
}

impl CopyPass {
    /// Owner, mode and xattrs (ACLs included) of a directory; never its times.
    /// Directories are few, so their xattrs are compared on every pass.
    pub(super) fn sync_dir_meta(
        &self,
        (sd, dd): (BorrowedFd, BorrowedFd),
        (s, d): (&Stat, &Stat),
        rel: &[u8],
    ) -> Res<()> {
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
        changed |= self.sync_xattrs(At::fd(sd), At::fd(dd), rel, true)?;
        self.mark_dir_source(dd, s)?;
        if changed {
            self.ctx.bump(&self.ctx.counters.meta, 1);
        }
        Ok(())
    }

    /// Record on target directory `dd` which source directory (`s`) it is
    /// the copy of, so a final pass with `--changes` can rename it when the
    /// source directory is renamed, instead of removing and copying it
    /// again. Root only (`trusted.*`); one getxattr per directory per pass,
    /// a setxattr when it is new or differs.
    fn mark_dir_source(&self, dd: BorrowedFd, s: &Stat) -> Res<()> {
        if !self.ctx.is_root || self.ctx.dry_run {
            return Ok(());
        }
        let want = dir_source_mark(s);
        match fsops::get_xattr(Some(dd), dd, b"", DIR_SOURCE_KEY) {
            Ok(v) if v == want => Ok(()),
            Err(e) if !matches!(e.errno, libc::ENODATA | libc::ERANGE) => {
                // A target that refuses xattrs: renames are not followed.
                Ok(())
            }
            _ => on_dst(fsops::set_xattr(Some(dd), dd, b"", DIR_SOURCE_KEY, &want)),
        }
    }

    /// Make the target's xattrs exactly the source's (only compare unless
    /// `apply`); true if they differ(ed). The target's data is lmpi's own.
    /// A side with more names than the kernel lists is one error line, and
    /// the xattrs are left as they are.
    pub(super) fn sync_xattrs(&self, src: At, dst: At, rel: &[u8], apply: bool) -> Res<bool> {
        self.sync_xattrs_of(src, dst, rel, apply, true)
    }

    /// `sync_xattrs` for an existing target file whose data lmpi may not
    /// have written: a privileged xattr it lacks is `Fail::Untrusted`
    /// before any xattr is changed (owner and mode may have been already:
    /// the caller copies the file again, a new inode, so nothing stays).
    pub(super) fn sync_xattrs_in_place(
        &self,
        src: At,
        dst: At,
        rel: &[u8],
        apply: bool,
    ) -> Res<bool> {
        self.sync_xattrs_of(src, dst, rel, apply, false)
    }

    fn sync_xattrs_of(&self, src: At, dst: At, rel: &[u8], apply: bool, ours: bool) -> Res<bool> {
        let s = match self.xattr_map(src) {
            Err(e) if e.errno == libc::E2BIG => return Ok(self.unlisted(Side::Source, rel, e)),
            r => r.map_err(|e| Fail::Os(Side::Source, e))?,
        };
        let d = match self.xattr_map(dst) {
            Err(e) if e.errno == libc::E2BIG => return Ok(self.unlisted(Side::Target, rel, e)),
            r => r.map_err(|e| Fail::Os(Side::Target, e))?,
        };
        let granted = |k: &&[u8]| s.get(*k).is_some_and(|v| d.get(*k) != Some(v));
        if !ours && PRIVILEGED_XATTRS.iter().any(granted) {
            return Err(Fail::Untrusted);
        }
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
    pub(super) fn landing(&self, sd: BorrowedFd, dd: BorrowedFd, st: &Stat) -> Landing {
        let gid = if st.perm & 0o2000 != 0 {
            st.gid
        } else {
            self.egid
        };
        let inherits_acl = !matches!(
            fsops::get_xattr(Some(dd), dd, b"", b"system.posix_acl_default"),
            Err(e) if e.errno == libc::ENODATA || e.errno == libc::ENOTSUP
        );
        let projid = match self.projects_on() && self.target_takes_projects() {
            true => fsops::get_fsxattr(dd).ok().map(|x| match Project::of(&x) {
                p if p.inherit => p.id,
                _ => 0,
            }),
            false => None,
        };
        let src_projects = self.projects_on()
            && fsops::get_fsxattr(sd).map_or(true, |x| {
                let p = Project::of(&x);
                p.id != 0 || p.inherit
            });
        Landing {
            gid,
            inherits_acl,
            projid,
            src_projects,
        }
    }

    pub(super) fn xattr_map(
        &self,
        at: At,
    ) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>, OsError> {
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

    /// More xattr names than listxattr returns (E2BIG: over its 64 KiB):
    /// none can be named, so none are copied; one error line, the entry's
    /// data and the rest of its metadata are still copied. False: nothing
    /// was changed.
    fn unlisted(&self, side: Side, rel: &[u8], e: OsError) -> bool {
        let c = &self.ctx;
        let call = e.op.into();
        c.act(
            rel,
            crate::manifest::Action::Failed {
                errno: e.errno,
                call,
            },
        );
        let msg = format!("xattrs not copied: {e}: more names than the kernel lists (64 KiB)");
        c.log.error_msg(side, rel, &msg);
        false
    }

    pub(super) fn copy_xattrs(&self, src: At, dst: At, rel: &[u8]) -> Res<()> {
        let keys = match fsops::list_xattrs(src.fd, src.dir, src.name) {
            Ok(k) => k,
            Err(e) if e.errno == libc::E2BIG => {
                self.unlisted(Side::Source, rel, e);
                return Ok(());
            }
            Err(e) if e.errno == libc::EPERM || e.errno == libc::EACCES => return Ok(()),
            Err(e) => return Err(Fail::Os(Side::Source, e)),
        };
        for key in keys.iter().filter(|k| copy_key(k, self.ctx.is_root)) {
            let val = match fsops::get_xattr(src.fd, src.dir, src.name, key) {
                Ok(v) => v,
                Err(e) if e.errno == libc::ENODATA => continue,
                Err(e) => return Err(Fail::Os(Side::Source, e)),
            };
            on_dst(fsops::set_xattr(dst.fd, dst.dir, dst.name, key, &val))?;
        }
        Ok(())
    }

    /// Owner, mode, xattrs, then times: the times go last because they are what
    /// makes the file look complete.
    pub(super) fn finish_file(
        &self,
        sfd: BorrowedFd,
        dfd: BorrowedFd,
        (s, rel): (&Stat, &[u8]),
        landing: Landing,
    ) -> Res<()> {
        let l = landing;
        if s.uid != self.euid || s.gid != l.gid {
            on_dst(fsops::fchown(dfd, s.uid, s.gid))?;
        }
        // An inherited default ACL changes the mode a file is created with.
        if s.perm & 0o7000 != 0
            || !self.ctx.is_root
            || l.inherits_acl
            || creation_mode(s, &l, self.egid) != s.perm
        {
            on_dst(fsops::fchmod(dfd, s.perm))?;
        }
        if l.inherits_acl {
            self.sync_xattrs(At::fd(sfd), At::fd(dfd), rel, true)?;
        } else {
            self.copy_xattrs(At::fd(sfd), At::fd(dfd), rel)?;
        }
        on_dst(fsops::futimes(dfd, s.atime, s.mtime))
    }

    /// Inode flags (immutable, append-only, no-dump), set after everything
    /// else, the rename into place included: the first two forbid any
    /// change after them (an immutable file cannot be renamed). A target that
    /// cannot hold them gets one note per pass, not an error per file.
    pub(super) fn set_flags(&self, dfd: BorrowedFd, want: u32) -> Res<()> {
        match fsops::set_inode_flags(dfd, want) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.errno, libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL) => {
                if want != 0 && !self.flags_noted.swap(true, Ordering::Relaxed) {
                    let msg =
                        format!("inode flags (chattr) not copied: the target refuses them ({e})");
                    self.ctx.log.note(Side::Target, b"", &msg);
                }
                Ok(())
            }
            Err(e) => Err(Fail::Os(Side::Target, e)),
        }
    }

    /// Whether this pass reads project IDs: `copy_project_ids` is on, the
    /// source has them (as far as seen) and a refusing target has not been
    /// noted yet.
    pub(super) fn projects_on(&self) -> bool {
        let p = &self.projects;
        self.opts.copy_project_ids
            && !p.src_none.load(Ordering::Relaxed)
            && !p.noted.load(Ordering::Relaxed)
    }

    fn target_takes_projects(&self) -> bool {
        self.projects.dst_refused.load(Ordering::Relaxed) == 0
    }

    /// The source's project (open file or directory `sfd`), if this pass
    /// reads them and the target can take them. A source without them
    /// is not asked again.
    pub(super) fn src_project(&self, sfd: BorrowedFd) -> Res<Option<Project>> {
        if !self.projects_on() {
            return Ok(None);
        }
        match fsops::get_fsxattr(sfd) {
            Ok(x) if self.target_takes_projects() => Ok(Some(Project::of(&x))),
            Ok(x) => {
                self.target_refuses(Project::of(&x), 0);
                Ok(None)
            }
            Err(e) if no_projects(e.errno) => {
                self.projects.src_none.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(Fail::Os(Side::Source, e)),
        }
    }

    /// The target's project (open `dfd`); None if the target has none,
    /// which is then noted once if `want` needs them.
    fn dst_project(&self, dfd: BorrowedFd, want: Project) -> Res<Option<Project>> {
        match fsops::get_fsxattr(dfd) {
            Ok(x) => Ok(Some(Project::of(&x))),
            Err(e) if no_projects(e.errno) => {
                self.target_refuses(want, e.errno);
                Ok(None)
            }
            Err(e) => Err(Fail::Os(Side::Target, e)),
        }
    }

    /// Give target `dfd` project `want` (with the inherit flag for a
    /// directory), read-modify-write; true if it changed. A target that
    /// cannot hold project IDs gets one note per pass, not an error per entry.
    pub(super) fn put_project(&self, dfd: BorrowedFd, want: Project, dir: bool) -> Res<bool> {
        if !self.target_takes_projects() {
            self.target_refuses(want, 0);
            return Ok(false);
        }
        match fsops::set_project(dfd, want.id, dir.then_some(want.inherit)) {
            Ok(changed) => Ok(changed),
            Err(e) if no_projects(e.errno) => {
                self.target_refuses(want, e.errno);
                Ok(false)
            }
            Err(e) => Err(Fail::Os(Side::Target, e)),
        }
    }

    /// The target said `errno` (0: said before) to project IDs: not asked
    /// again; noted once, when an entry has one to copy (`want`).
    fn target_refuses(&self, want: Project, errno: i32) {
        let p = &self.projects;
        if errno != 0 {
            let _ = p
                .dst_refused
                .compare_exchange(0, errno, Ordering::Relaxed, Ordering::Relaxed);
        }
        if want.is_set() && !p.noted.swap(true, Ordering::Relaxed) {
            let why = fsops::strerror(p.dst_refused.load(Ordering::Relaxed));
            let msg = format!("project IDs not copied: the target refuses them ({why})");
            self.ctx.log.note(Side::Target, b"", &msg);
        }
    }

    /// A new file's project ID (open source `sfd`, target `dfd`): the
    /// source's, unless the file got it from its directory (`expect`).
    /// After the rename into place: a directory with the project-inherit
    /// flag takes (by rename or link) only entries of its own project.
    pub(super) fn land_project(
        &self,
        sfd: BorrowedFd,
        dfd: BorrowedFd,
        expect: Option<u32>,
    ) -> Res<()> {
        match self.src_project(sfd)? {
            Some(want) if expect != Some(want.id) => self.put_project(dfd, want, false).map(drop),
            _ => Ok(()),
        }
    }

    /// Whether up-to-date files in this batch's directory get their project
    /// IDs compared (see `Landing::src_projects`).
    pub(super) fn files_projects(&self, l: &Landing) -> bool {
        self.opts.check_xattrs || l.src_projects || l.projid.is_some_and(|p| p != 0)
    }

    /// A directory's project ID and inherit flag to the source's (in a dry
    /// run only compared); true if they differ(ed).
    pub(super) fn dir_project(&self, sd: BorrowedFd, dd: BorrowedFd) -> Res<bool> {
        let Some(want) = self.src_project(sd)? else {
            return Ok(false);
        };
        if self.ctx.dry_run {
            return Ok(self.dst_project(dd, want)?.is_some_and(|got| got != want));
        }
        self.put_project(dd, want, true)
    }

    /// For regular file `name` whose data are up to date (lstat `s`, target
    /// `d`): the open target and the source's project, if the target's
    /// project ID differs. One that cannot be opened now (gone, changed,
    /// not ours) is left for the next pass.
    pub(super) fn project_due(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        name: &[u8],
        s: &Stat,
        d: &Stat,
    ) -> Res<Option<(OwnedFd, Project)>> {
        if s.kind != Kind::File || d.kind != Kind::File || !self.projects_on() {
            return Ok(None);
        }
        let sfd = match fsops::open_read_checked(sd, name, s.ident()) {
            Ok((fd, _)) => fd,
            Err(e) if project_later(e.errno) => return Ok(None),
            Err(e) => return Err(Fail::Os(Side::Source, e)),
        };
        let Some(want) = self.src_project(sfd.as_fd())? else {
            return Ok(None);
        };
        let dfd = match fsops::open_read_checked(dd, name, d.ident()) {
            Ok((fd, _)) => fd,
            Err(e) if project_later(e.errno) => return Ok(None),
            Err(e) => return Err(Fail::Os(Side::Target, e)),
        };
        Ok(match self.dst_project(dfd.as_fd(), want)? {
            Some(got) if got.id != want.id => Some((dfd, want)),
            _ => None,
        })
    }

    /// Lift immutable/append-only from target `name` (stat `d`) so it can be
    /// replaced or changed; its flags are set again after.
    pub(super) fn unlock(&self, dd: BorrowedFd, name: &[u8], d: &Stat) -> Res<()> {
        if d.flags & (fsops::FLAG_IMMUTABLE | fsops::FLAG_APPEND) == 0 || d.kind != Kind::File {
            return Ok(());
        }
        let (fd, _) = on_dst(fsops::open_read_checked(dd, name, d.ident()))?;
        on_dst(fsops::set_inode_flags(
            fd.as_fd(),
            d.flags & fsops::FLAG_NODUMP,
        ))
    }
}
