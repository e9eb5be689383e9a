//! Big files: split into chunks that any rank may copy; the rank that found
//! the file finishes it when the last chunk reports back.

use super::*;

pub(super) struct PendingFile {
    pub(super) dir: Vec<u8>,
    pub(super) name: Vec<u8>,
    pub(super) tmp: Vec<u8>,
    pub(super) st: Stat,
    pub(super) remaining: u64,
    pub(super) failed: bool,
    pub(super) started: Instant,
}

/// One chunk of a big file: `len` bytes at `off` of temp file `tmp`, to be
/// renamed to `name` in `dir` once all chunks are in.
#[derive(Debug)]
pub struct ChunkJob {
    pub(super) dir: Vec<u8>,
    pub(super) name: Vec<u8>,
    pub(super) tmp: Vec<u8>,
    pub(super) off: u64,
    pub(super) len: u64,
}

impl CopyPass {
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

    /// Big file: a temp file of full size, chunks for anyone to copy, and a
    /// pending entry here that the last chunk completes.
    pub(super) fn start_chunked(
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
                id,
                job: ChunkJob {
                    dir: dir.to_vec(),
                    name: name.to_vec(),
                    tmp: tmp.clone(),
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

    pub(super) fn chunk_done(&self, id: u64, ok: bool) {
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
}
