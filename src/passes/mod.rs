//! The three passes. Each is a `Processor` for the engine: policy only; every
//! syscall goes through `fsops`.

pub mod copy;
pub mod delete;
pub mod dirtime;
pub mod one_writer;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::engine::Emitter;
use crate::errlog::{ErrorLog, Side};
use crate::filter::Filter;
use crate::fsops::{self, OsError};
use crate::stats::{Counters, Histograms};
use crate::wire::{Malformed, Reader, Wire, Writer};

/// What every pass of one rank shares.
pub struct Ctx {
    pub src: OwnedFd,
    pub dst: OwnedFd,
    pub rank: usize,
    pub size: usize,
    pub counters: Arc<Counters>,
    pub hist: Arc<Histograms>,
    pub log: ErrorLog,
    pub filter: Filter,
    pub dry_run: bool,
    pub batch: usize,
    pub is_root: bool,
}

impl Ctx {
    pub fn src(&self) -> BorrowedFd<'_> {
        self.src.as_fd()
    }
    pub fn dst(&self) -> BorrowedFd<'_> {
        self.dst.as_fd()
    }
    pub fn open_src_dir(&self, rel: &[u8]) -> Result<OwnedFd, OsError> {
        fsops::open_dir_beneath(self.src(), rel)
    }
    pub fn open_dst_dir(&self, rel: &[u8]) -> Result<OwnedFd, OsError> {
        fsops::open_dir_beneath(self.dst(), rel)
    }
    /// Open `rel` on both sides, source first (if it cannot be opened,
    /// nothing below it is judged). A failure is reported, naming its side,
    /// and gives None. With `missing_target_ok` (a dry run walking directories
    /// the target does not have yet) a missing target gives `(sd, None)`.
    pub fn open_pair(
        &self,
        rel: &[u8],
        missing_target_ok: bool,
    ) -> Option<(OwnedFd, Option<OwnedFd>)> {
        let sd = match self.open_src_dir(rel) {
            Ok(fd) => fd,
            Err(e) => {
                self.err(Side::Source, rel, e);
                return None;
            }
        };
        match self.open_dst_dir(rel) {
            Ok(fd) => Some((sd, Some(fd))),
            Err(e) if missing_target_ok && e.is_not_found() => Some((sd, None)),
            Err(e) => {
                self.err(Side::Target, rel, e);
                None
            }
        }
    }
    pub fn bump(&self, c: &std::sync::atomic::AtomicU64, n: u64) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn err(&self, side: Side, rel: &[u8], e: OsError) {
        self.log.error(side, rel, e)
    }
}

/// Names of some entries of one directory: one work item's worth.
#[derive(Debug)]
pub struct Batch {
    pub dir: Vec<u8>,
    pub names: Vec<Vec<u8>>,
}

impl Wire for Batch {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.dir);
        put_names(w, &self.names);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        Ok(Batch {
            dir: r.bytes()?.to_vec(),
            names: get_names(r)?,
        })
    }
}

/// One directory's entries gathered into work items of `size` names each,
/// so no item (and no message) grows with the directory.
pub(crate) struct Batcher<T> {
    dir: Vec<u8>,
    size: usize,
    names: Vec<Vec<u8>>,
    make: fn(Batch) -> T,
}

impl<T> Batcher<T> {
    pub fn new(dir: &[u8], size: usize, make: fn(Batch) -> T) -> Self {
        Batcher {
            dir: dir.to_vec(),
            size,
            names: Vec::new(),
            make,
        }
    }

    /// Add a name; a full batch goes out as one item.
    pub fn push(&mut self, name: Vec<u8>, out: &mut Emitter<'_, T>) {
        self.names.push(name);
        if self.names.len() >= self.size {
            let names = std::mem::take(&mut self.names);
            out.push((self.make)(Batch {
                dir: self.dir.clone(),
                names,
            }));
        }
    }

    /// Send what is left.
    pub fn finish(self, out: &mut Emitter<'_, T>) {
        if !self.names.is_empty() {
            out.push((self.make)(Batch {
                dir: self.dir,
                names: self.names,
            }));
        }
    }
}

pub(crate) fn put_names(w: &mut Writer, names: &[Vec<u8>]) {
    w.u32(names.len() as u32);
    for n in names {
        w.bytes(n);
    }
}

pub(crate) fn get_names(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, Malformed> {
    let k = r.u32()? as usize;
    let mut v = Vec::with_capacity(k.min(1 << 16));
    for _ in 0..k {
        v.push(r.bytes()?.to_vec());
    }
    Ok(v)
}
