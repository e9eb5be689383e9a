//! The real transport: MPI through rsmpi. The only module that touches MPI.
//! MPI calls are made from the rank's main thread only (Threading::Funneled).

use std::collections::VecDeque;
use std::os::raw::{c_int, c_void};

use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::ffi;
use mpi::point_to_point::MatchedReceiveVec;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{Rank, Transport};

const TAG: c_int = 7;

/// A non-blocking send in progress; the buffer must outlive the request.
struct Pending {
    _buf: Vec<u8>,
    req: ffi::MPI_Request,
}

pub struct MpiTransport {
    // Dropping the universe calls MPI_Finalize, so it lives exactly as long as we do.
    _universe: Universe,
    world: SimpleCommunicator,
    pending: VecDeque<Pending>,
}

impl MpiTransport {
    /// Initialise MPI. Without a launcher this is a 1-rank world (singleton).
    pub fn init() -> Option<MpiTransport> {
        let (universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
        let world = universe.world();
        Some(MpiTransport {
            _universe: universe,
            world,
            pending: VecDeque::new(),
        })
    }

    fn reap(&mut self) {
        // Sends complete in order often enough; test from the front until one is still busy.
        while let Some(p) = self.pending.front_mut() {
            let mut flag: c_int = 0;
            // SAFETY: MPI is initialised while `self._universe` lives, and this
            // type is used only on the thread that initialised it, as Funneled
            // requires (main.rs; with Open MPI's pointer MPI_Request it is not
            // even Send). `&mut p.req` and `&mut flag` are live for the call,
            // which writes the flag and, on completion, sets the request to
            // MPI_REQUEST_NULL; only then is the entry (and its buffer)
            // dropped. RSMPI_STATUS_IGNORE is a constant set up by rsmpi's C
            // shim: MPI_STATUS_IGNORE, what MPI_Test takes for no status.
            unsafe { ffi::MPI_Test(&mut p.req, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            if flag == 0 {
                break;
            }
            self.pending.pop_front();
        }
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> Rank {
        self.world.rank() as Rank
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn send(&mut self, to: Rank, msg: Vec<u8>) {
        // SAFETY: RSMPI_REQUEST_NULL is a `const MPI_Request` defined in
        // rsmpi's C shim; reading it is reading an initialised, never-written
        // handle value.
        let mut req: ffi::MPI_Request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: MPI reads `count` bytes from `msg` until the send completes:
        // `msg` is moved into `pending` below and dropped only after MPI_Test
        // reports completion (`reap`, also run by `drop` until empty); moving
        // a Vec does not move its heap buffer. `count` is `msg.len()` as an
        // int: never more than the buffer holds (a length past i32::MAX would
        // give a smaller or negative count, so MPI would read less or fail,
        // never past the end). The datatype is MPI's uint8, `world` is live,
        // `&mut req` is a live local MPI writes the handle to, and we are on
        // the thread that initialised MPI.
        unsafe {
            ffi::MPI_Isend(
                msg.as_ptr() as *const c_void,
                msg.len() as c_int,
                u8::equivalent_datatype().as_raw(),
                to as c_int,
                TAG,
                self.world.as_raw(),
                &mut req,
            );
        }
        self.pending.push_back(Pending { _buf: msg, req });
        self.reap();
    }
    fn try_recv(&mut self) -> Option<(Rank, Vec<u8>)> {
        self.reap();
        let probed = self.world.any_process().immediate_matched_probe()?;
        let (data, status) = probed.matched_receive_vec::<u8>();
        Some((status.source_rank() as Rank, data))
    }
    fn barrier(&mut self) {
        self.world.barrier();
    }
    fn all_reduce_sum(&mut self, v: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; v.len()];
        self.world
            .all_reduce_into(v, &mut out[..], mpi::collective::SystemOperation::sum());
        out
    }
    fn all_reduce_max(&mut self, v: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; v.len()];
        self.world
            .all_reduce_into(v, &mut out[..], mpi::collective::SystemOperation::max());
        out
    }
    fn gather(&mut self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        let root = self.world.process_at_rank(0);
        let len = mine.len() as mpi::Count;
        if self.world.rank() != 0 {
            root.gather_into(&len);
            root.gather_varcount_into(&mine[..]);
            return Vec::new();
        }
        let mut lens: Vec<mpi::Count> = vec![0; self.size()];
        root.gather_into_root(&len, &mut lens[..]);
        let displs: Vec<mpi::Count> = lens
            .iter()
            .scan(0, |at, &l| {
                let d = *at;
                *at += l;
                Some(d)
            })
            .collect();
        let mut all = vec![0u8; lens.iter().map(|&l| l as usize).sum()];
        {
            let mut parts = mpi::datatype::PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            root.gather_varcount_into_root(&mine[..], &mut parts);
        }
        lens.iter()
            .zip(&displs)
            .map(|(&l, &d)| all[d as usize..(d + l) as usize].to_vec())
            .collect()
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        // MPI_Finalize with sends still in flight is erroneous; every message we
        // send is eventually received or small enough to complete eagerly.
        while !self.pending.is_empty() {
            self.reap();
            if !self.pending.is_empty() {
                let _ = self
                    .world
                    .any_process()
                    .immediate_matched_probe()
                    .map(|p| p.matched_receive_vec::<u8>());
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
}
