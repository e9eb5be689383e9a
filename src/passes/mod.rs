//! The three passes. Each is a `Processor` for the engine: policy only; every
//! syscall goes through `fsops`.

pub mod copy;
pub mod delete;
pub mod dirtime;
pub mod one_writer;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::errlog::{ErrorLog, Side};
use crate::filter::Filter;
use crate::fsops::{self, OsError};
use crate::stats::{Counters, Histograms};
use crate::wire::{Malformed, Reader, Writer};

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
    pub fn bump(&self, c: &std::sync::atomic::AtomicU64, n: u64) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn err(&self, side: Side, rel: &[u8], e: OsError) {
        self.log.error(side, rel, e)
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
