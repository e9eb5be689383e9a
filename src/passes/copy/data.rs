//! Writing one entry's content: regular files (Lustre layout, copy_file_range
//! with a read/write fallback, holes kept), symlinks and special files.

use std::cell::RefCell;

use super::*;

/// Below this, page-cache advice costs more syscalls than it saves.
pub(super) const BIG_FOR_ADVICE: u64 = 1 << 20;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl CopyPass {
    /// Create the target file `out_name` (O_EXCL) for the open source file
    /// `src`: with its layout on Lustre. A layout that cannot be read or
    /// applied is reported for this file, which then gets the default layout.
    pub(super) fn create_target(
        &self,
        src: BorrowedFd,
        dd: BorrowedFd,
        rel: &[u8],
        out_name: &[u8],
        perm: u32,
    ) -> Result<(OwnedFd, Option<crate::lustre::Layout>), OsError> {
        let Some(l) = &self.lustre else {
            return fsops::create_at(dd, out_name, perm).map(|f| (f, None));
        };
        // Read through the checked fd, never by name: the name may be a link by now.
        let lay = match l.layout_of_fd(src) {
            Ok(lay) => lay,
            Err(e) => {
                self.ctx.failed_msg(rel, "layout-read");
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
                self.ctx.failed_msg(rel, "layout-apply");
                self.ctx.log.error_msg(
                    Side::Target,
                    rel,
                    &format!("layout not applied, default used: {e}"),
                );
                fsops::create_at(dd, out_name, perm).map(|f| (f, None))
            }
        }
    }

    /// Copy regular file `name` (lstat `s`) into `dd`: in place if nothing
    /// is there (`replace` false), else under a temp name renamed over it.
    /// `opened`: the source already open and checked (else opened here).
    pub(super) fn copy_file(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        (rel, name): (&[u8], &[u8]),
        (s, opened): (&Stat, Option<OwnedFd>),
        replace: bool,
        landing: Landing,
    ) -> Res<()> {
        let t0 = Instant::now();
        let src = match opened {
            Some(fd) => fd,
            None => on_src(fsops::open_read_checked(sd, name, s.ident()))?.0,
        };
        let tmp = replace.then(|| self.temp_name());
        let out_name: &[u8] = tmp.as_deref().unwrap_or(name);
        let perm = meta::creation_mode(s, &landing, self.egid);
        let dst = match self.create_target(src.as_fd(), dd, rel, out_name, perm) {
            Ok((f, _)) => f,
            // Someone created it since we looked: go the replace way.
            Err(e) if e.errno == libc::EEXIST && !replace => {
                return self.copy_file(sd, dd, (rel, name), (s, Some(src)), true, landing)
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
            if !meta::unchanged(s, &after) {
                return Err(Fail::Changed);
            }
            self.finish_file(src.as_fd(), dst.as_fd(), (s, rel), landing)?;
            if let Some(t) = &tmp {
                on_dst(fsops::rename_at(dd, t, name))?;
            }
            self.land_project(src.as_fd(), dst.as_fd(), landing.projid)?;
            if s.flags != 0 {
                self.set_flags(dst.as_fd(), s.flags)?;
            }
            Ok(bytes)
        })();
        match r {
            Ok(bytes) => {
                let c = &self.ctx;
                c.bump(&c.counters.files, 1);
                c.bump(&c.counters.data, bytes);
                c.hist.record(s.size, t0.elapsed().as_micros() as u64);
                c.act(rel, crate::manifest::Action::copied(s));
                Ok(())
            }
            Err(f) => {
                // Never leave a partial file behind under any name.
                let _ = fsops::unlink_at(dd, out_name);
                Err(f)
            }
        }
    }

    pub(super) fn copy_data(
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

    pub(super) fn make_symlink(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        (name, rel): (&[u8], &[u8]),
        s: &Stat,
    ) -> Res<()> {
        let target = on_src(fsops::readlink_at(sd, name))?;
        create_over(dd, name, || fsops::symlink_at(&target, dd, name))?;
        self.finish_node(sd, dd, (name, rel), s)
    }

    pub(super) fn make_special(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        (name, rel): (&[u8], &[u8]),
        s: &Stat,
    ) -> Res<()> {
        create_over(dd, name, || fsops::mknod_at(dd, name, s))?;
        self.finish_node(sd, dd, (name, rel), s)
    }

    /// A new symlink, fifo, socket or device node gets what a new file gets,
    /// in the order where nothing the kernel clears is lost: owner, then
    /// mode (setuid/setgid survive; an inherited default ACL's mode is
    /// replaced), then exactly the source's xattrs and ACLs (an inherited
    /// ACL removed), then times.
    fn finish_node(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        (name, rel): (&[u8], &[u8]),
        s: &Stat,
    ) -> Res<()> {
        // Pinned: the user who owns `dd` may swap the new node for a link.
        let pin = on_dst(fsops::pin_at(dd, name, None))?;
        if pin.st.kind != s.kind || pin.st.uid != self.euid {
            return Err(Fail::Os(Side::Target, fsops::changed("create")));
        }
        if self.ctx.is_root || s.uid != self.euid || s.gid != self.egid {
            on_dst(pin.chown(s.uid, s.gid))?;
        }
        if s.kind != Kind::Symlink && (s.perm & 0o7000 != 0 || pin.st.perm != s.perm) {
            on_dst(pin.chmod(s.perm))?;
        }
        self.sync_xattrs(At::name(sd, name), At::name(dd, name), rel, true)?;
        on_dst(fsops::utimes_at(dd, name, s.atime, s.mtime))?;
        self.ctx.bump(&self.ctx.counters.files, 1);
        Ok(())
    }
}

/// Create `name` in `dd` with `make`; if something is there already (made
/// since we looked), unlink it and create again.
fn create_over(dd: BorrowedFd, name: &[u8], make: impl Fn() -> Result<(), OsError>) -> Res<()> {
    match make() {
        Err(e) if e.errno == libc::EEXIST => {
            on_dst(fsops::unlink_at(dd, name))?;
            on_dst(make())
        }
        r => on_dst(r),
    }
}
