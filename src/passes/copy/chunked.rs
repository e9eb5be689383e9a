//! Big files: split into chunks that any rank may copy; the rank that found
//! the file finishes it when the last chunk reports back.

use super::*;

pub(super) struct PendingFile {
    pub(super) dir: Vec<u8>,
    pub(super) ids: DirIds,
    pub(super) tmp_id: fsops::Ident,
    /// Bytes the chunks landed: counted as data only when the file is done.
    pub(super) bytes: u64,
    pub(super) name: Vec<u8>,
    pub(super) tmp: Vec<u8>,
    pub(super) st: Stat,
    pub(super) remaining: u64,
    pub(super) failed: bool,
    pub(super) started: Instant,
}

/// One chunk of a big file: `len` bytes at `off` of temp file `tmp`, to be
/// renamed to `name` in `dir` once all chunks are in.
/// Every open is checked against the identities the finder saw: the
/// directories (`ids`), the source file (`src`) and our temp file (`tmp_id`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkJob {
    pub(super) dir: Vec<u8>,
    pub(super) ids: DirIds,
    pub(super) name: Vec<u8>,
    pub(super) src: fsops::Ident,
    pub(super) tmp: Vec<u8>,
    pub(super) tmp_id: fsops::Ident,
    pub(super) off: u64,
    pub(super) len: u64,
}

impl CopyPass {
    /// After a stop: files whose chunks never all arrived lose their temp file.
    pub fn abandon_pending(&self) -> usize {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let n = p.len();
        for (_, f) in p.drain() {
            if let Ok((dd, _)) = self.ctx.open_dst_dir(&f.dir, f.ids.dst) {
                let _ = fsops::unlink_at(dd.as_fd(), &f.tmp);
            }
        }
        n
    }

    /// Big file: a temp file of full size, chunks for anyone to copy, and a
    /// pending entry here that the last chunk completes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_chunked(
        &self,
        sd: BorrowedFd,
        dd: BorrowedFd,
        dir: &[u8],
        ids: DirIds,
        name: &[u8],
        s: &Stat,
        out: &mut Emitter<'_, Item>,
    ) -> Res<()> {
        let tmp = self.temp_name();
        let rel = fsops::join(dir, name);
        // The source is opened and checked before anything is created: a
        // FIFO or another file swapped in is an error here, not a hang later.
        let (src, _) = on_src(fsops::open_read_checked(sd, name, s.ident()))?;
        let (f, layout) = on_dst(self.create_target(src.as_fd(), dd, &rel, &tmp, s.perm & 0o777))?;
        let sized = fsops::ftruncate(f.as_fd(), s.size).and_then(|()| fsops::fstat(f.as_fd()));
        let tmp_id = match sized {
            Ok(st) => st.ident(),
            Err(e) => {
                let _ = fsops::unlink_at(dd, &tmp);
                return Err(Fail::Os(Side::Target, e));
            }
        };
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
                    ids,
                    tmp_id,
                    bytes: 0,
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
                id,
                job: ChunkJob {
                    dir: dir.to_vec(),
                    ids,
                    name: name.to_vec(),
                    src: s.ident(),
                    tmp: tmp.clone(),
                    tmp_id,
                    off,
                    len: cs.min(s.size - off),
                },
            });
        }
        Ok(())
    }

    pub(super) fn chunk(&self, id: u64, job: ChunkJob, out: &mut Emitter<'_, Item>) {
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

    pub(super) fn chunk_one(&self, id: u64, job: &ChunkJob, out: &mut Emitter<'_, Item>) {
        let (off, len) = (job.off, job.len);
        let rel = fsops::join(&job.dir, &job.name);
        let r = (|| -> Res<u64> {
            if out.stopping() {
                return Err(Fail::Changed);
            }
            let (sd, _) = on_src(self.ctx.open_src_dir(&job.dir, job.ids.src))?;
            let (dd, _) = on_dst(self.ctx.open_dst_dir(&job.dir, job.ids.dst))?;
            let (src, st) = on_src(fsops::open_read_checked(sd.as_fd(), &job.name, job.src))?;
            let dst = on_dst(fsops::open_write_checked(dd.as_fd(), &job.tmp, job.tmp_id))?;
            self.copy_data(
                src.as_fd(),
                dst.as_fd(),
                off,
                (off + len).min(st.size.max(off)),
                st.maybe_sparse(),
            )
        })();
        let (ok, bytes) = match r {
            Ok(bytes) => (true, bytes),
            Err(Fail::Changed) => (false, 0), // stopping: abandoned, not an error
            Err(f) => {
                self.report(&rel, f);
                (false, 0)
            }
        };
        out.send_to((id >> 40) as usize, Item::ChunkDone { id, ok, bytes });
    }

    pub(super) fn chunk_done(&self, id: u64, ok: bool, bytes: u64) {
        let done = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let Some(f) = p.get_mut(&id) else { return };
            f.remaining = f.remaining.saturating_sub(1);
            f.failed |= !ok;
            f.bytes += bytes;
            if f.remaining > 0 {
                return;
            }
            p.remove(&id)
        };
        let Some(f) = done else { return };
        let rel = fsops::join(&f.dir, &f.name);
        match self.finish_chunked(&f) {
            Ok(()) if !f.failed => {
                let c = &self.ctx;
                c.bump(&c.counters.files, 1);
                c.bump(&c.counters.data, f.bytes);
                c.hist
                    .record(f.st.size, f.started.elapsed().as_micros() as u64);
                c.act(&rel, crate::manifest::Action::copied(&f.st));
            }
            Ok(()) => {}
            Err(e) => self.report(&rel, e),
        }
    }

    /// All chunks are in: check the source did not change, give the temp
    /// file its metadata and rename it over the name; or drop it.
    fn finish_chunked(&self, f: &PendingFile) -> Res<()> {
        let (dd, _) = on_dst(self.ctx.open_dst_dir(&f.dir, f.ids.dst))?;
        if f.failed {
            let _ = fsops::unlink_at(dd.as_fd(), &f.tmp);
            return Ok(());
        }
        let res = (|| {
            let (sd, _) = on_src(self.ctx.open_src_dir(&f.dir, f.ids.src))?;
            let (src, after) = on_src(fsops::open_read_checked(sd.as_fd(), &f.name, f.st.ident()))?;
            let dst = on_dst(fsops::open_write_checked(dd.as_fd(), &f.tmp, f.tmp_id))?;
            if after.size != f.st.size || after.mtime != f.st.mtime {
                return Err(Fail::Changed);
            }
            self.finish_file(src.as_fd(), dst.as_fd(), &f.st, Landing::UNKNOWN)?;
            on_dst(fsops::rename_at(dd.as_fd(), &f.tmp, &f.name))?;
            self.land_project(src.as_fd(), dst.as_fd(), None)?;
            if f.st.flags != 0 {
                self.set_flags(dst.as_fd(), f.st.flags)?;
            }
            Ok(())
        })();
        if res.is_err() {
            let _ = fsops::unlink_at(dd.as_fd(), &f.tmp);
        }
        res
    }
}
