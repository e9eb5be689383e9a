//! The only view of the job the rest of lmpi has: ranks that exchange byte
//! messages, plus barrier and reductions. `mpi` is the real thing; `local` runs
//! N simulated ranks as threads so the engine can be tested without MPI;
//! `solo` is the one-rank world of a run started by hand.

pub mod local;
pub mod mpi;
pub mod solo;

pub type Rank = usize;

pub trait Transport {
    fn rank(&self) -> Rank;
    fn size(&self) -> usize;
    /// Queue `msg` for `to` and return at once: a blocking send could deadlock
    /// two ranks sending large messages to each other.
    fn send(&mut self, to: Rank, msg: Vec<u8>);
    /// Probe and receive: the next message that has arrived, if any.
    fn try_recv(&mut self) -> Option<(Rank, Vec<u8>)>;
    fn barrier(&mut self);
    fn all_reduce_sum(&mut self, v: &[u64]) -> Vec<u64>;
    fn all_reduce_max(&mut self, v: &[u64]) -> Vec<u64>;
    /// Every rank's bytes at rank 0, in rank order; other ranks get nothing.
    /// A collective: every rank calls it, and it is apart from `send`/`try_recv`
    /// traffic, so a straggling work message can never be taken for a part.
    fn gather(&mut self, mine: Vec<u8>) -> Vec<Vec<u8>>;
    /// True if an arriving message unparks the thread that receives (the
    /// in-process transport): then a rank need not poll often. MPI cannot.
    fn wakes_receiver(&self) -> bool {
        false
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn rank(&self) -> Rank {
        (**self).rank()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn send(&mut self, to: Rank, msg: Vec<u8>) {
        (**self).send(to, msg)
    }
    fn try_recv(&mut self) -> Option<(Rank, Vec<u8>)> {
        (**self).try_recv()
    }
    fn barrier(&mut self) {
        (**self).barrier()
    }
    fn all_reduce_sum(&mut self, v: &[u64]) -> Vec<u64> {
        (**self).all_reduce_sum(v)
    }
    fn all_reduce_max(&mut self, v: &[u64]) -> Vec<u64> {
        (**self).all_reduce_max(v)
    }
    fn gather(&mut self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        (**self).gather(mine)
    }
    fn wakes_receiver(&self) -> bool {
        (**self).wakes_receiver()
    }
}
