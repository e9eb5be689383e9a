//! The copy pass's side of resumable big files (`passes::resume`): find and
//! check an earlier pass's partial copy, keep its record as chunks come in,
//! drop it when the file is done, and clear partials whose source is gone.

use super::*;
use crate::passes::resume::{self, Record, Source, KEY};

impl CopyPass {
    /// Whether the partial-file name of `s` is free for us: the source
    /// directory does not hold that name itself (then it is data, not ours).
    pub(super) fn resumable_name_free(&self, sd: BorrowedFd, s: &Stat) -> bool {
        fsops::stat_at(sd, &resume::partial_name(s.ino)).is_err_and(|e| e.is_not_found())
    }

    /// An earlier pass's partial copy of `s`, if its record matches the
    /// source exactly and the file is still what we left: our own, single
    /// link, full size. Anything else under that name is removed.
    pub(super) fn find_partial(&self, dd: BorrowedFd, rel: &[u8], name: &[u8], s: &Stat) -> Option<Partial> {
        let tmp = resume::partial_name(s.ino);
        let (fd, st) = match fsops::open_own_file(dd, &tmp) {
            Ok(opened) => opened,
            Err(e) if e.is_not_found() => return None,
            Err(_) => return self.drop_partial(dd, rel, &tmp),
        };
        let usable = Record::read(Some(fd.as_fd()), dd, b"").filter(|r| {
            r.source == Source::of(s)
                && r.name == name
                && st.uid == self.euid
                && st.nlink == 1
                && st.size == s.size
        });
        let Some(record) = usable else {
            return self.drop_partial(dd, rel, &tmp);
        };
        Some(Partial {
            tmp,
            tmp_id: st.ident(),
            chunk: record.chunk,
            record: Some(record),
        })
    }

    /// Remove what is under a partial name but cannot be resumed: the
    /// copy starts over.
    fn drop_partial(&self, dd: BorrowedFd, rel: &[u8], tmp: &[u8]) -> Option<Partial> {
        match fsops::unlink_at(dd, tmp) {
            Ok(()) => self.ctx.log.note(
                Side::Target,
                rel,
                "a partial copy from an earlier pass does not match the source: starting over",
            ),
            Err(e) if e.is_not_found() => {}
            Err(e) => self.ctx.err(Side::Target, &fsops::join(fsops::parent_and_name(rel).0, tmp), e),
        }
        None
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

    /// Chunk at `off` of pending file `f` is in: record it on the partial.
    /// A write that fails leaves the older record, a subset of the truth.
    pub(super) fn note_chunk(&self, f: &mut PendingFile, off: u64) {
        let Some(rec) = f.record.as_mut() else {
            return;
        };
        rec.done.insert(off / rec.chunk);
        let Some(value) = rec.encode() else {
            return;
        };
        let Ok((dd, _)) = self.ctx.open_dst_dir(&f.dir, f.ids.dst) else {
            return;
        };
        if let Ok(fd) = fsops::open_write_checked(dd.as_fd(), &f.tmp, f.tmp_id) {
            let _ = fsops::set_xattr(Some(fd.as_fd()), fd.as_fd(), b"", KEY, &value);
        }
    }

    /// The file is complete: its record goes before it gets its name.
    pub(super) fn drop_record(&self, fd: BorrowedFd) -> Res<()> {
        match fsops::remove_xattr(Some(fd), fd, b"", KEY) {
            Err(e) if e.errno != libc::ENODATA => Err(Fail::Os(Side::Target, e)),
            _ => Ok(()),
        }
    }

    /// Partial files in target directory listing `names` are ours, never
    /// "only on the target": they leave `names`, and stay while the source
    /// file their record names is there; the others are removed (noted).
    pub(super) fn settle_partials(&self, sd: BorrowedFd, dd: BorrowedFd, rel: &[u8], names: &mut Names) {
        let found: Vec<Vec<u8>> = names
            .iter()
            .filter(|(n, k)| resume::is_partial_name(n) && k.is_none_or(|k| k == Kind::File))
            .map(|(n, _)| n.clone())
            .collect();
        for name in found {
            match fsops::stat_at(sd, &name) {
                Err(e) if e.is_not_found() => {}
                _ => continue, // the source has that name: it is data, not ours
            }
            names.remove(&name);
            if self.ctx.dry_run || resume::still_wanted(sd, dd, &name) {
                continue;
            }
            let child = fsops::join(rel, &name);
            match fsops::unlink_at(dd, &name) {
                Ok(()) => self.ctx.log.note(
                    Side::Target,
                    &child,
                    "removed a partial copy whose source file is gone or replaced",
                ),
                Err(e) if e.is_not_found() => {}
                Err(e) => self.ctx.err(Side::Target, &child, e),
            }
        }
    }
}
