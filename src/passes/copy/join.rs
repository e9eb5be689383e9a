//! The listing join: a directory's target names are read once, then its
//! source names walked. A name the target lacks is created without a target
//! stat (and a new regular file opened without a source lstat); names only
//! the target has are left for the caller (the final pass removes them).

use super::*;
use crate::passes::Listed;

/// Names of one target directory and the types its listing gave.
pub(crate) type Names = HashMap<Vec<u8>, Option<Kind>>;

/// A directory walked on both sides.
pub(crate) struct Joined {
    pub listed: Listed,
    /// Names only the target has; None if the target could not be listed
    /// to its end (then nothing may be judged missing from the source).
    pub only_target: Option<Names>,
    pub sd: OwnedFd,
    pub dd: OwnedFd,
}

impl CopyPass {
    /// The target directory's names, or None (reported) if it cannot be
    /// read to its end; the fd comes back for `*at` calls.
    fn target_names(&self, rel: &[u8], dd: OwnedFd) -> (OwnedFd, Option<Names>) {
        let mut rd = fsops::DirReader::new(dd);
        let mut names = HashMap::new();
        while let Some(e) = rd.next_entry() {
            match e {
                Ok(e) if crate::passes::is_job_lock(rel, &e.name) => {}
                Ok(e) => {
                    names.insert(e.name, e.kind);
                }
                Err(err) => {
                    self.ctx.err(Side::Target, rel, err);
                    return (rd.into_fd(), None);
                }
            }
        }
        (rd.into_fd(), Some(names))
    }

    /// Read both sides of directory `rel` and queue its work.
    pub(crate) fn list_joined(
        &self,
        rel: &[u8],
        ids: DirIds,
        (sd, dd): (OwnedFd, OwnedFd),
        out: &mut Emitter<'_, Item>,
    ) -> Joined {
        let (dd, mut names) = self.target_names(rel, dd);
        if let Some(names) = names.as_mut() {
            self.remove_stale_temps(sd.as_fd(), dd.as_fd(), rel, names);
            self.settle_partials(sd.as_fd(), dd.as_fd(), rel, names);
        }
        let (listed, sd) = self.list_source(rel, ids, sd, Some(dd.as_fd()), names.as_mut(), out);
        Joined {
            listed,
            only_target: names,
            sd,
            dd,
        }
    }

    /// Walk the source listing: subdirectories are created on the target
    /// and queued; everything else goes out in batches, names the target
    /// lacks (not in `names`) in batches of their own. Each name seen
    /// leaves `names`.
    pub(crate) fn list_source(
        &self,
        rel: &[u8],
        ids: DirIds,
        sd: OwnedFd,
        dd: Option<BorrowedFd>,
        mut names: Option<&mut Names>,
        out: &mut Emitter<'_, Item>,
    ) -> (Listed, OwnedFd) {
        let c = &self.ctx;
        let mut rd = fsops::DirReader::new(sd);
        let mut both = Batcher::new(rel, ids, c.batch, Item::Batch);
        let mut new = Batcher::new(rel, ids, c.batch, Item::Batch).absent();
        let mut nth_dir = 0usize;
        let listed = c.list_entries(
            &mut rd,
            rel,
            Side::Source,
            true,
            out,
            |rd, e, child, out| {
                let absent = match names.as_deref_mut() {
                    Some(n) => n.remove(&e.name).is_none(),
                    None => false,
                };
                let kind = match rd.kind(&e) {
                    Ok(k) => k,
                    Err(err) if err.is_not_found() => return,
                    Err(err) => return c.err(Side::Source, &child, err),
                };
                match kind {
                    Kind::Dir => {}
                    Kind::File if absent => return new.push_listed(e.name, e.ino, out),
                    _ if absent => return new.push_listed(e.name, 0, out),
                    _ => return both.push(e.name, out),
                }
                let mdt = self.first_level_mdt(rel, nth_dir);
                nth_dir += 1;
                if let Some(ids) = self.make_child_dir(rd.fd(), dd, &e.name, &child, mdt, absent) {
                    out.push(Item::Dir { rel: child, ids });
                }
            },
        );
        if listed != Listed::Stopped {
            both.finish(out);
            new.finish(out);
        }
        (listed, rd.into_fd())
    }
}
