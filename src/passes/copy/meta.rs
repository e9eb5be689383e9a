//! Everything about a target entry except its data: owner, mode, xattrs
//! (ACLs included) and times, and what a new file inherits from its directory.

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
}

impl Landing {
    /// Assume the worst: always chown, chmod and sync xattrs.
    pub(super) const UNKNOWN: Landing = Landing {
        gid: u32::MAX,
        inherits_acl: true,
    };
}

pub(super) fn same_data(s: &Stat, d: &Stat) -> bool {
    s.kind == d.kind
        && s.size == d.size
        && s.mtime == d.mtime
        && (!matches!(s.kind, Kind::Char | Kind::Block) || s.rdev == d.rdev)
}

pub(super) fn same_meta(s: &Stat, d: &Stat) -> bool {
    s.uid == d.uid && s.gid == d.gid && (s.kind == Kind::Symlink || s.perm == d.perm)
}

/// Lustre's own attributes: layouts (`lustre.lov`, `trusted.lov`, `trusted.lmv`,
/// `trusted.dmv`) are the Lustre layer's job, and FIDs, link EAs, SOM, HSM
/// state belong to the inode. Never copied, never removed.
pub(super) const LUSTRE_INTERNAL: &[&[u8]] = &[
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
        && (is_root || key.starts_with(b"user.") || key.starts_with(b"system.posix_acl"))
}

impl CopyPass {
    /// Owner, mode and xattrs (ACLs included) of a directory; never its times.
    /// Directories are few, so their xattrs are compared on every pass.
    pub(super) fn sync_dir_meta(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        s: &Stat,
        d: &Stat,
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
        changed |= self.sync_xattrs(At::fd(sd), At::fd(dd), true)?;
        if changed {
            self.ctx.bump(&self.ctx.counters.meta, 1);
        }
        Ok(())
    }

    /// Make the target's xattrs exactly the source's (only compare unless
    /// `apply`); true if they differ(ed).
    pub(super) fn sync_xattrs(&self, src: At, dst: At, apply: bool) -> Res<bool> {
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
    pub(super) fn landing(&self, dd: BorrowedFd, st: &Stat) -> Landing {
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

    pub(super) fn copy_xattrs(&self, src: At, dst: At) -> Res<()> {
        let keys = match fsops::list_xattrs(src.fd, src.dir, src.name) {
            Ok(k) => k,
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
            self.copy_xattrs(At::fd(sfd), At::fd(dfd))?;
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
