//! The distributed work queue every pass runs on.
//!
//! Each rank keeps its own deque of work items and feeds a pool of I/O threads
//! from it, newest first (depth-first, so the queue stays small however big the
//! tree is). A rank with nothing queued asks a random victim, which hands over
//! half of its oldest items (those are the big subtrees). Termination is found
//! with Dijkstra–Safra's token ring: messages that carry work are counted, a
//! rank that receives work turns black, and the job is over when a white token
//! comes back to rank 0 with the counts summing to zero.
//!
//! MPI calls stay on the thread that calls `run`; the I/O threads only see
//! `Emitter`, which feeds results back through a channel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::stats::{Counters, Snapshot};
use crate::transport::Transport;

mod msg;
mod pool;
mod queue;
mod rank;
mod safra;

pub use pool::Emitter;

/// A decision taken from the broker or `lmpi ctl`; rank 0 forwards it to
/// every rank in `Msg::Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Graceful stop, the same as scancel/SIGTERM.
    Stop,
    /// Release a job started with `--wait-for-start`.
    Start,
    /// Change I/O threads per rank by +n / -n.
    PoolGrow(usize),
    PoolShrink(usize),
}

/// What a pass does with one item, on an I/O thread.
pub trait Processor: Send + Sync + 'static {
    /// Travels between ranks (stolen, or sent to its owner) in `Msg::Work`.
    type Item: Serialize + DeserializeOwned + Send + 'static;
    fn process(&self, item: Self::Item, out: &mut Emitter<'_, Self::Item>);
    /// True for an item that makes more work (a directory): it runs before
    /// queued leaves, so the walk stays ahead of the copying.
    fn is_branch(&self, _item: &Self::Item) -> bool {
        false
    }
    /// A short human label for `status` / `inspect active`.
    fn describe(&self, item: &Self::Item) -> String;
}

/// The most I/O threads per rank any run may have: the upper bound of the
/// `max_threads_per_rank` setting (which is the cap a run actually applies).
pub const THREADS_LIMIT: usize = 1024;

/// Switches shared by the main loop and the I/O threads of one rank.
#[derive(Debug)]
pub struct RunControl {
    stop: AtomicBool,
    threads: AtomicUsize,
    /// No pool_grow takes `threads` above this.
    cap: usize,
}

impl RunControl {
    /// `threads` I/O threads per rank, never more than `cap` (clamped to
    /// 1..=`THREADS_LIMIT`), whatever pool_grow asks.
    pub fn new(threads: usize, cap: usize) -> Arc<RunControl> {
        let cap = cap.clamp(1, THREADS_LIMIT);
        Arc::new(RunControl {
            stop: AtomicBool::new(false),
            threads: AtomicUsize::new(threads.clamp(1, cap)),
            cap,
        })
    }
    pub fn cap(&self) -> usize {
        self.cap
    }
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    pub fn request_stop(&self) {
        crate::signals::stopping_began();
        self.stop.store(true, Ordering::Relaxed);
    }
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }
    pub(crate) fn apply(&self, cmd: Command) {
        match cmd {
            Command::Stop => self.request_stop(),
            Command::PoolGrow(n) => {
                let _ = self
                    .threads
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                        Some(t.saturating_add(n).min(self.cap))
                    });
            }
            Command::PoolShrink(n) => {
                let _ = self
                    .threads
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                        Some(t.saturating_sub(n).max(1))
                    });
            }
            Command::Start => {}
        }
    }
}

/// A rank's periodic report to rank 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RankReport {
    pub counters: Snapshot,
    pub active: Vec<String>,
}

/// Rank 0's view of the run, called from the main loop.
pub trait Monitor {
    /// Every `interval`, with the latest report of each rank (None: not heard yet).
    fn tick(&mut self, reports: &[Option<RankReport>], ctl: &RunControl);
    /// The next control command, if any (rank 0 forwards it to all ranks).
    fn poll_command(&mut self) -> Option<Command> {
        None
    }
}

pub struct NoMonitor;
impl Monitor for NoMonitor {
    fn tick(&mut self, _: &[Option<RankReport>], _: &RunControl) {}
}

pub struct RunOpts {
    /// Distinguishes phases: a message from an earlier phase is dropped.
    pub epoch: u32,
    pub interval: Duration,
    /// Rank 0 holds its seeds until a `Start` command arrives.
    pub wait_for_start: bool,
    /// Seed for victim selection (tests vary it).
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    pub stopped: bool,
    /// Items dropped because of a stop.
    pub abandoned: u64,
    /// Steal requests this rank sent, and unasked pushes of surplus work
    /// (the balance benchmark's cost measures).
    pub steals: u64,
    pub shares: u64,
    /// When this rank found (rank 0) or learned the phase was over, before
    /// its I/O threads were joined: the balance benchmark's clock, which
    /// must not count hundreds of simulated ranks waking and joining their
    /// threads on one small host, where a cluster's nodes do it in parallel.
    pub settled: Instant,
}

/// Run one phase to global termination (or graceful stop) on this rank.
pub fn run<T: Transport + ?Sized, P: Processor>(
    t: &mut T,
    proc: Arc<P>,
    seeds: Vec<P::Item>,
    counters: &Counters,
    ctl: &Arc<RunControl>,
    monitor: &mut dyn Monitor,
    opts: &RunOpts,
) -> RunOutcome {
    let env = rank::Env {
        t,
        counters,
        ctl,
        monitor,
        opts,
    };
    rank::RankLoop::new(env, proc, seeds).run()
}
