//! Big files: split into chunks that any rank may copy; the rank that found
//! the file finishes it when the last chunk reports back. The partial file
//! carries a record of the chunks that are in (`passes::resume`), so a
//! stopped pass leaves work the next pass resumes instead of redoing.

use super::resume::Found;
use super::*;
use crate::passes::resume::{self, Record};

pub(super) struct PendingFile {
    pub(super) dir: Vec<u8>,
    pub(super) ids: DirIds,
    pub(super) tmp_id: fsops::Ident,
    /// Bytes the chunks landed: counted as data only when the file is done.
    pub(super) bytes: u64,
    /// Bytes an earlier pass's partial copy already held.
    pub(super) resumed: u64,
    pub(super) name: Vec<u8>,
    pub(super) tmp: Vec<u8>,
    pub(super) st: Stat,
    pub(super) remaining: u64,
    /// A chunk failed (reported): the partial copy goes.
    pub(super) failed: bool,
    /// A chunk was left because the pass is stopping: a recorded partial
    /// copy stays for the next pass.
    pub(super) stopped: bool,
    pub(super) started: Instant,
    /// Some: the partial file carries this record and outlives a stop.
    pub(super) record: Option<Record>,
}

/// A partial copy this rank wrote a chunk into.
pub(super) struct Written {
    dir: Vec<u8>,
    dst: Option<fsops::Ident>,
    tmp: Vec<u8>,
    tmp_id: fsops::Ident,
}

/// The partial file a big file is written to.
pub(super) struct Partial {
    pub(super) tmp: Vec<u8>,
    pub(super) tmp_id: fsops::Ident,
    /// Chunk size in bytes.
    pub(super) chunk: u64,
    pub(super) record: Option<Record>,
}

/// How a chunk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkEnd {
    /// Copied and synced.
    In,
    /// An error, reported where it happened.
    Failed,
    /// Not copied: the pass is stopping.
    Stopped,
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
    /// After a stop, on every rank: sync the partial copies this rank
    /// wrote chunks into. False if one could not be synced.
    pub fn sync_written(&self) -> bool {
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        let mut ok = true;
        for w in written.into_values() {
            let dd = match self.ctx.open_dst_dir(&w.dir, w.dst) {
                Ok((dd, _)) => dd,
                Err(e) if e.is_not_found() => continue, // gone, and the partial with it
                Err(e) => {
                    self.ctx.err(Side::Target, &w.dir, e);
                    ok = false;
                    continue;
                }
            };
            let synced = fsops::open_write_checked(dd.as_fd(), &w.tmp, w.tmp_id)
                .and_then(|fd| fsops::fdatasync(fd.as_fd()));
            match synced {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {} // completed and renamed, or dropped
                Err(e) => {
                    self.ctx.err(Side::Target, &fsops::join(&w.dir, &w.tmp), e);
                    ok = false;
                }
            }
        }
        ok
    }

    /// After the phases: big files left partly copied. A partial with a
    /// record stays for the next pass, the chunks that are in written into
    /// its record when every rank synced its chunks (`synced`); any other
    /// loses its temp file. Returns (kept, removed).
    pub fn keep_partials(&self, synced: bool) -> (usize, usize) {
        let mut left: Vec<PendingFile> = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.drain().map(|(_, f)| f).collect()
        };
        left.append(&mut self.kept.lock().unwrap_or_else(|p| p.into_inner()));
        let (mut kept, mut removed) = (0, 0);
        for f in left {
            let Ok((dd, _)) = self.ctx.open_dst_dir(&f.dir, f.ids.dst) else {
                continue;
            };
            if let (Some(rec), false) = (&f.record, f.failed) {
                // The record on the file (empty, or an earlier pass's) lists
                // only synced chunks: updated when every rank synced, kept
                // as it is otherwise. Either way the partial stays.
                let fd = synced.then(|| fsops::open_write_checked(dd.as_fd(), &f.tmp, f.tmp_id));
                if let Some(Ok(fd)) = fd {
                    self.write_record(fd.as_fd(), &fsops::join(&f.dir, &f.name), rec);
                }
                kept += 1;
                continue;
            }
            removed += 1;
            let _ = fsops::unlink_at(dd.as_fd(), &f.tmp);
        }
        (kept, removed)
    }

    /// Big file: a partial file of full size (an earlier pass's if it
    /// matches the source), its missing chunks for anyone to copy, and a
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
        let rel = fsops::join(dir, name);
        // The source is opened and checked before anything is created: a
        // FIFO or another file swapped in is an error here, not a hang later.
        let (src, _) = on_src(fsops::open_read_checked(sd, name, s.ident()))?;
        let found = match self.resumable_name_free(sd, s) {
            true => self.find_partial(dd, &rel, name, s)?,
            false => Found::Taken,
        };
        let part = match found {
            Found::Resume(p) => p,
            Found::Free => self.new_partial(src.as_fd(), dd, (&rel, name), s, true)?,
            Found::Taken => self.new_partial(src.as_fd(), dd, (&rel, name), s, false)?,
        };
        let todo: Vec<u64> = (0..s.size.div_ceil(part.chunk))
            .filter(|&i| !part.record.as_ref().is_some_and(|r| r.done.contains(i)))
            .collect();
        let f = PendingFile {
            dir: dir.to_vec(),
            ids,
            tmp_id: part.tmp_id,
            bytes: 0,
            resumed: part.record.as_ref().map_or(0, Record::done_bytes),
            name: name.to_vec(),
            tmp: part.tmp.clone(),
            st: *s,
            remaining: todo.len() as u64,
            failed: false,
            stopped: false,
            started: Instant::now(),
            record: part.record,
        };
        if todo.is_empty() {
            // Every chunk was in before the stop: only the finish is left.
            self.complete(f);
            return Ok(());
        }
        let id = ((self.ctx.rank as u64) << 40) | self.seq.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, f);
        for i in todo {
            let off = i * part.chunk;
            let job = ChunkJob {
                dir: dir.to_vec(),
                ids,
                name: name.to_vec(),
                src: s.ident(),
                tmp: part.tmp.clone(),
                tmp_id: part.tmp_id,
                off,
                len: part.chunk.min(s.size - off),
            };
            out.push(Item::Chunk { id, job });
        }
        Ok(())
    }

    /// A new partial file of full size: under the resumable name (with an
    /// empty record, when the target keeps one) unless the source uses that
    /// name itself, then under a plain temp name.
    fn new_partial(
        &self,
        src: BorrowedFd,
        dd: BorrowedFd,
        (rel, name): (&[u8], &[u8]),
        s: &Stat,
        resumable: bool,
    ) -> Res<Partial> {
        let tmp = match resumable {
            true => resume::partial_name(s.ino),
            false => self.temp_name(),
        };
        // Owner-only until complete (finish_file gives the mode): a partial
        // that outlives a pass must not be writable by the source's group.
        let (f, layout) = on_dst(self.create_target(src, dd, rel, &tmp, 0o600))?;
        let sized = fsops::ftruncate(f.as_fd(), s.size).and_then(|()| fsops::fstat(f.as_fd()));
        let tmp_id = match sized {
            Ok(st) => st.ident(),
            Err(e) => {
                let _ = fsops::unlink_at(dd, &tmp);
                return Err(Fail::Os(Side::Target, e));
            }
        };
        // On Lustre, chunks cover whole stripes (stripe size x count) so no two
        // ranks write into the same stripe.
        let align = layout.map(|l| l.chunk_alignment()).unwrap_or(0);
        let chunk = match self.opts.chunk_size.max(1) {
            cs if align > 0 => cs.div_ceil(align) * align,
            cs => cs,
        };
        let record = Some(Record::new(s, name, chunk))
            .filter(|_| resumable)
            .filter(|r| self.write_record(f.as_fd(), rel, r));
        Ok(Partial {
            tmp,
            tmp_id,
            chunk,
            record,
        })
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

    /// Copy one chunk and report it. No sync here: after a stop every rank
    /// syncs the partials it wrote into before any record lists a chunk
    /// (`sync_written`, `keep_partials`), so a running copy pays nothing.
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
            let end = (off + len).min(st.size.max(off));
            self.copy_data(src.as_fd(), dst.as_fd(), off, end, st.maybe_sparse())
        })();
        if r.is_ok() {
            let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
            w.entry(id).or_insert_with(|| Written {
                dir: job.dir.clone(),
                dst: job.ids.dst,
                tmp: job.tmp.clone(),
                tmp_id: job.tmp_id,
            });
        }
        let (end, bytes) = match r {
            Ok(bytes) => (ChunkEnd::In, bytes),
            Err(Fail::Changed) => (ChunkEnd::Stopped, 0), // abandoned, not an error
            Err(f) => {
                // One line per file and rank, not one per chunk (a full
                // target fails every chunk left).
                let first = self
                    .chunk_failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id);
                if first {
                    self.report(&rel, f);
                }
                (ChunkEnd::Failed, 0)
            }
        };
        let done = Item::ChunkDone {
            id,
            off,
            end,
            bytes,
        };
        out.send_to((id >> 40) as usize, done);
    }

    /// Chunk at `off` of file `id` ended: one that is in goes into the
    /// partial's record (in memory: written to the file after a stop); the
    /// last one completes the file.
    pub(super) fn chunk_done(&self, id: u64, off: u64, end: ChunkEnd, bytes: u64) {
        let done = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let Some(f) = p.get_mut(&id) else { return };
            f.remaining = f.remaining.saturating_sub(1);
            f.failed |= end == ChunkEnd::Failed;
            f.stopped |= end == ChunkEnd::Stopped;
            f.bytes += bytes;
            // Seen in the progress line while the file is not complete.
            self.ctx
                .counters
                .partial
                .fetch_add(bytes, Ordering::Relaxed);
            if let (ChunkEnd::In, Some(rec)) = (end, f.record.as_mut()) {
                rec.done.insert(off / rec.chunk);
            }
            if f.remaining > 0 {
                return;
            }
            p.remove(&id)
        };
        if let Some(f) = done {
            self.complete(f);
        }
    }

    /// All chunks reported back: finish the file and count it; a stopped
    /// one waits for `keep_partials`.
    fn complete(&self, f: PendingFile) {
        let gauge = &self.ctx.counters.partial;
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(f.bytes))
        });
        if f.stopped && !f.failed && f.record.is_some() {
            self.kept.lock().unwrap_or_else(|p| p.into_inner()).push(f);
            return;
        }
        let rel = fsops::join(&f.dir, &f.name);
        match self.finish_chunked(&f) {
            Ok(()) if !f.failed && !f.stopped => {
                let c = &self.ctx;
                c.bump(&c.counters.files, 1);
                c.bump(&c.counters.data, f.bytes);
                c.bump(&c.counters.resumed, f.resumed);
                c.hist
                    .record(f.st.size, f.started.elapsed().as_micros() as u64);
                c.act(&rel, crate::manifest::Action::copied(&f.st));
            }
            Ok(()) => {}
            Err(e) => self.report(&rel, e),
        }
    }

    /// All chunks are in: check the source did not change, give the temp
    /// file its metadata and rename it over the name. A failed chunk (an
    /// error, say a full target) drops the partial, so it holds no space.
    fn finish_chunked(&self, f: &PendingFile) -> Res<()> {
        let (dd, _) = on_dst(self.ctx.open_dst_dir(&f.dir, f.ids.dst))?;
        if f.failed || f.stopped {
            let _ = fsops::unlink_at(dd.as_fd(), &f.tmp);
            return Ok(());
        }
        let res = (|| {
            let (sd, _) = on_src(self.ctx.open_src_dir(&f.dir, f.ids.src))?;
            let (src, after) = on_src(fsops::open_read_checked(sd.as_fd(), &f.name, f.st.ident()))?;
            let dst = on_dst(fsops::open_write_checked(dd.as_fd(), &f.tmp, f.tmp_id))?;
            if !meta::unchanged(&f.st, &after) {
                return Err(Fail::Changed);
            }
            if f.record.is_some() {
                self.drop_record(dst.as_fd())?;
            }
            let rel = fsops::join(&f.dir, &f.name);
            self.finish_file(src.as_fd(), dst.as_fd(), (&f.st, &rel), Landing::UNKNOWN)?;
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
