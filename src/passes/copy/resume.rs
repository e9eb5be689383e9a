//! The copy pass's side of resumable big files (`passes::resume`): find and
//! check an earlier pass's partial copy, keep its record as chunks come in,
//! drop it when the file is done, and clear partials whose source is gone.

use super::*;
use crate::passes::resume::{self, Record, Source, KEY};

impl CopyPass {
    /// Whether the partial-file name of `s` may be ours: the source
    /// directory does not hold that name itself (then it is data, not ours).
    pub(super) fn resumable_name_free(&self, sd: BorrowedFd, s: &Stat) -> bool {
        fsops::stat_at(sd, &resume::partial_name(s.ino)).is_err_and(|e| e.is_not_found())
    }

    /// What is under the partial-file name of `s`: an earlier pass's
    /// partial copy to resume (its record matches the source exactly and the
    /// file is as we left it: our own, mode 0600, one link, full size), or
    /// nothing, or something that is not ours and stays untouched. A partial
    /// of ours that cannot be resumed is removed: the copy starts over.
    pub(super) fn find_partial(
        &self,
        dd: BorrowedFd,
        rel: &[u8],
        name: &[u8],
        s: &Stat,
    ) -> Res<Found> {
        let tmp = resume::partial_name(s.ino);
        let (fd, st) = match fsops::open_own_file(dd, &tmp) {
            Ok(opened) => opened,
            Err(e) if e.is_not_found() => return Ok(Found::Free),
            // A symlink, FIFO, socket, directory or device: not ours.
            Err(e)
                if matches!(
                    e.errno,
                    libc::ELOOP | libc::ENXIO | libc::EISDIR | fsops::ECHANGED
                ) =>
            {
                return Ok(Found::Taken)
            }
            Err(e) => return Err(Fail::Os(Side::Target, e)),
        };
        let record = match Record::read(Some(fd.as_fd()), dd, b"") {
            Ok(Some(r)) if r.names(&tmp) => r,
            Ok(_) => return Ok(Found::Taken),
            Err(e) => return Err(Fail::Os(Side::Target, e)),
        };
        let intact =
            st.uid == self.euid && st.nlink == 1 && st.perm & 0o077 == 0 && st.size == s.size;
        if !(intact && record.source == Source::of(s) && record.name == name) {
            self.drop_partial(dd, rel, &tmp)?;
            return Ok(Found::Free);
        }
        Ok(Found::Resume(Partial {
            tmp,
            tmp_id: st.ident(),
            chunk: record.chunk,
            record: Some(record),
        }))
    }

    /// Remove our partial copy that cannot be resumed.
    fn drop_partial(&self, dd: BorrowedFd, rel: &[u8], tmp: &[u8]) -> Res<()> {
        match fsops::unlink_at(dd, tmp) {
            Ok(()) => {
                let msg =
                    "a partial copy from an earlier pass does not match the source: starting over";
                self.ctx.log.note(Side::Target, rel, msg);
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(Fail::Os(Side::Target, e)),
        }
    }

    /// Write `rec` on the partial file `fd`; false (said once per pass) if
    /// the target refuses it: that file is then not resumable.
    pub(super) fn write_record(&self, fd: BorrowedFd, rel: &[u8], rec: &Record) -> bool {
        let Some(value) = rec.encode() else {
            return false;
        };
        match fsops::set_xattr(Some(fd), fd, b"", KEY, &value) {
            Ok(()) => true,
            Err(e) => {
                if !self.resume_noted.swap(true, Ordering::Relaxed) {
                    let msg = format!(
                        "big files will not be resumable after a stop: the target refuses \
                         the record xattr {} ({e})",
                        String::from_utf8_lossy(KEY)
                    );
                    self.ctx.log.note(Side::Target, rel, &msg);
                }
                false
            }
        }
    }

    /// The file is complete: its record goes before it gets its name.
    pub(super) fn drop_record(&self, fd: BorrowedFd) -> Res<()> {
        match fsops::remove_xattr(Some(fd), fd, b"", KEY) {
            Err(e) if e.errno != libc::ENODATA => Err(Fail::Os(Side::Target, e)),
            _ => Ok(()),
        }
    }

    /// Whether our partial `rec` will be resumed: its source file is the
    /// file the record names, alone (not hardlinked), still big enough to be
    /// copied in chunks, and its target is not up to date already (copied
    /// whole by an earlier pass with other settings). Kept when the source
    /// cannot be looked at: nothing definite.
    fn partial_wanted(&self, sd: BorrowedFd, dd: BorrowedFd, rec: &Record) -> bool {
        let s = match fsops::stat_at(sd, &rec.name) {
            Ok(s) => s,
            Err(e) => return !e.is_not_found(),
        };
        let done = fsops::stat_at(dd, &rec.name).is_ok_and(|d| same_data(&s, &d));
        s.kind == Kind::File
            && Source::of(&s) == rec.source
            && s.nlink == 1
            && s.size >= self.opts.chunk_threshold
            && !done
    }

    /// Our partial files in target directory listing `names` (those with our
    /// record) are never "only on the target": they leave `names`, and stay
    /// while they will be resumed (`partial_wanted`); the others are removed
    /// (noted). A file of that name without our record is left in `names`,
    /// an entry like any other.
    pub(super) fn settle_partials(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        rel: &[u8],
        names: &mut Names,
    ) {
        let found: Vec<Vec<u8>> = names
            .iter()
            .filter(|(n, k)| resume::is_partial_name(n) && k.is_none_or(|k| k == Kind::File))
            .map(|(n, _)| n.clone())
            .collect();
        for name in found {
            let rec = match Record::read(None, dd, &name) {
                Ok(Some(r)) if r.names(&name) => Some(r),
                Ok(_) => continue,
                Err(_) => None, // ours or not, nothing definite: kept
            };
            names.remove(&name);
            let Some(rec) = rec else { continue };
            if self.ctx.dry_run || self.partial_wanted(sd, dd, &rec) {
                continue;
            }
            let child = fsops::join(rel, &name);
            match fsops::unlink_at(dd, &name) {
                Ok(()) => {
                    let msg = "removed a partial copy that will not be resumed (its source is \
                               gone, changed, small, hardlinked or copied whole)";
                    self.ctx.log.note(Side::Target, &child, msg)
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => self.ctx.err(Side::Target, &child, e),
            }
        }
    }
}

/// What is under a big file's partial-file name.
pub(super) enum Found {
    /// Our partial copy, to be resumed.
    Resume(Partial),
    /// Nothing (any stale partial of ours is gone now).
    Free,
    /// Something not ours: left alone, and a plain temp name used instead.
    Taken,
}
