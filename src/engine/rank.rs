//! One rank's side of a phase: a loop that is producer and consumer at once
//! (as ripgrep's parallel walker is). Each turn it reads messages, applies
//! control commands, feeds its I/O threads, asks a random victim for work
//! when it has none, takes part in termination detection when passive, and
//! reports to rank 0. Each of those is one short method.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::msg::{Envelope, Msg};
use super::pool::{Pool, PoolMsg};
use super::queue::WorkQueue;
use super::safra::{Safra, Step};
use super::Command;
use super::{Monitor, Processor, RankReport, RunControl, RunOpts, RunOutcome};
use crate::stats::Counters;
use crate::transport::{Rank, Transport};

/// What the loop borrows from its caller for one phase.
pub(crate) struct Env<'a, T: ?Sized> {
    pub t: &'a mut T,
    pub counters: &'a Counters,
    pub ctl: &'a Arc<RunControl>,
    pub monitor: &'a mut dyn Monitor,
    pub opts: &'a RunOpts,
}

/// Leaves a rank may hold, per thread, before they run ahead of branches.
const LEAF_HIGH_WATER: usize = 16;
/// The longest a rank goes without looking at the transport.
const MAX_POLL_GAP: Duration = Duration::from_millis(2);
const MIN_STEAL_BACKOFF: Duration = Duration::from_micros(50);
const MAX_STEAL_BACKOFF: Duration = Duration::from_millis(10);
/// A rank with more than this many queued items per thread shares...
const SHARE_ABOVE: usize = 2;
/// ...at most once per this long...
const SHARE_GAP: Duration = Duration::from_micros(250);
/// ...and not within this long of being given work.
const SHARE_HOLD: Duration = Duration::from_micros(1000);

pub(crate) struct RankLoop<'a, T: Transport + ?Sized, P: Processor> {
    env: Env<'a, T>,
    proc: Arc<P>,
    me: Rank,
    n: usize,
    rng: SmallRng,
    pool: Pool<P::Item>,
    /// Stealable items; the newest is processed first (depth-first).
    queue: WorkQueue<P::Item>,
    /// Items that must run here (sent to this rank by another).
    pinned: VecDeque<P::Item>,
    /// Items handed to I/O threads and not yet done.
    inflight: usize,
    /// Items dropped because of a stop.
    abandoned: u64,
    steals: u64,
    shares: u64,
    safra: Safra,
    /// Seeds wait here until the start gate opens (rank 0 with --wait-for-start).
    held_seeds: Option<Vec<P::Item>>,
    gate_open: bool,
    steal_out: bool,
    /// After a refused steal, the next waits this long (doubling up to
    /// `MAX_STEAL_BACKOFF`): hundreds of idle ranks must not flood the
    /// network and the busy ranks with requests while a narrow tree is walked.
    steal_backoff: Duration,
    next_steal: Instant,
    /// The last rank that gave work: asked again before a random one.
    last_victim: Option<Rank>,
    /// When this rank may next push surplus work unasked.
    next_share: Instant,
    /// When this rank was last given work (stolen or pushed).
    given_at: Instant,
    terminated: bool,
    was_stopping: bool,
    reports: Vec<Option<RankReport>>,
    next_report: Instant,
    idle_sleep: Duration,
    /// How long a busy rank waits for results before it polls the transport.
    poll_gap: Duration,
}

impl<'a, T: Transport + ?Sized, P: Processor> RankLoop<'a, T, P> {
    pub fn new(env: Env<'a, T>, proc: Arc<P>, seeds: Vec<P::Item>) -> Self {
        let (me, n) = (env.t.rank(), env.t.size());
        let seed = env.opts.seed ^ (me as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let gate_open = !(env.opts.wait_for_start && me == 0);
        let next_report = Instant::now() + env.opts.interval;
        RankLoop {
            rng: SmallRng::seed_from_u64(seed),
            pool: Pool::new(),
            queue: WorkQueue::new(),
            pinned: VecDeque::new(),
            inflight: 0,
            abandoned: 0,
            steals: 0,
            shares: 0,
            safra: Safra::default(),
            held_seeds: Some(seeds),
            gate_open,
            steal_out: false,
            steal_backoff: Duration::ZERO,
            next_steal: Instant::now(),
            last_victim: None,
            next_share: Instant::now(),
            given_at: Instant::now(),
            terminated: false,
            was_stopping: false,
            reports: vec![None; if me == 0 { n } else { 0 }],
            next_report,
            idle_sleep: Duration::from_micros(20),
            poll_gap: Duration::from_micros(100),
            env,
            proc,
            me,
            n,
        }
    }

    /// Run the phase to global termination (or a graceful stop).
    pub fn run(mut self) -> RunOutcome {
        self.pool.resize(&self.proc, self.env.ctl);
        while !self.terminated {
            // Results first: what the I/O threads made meanwhile is then
            // queued for a thief's request. Progress is work moving; a
            // message alone (a refusal, a token) does not reset the back-off.
            let mut progressed = self.on_results();
            let heard = self.on_messages();
            if self.terminated {
                break;
            }
            self.on_commands();
            self.release_seeds();
            self.check_stop();
            progressed |= self.feed_pool();
            self.maybe_steal();
            self.maybe_share();
            if self.is_passive() {
                self.when_passive();
            }
            self.publish();
            if !self.terminated {
                self.wait(progressed, heard);
            }
        }
        let settled = Instant::now();
        self.pool.shutdown();
        self.env.counters.queued.store(0, Ordering::Relaxed);
        self.env.counters.inflight.store(0, Ordering::Relaxed);
        RunOutcome {
            stopped: self.env.ctl.stopping(),
            abandoned: self.abandoned,
            steals: self.steals,
            shares: self.shares,
            settled,
        }
    }

    fn send(&mut self, to: Rank, msg: Msg<P::Item>) {
        let epoch = self.env.opts.epoch;
        self.env.t.send(to, Envelope { epoch, msg }.encode());
    }

    fn on_messages(&mut self) -> bool {
        let mut any = false;
        while let Some((from, bytes)) = self.env.t.try_recv() {
            any = true;
            match Envelope::<P::Item>::decode(&bytes) {
                Ok(e) if e.epoch == self.env.opts.epoch => self.on_message(from, e.msg),
                Ok(_) => {} // a straggler from an earlier phase
                Err(e) => {
                    // Lost work would keep termination from ever being found:
                    // end the job (mpirun/srun stop the other ranks) rather than hang.
                    eprintln!(
                        "lmpi: rank {}: cannot read a message from rank {from} ({e}): \
                         are all ranks the same lmpi version? ending the job",
                        self.me
                    );
                    std::process::exit(crate::status::ExitStatus::Errors.code());
                }
            }
        }
        any
    }

    fn on_message(&mut self, from: Rank, msg: Msg<P::Item>) {
        match msg {
            Msg::Work { items, pinned } => {
                if !pinned {
                    // It had surplus: ask it first next time.
                    self.last_victim = Some(from);
                }
                self.on_work(items, pinned)
            }
            Msg::Steal => self.on_steal(from),
            Msg::NoWork => {
                self.last_victim = None;
                self.refused()
            }
            Msg::Probe => {
                let step = self.safra.got_probe(self.me, self.n);
                self.follow(step);
            }
            Msg::Answer(t) => self.safra.got_answer(t),
            Msg::Terminate => self.terminated = true,
            Msg::Report(r) => {
                if let Some(slot) = self.reports.get_mut(from) {
                    *slot = Some(r);
                }
            }
            Msg::Control(cmd) => self.apply(cmd),
        }
    }

    fn on_work(&mut self, items: Vec<P::Item>, pinned: bool) {
        self.safra.got_work();
        if pinned {
            self.pinned.extend(items);
            return;
        }
        self.steal_out = false;
        self.steal_backoff = Duration::ZERO;
        self.given_at = Instant::now();
        if self.env.ctl.stopping() {
            self.abandoned += items.len() as u64;
        } else {
            self.enqueue(items);
        }
    }

    /// Give half of the oldest items (the big subtrees), or the last one if
    /// all threads are busy; nothing while stopping.
    fn on_steal(&mut self, from: Rank) {
        let busy = self.inflight >= self.env.ctl.threads();
        let items = if self.env.ctl.stopping() {
            Vec::new()
        } else {
            self.queue.steal(busy)
        };
        if items.is_empty() {
            return self.send(from, Msg::NoWork);
        }
        self.safra.sent_work();
        self.send(
            from,
            Msg::Work {
                items,
                pinned: false,
            },
        );
    }

    fn refused(&mut self) {
        self.steal_out = false;
        self.steal_backoff = (self.steal_backoff * 2).clamp(MIN_STEAL_BACKOFF, MAX_STEAL_BACKOFF);
        self.next_steal = Instant::now() + self.steal_backoff;
    }

    fn enqueue(&mut self, items: Vec<P::Item>) {
        for item in items {
            let branch = self.proc.is_branch(&item);
            self.queue.push(item, branch);
        }
    }

    fn apply(&mut self, cmd: Command) {
        if cmd == Command::Start {
            self.gate_open = true;
        }
        self.env.ctl.apply(cmd);
    }

    /// Rank 0 decides control commands for everyone.
    fn on_commands(&mut self) {
        if self.me != 0 {
            return;
        }
        while let Some(cmd) = self.env.monitor.poll_command() {
            for r in 1..self.n {
                self.send(r, Msg::Control(cmd));
            }
            self.apply(cmd);
        }
    }

    fn release_seeds(&mut self) {
        if self.gate_open {
            if let Some(seeds) = self.held_seeds.take() {
                self.enqueue(seeds);
            }
        }
    }

    /// Signals act locally (scancel signals every rank anyway); a stop drops
    /// what is queued, once.
    fn check_stop(&mut self) {
        if crate::signals::stop_requested() {
            self.env.ctl.request_stop();
        }
        if !self.env.ctl.stopping() || self.was_stopping {
            return;
        }
        self.was_stopping = true;
        self.abandoned += self.queue.clear() as u64;
        if let Some(s) = self.held_seeds.take() {
            self.abandoned += s.len() as u64;
        }
    }

    fn on_results(&mut self) -> bool {
        let mut any = false;
        while let Ok(m) = self.pool.results.try_recv() {
            any = true;
            self.on_result(m);
        }
        any
    }

    fn on_result(&mut self, m: PoolMsg<P::Item>) {
        match m {
            PoolMsg::Local(_) if self.env.ctl.stopping() => self.abandoned += 1,
            PoolMsg::Local(item) => {
                let branch = self.proc.is_branch(&item);
                self.queue.push(item, branch);
            }
            PoolMsg::Pinned(rank, item) if rank == self.me => self.pinned.push_back(item),
            PoolMsg::Pinned(rank, item) => {
                self.safra.sent_work();
                let items = vec![item];
                self.send(
                    rank,
                    Msg::Work {
                        items,
                        pinned: true,
                    },
                );
            }
            PoolMsg::Done => self.inflight -= 1,
        }
    }

    /// Pinned items first: they unblock other ranks' bookkeeping.
    fn feed_pool(&mut self) -> bool {
        self.pool.resize(&self.proc, self.env.ctl);
        let threads = self.env.ctl.threads();
        let cap = threads + 2;
        let mut any = false;
        while self.inflight < cap {
            let next = match self.pinned.pop_front() {
                Some(item) => Some((item, false)),
                None => self.queue.next(LEAF_HIGH_WATER * threads),
            };
            let Some((item, branch)) = next else { break };
            self.pool.submit(item, branch);
            self.inflight += 1;
            any = true;
        }
        any
    }

    fn maybe_steal(&mut self) {
        let idle = self.queue.is_empty() && self.pinned.is_empty();
        let stopping = self.env.ctl.stopping();
        if self.n < 2 || !idle || self.steal_out || stopping {
            return;
        }
        if self.inflight >= self.env.ctl.threads() || Instant::now() < self.next_steal {
            return;
        }
        let victim = match self.last_victim {
            Some(v) => v,
            None => self.random_other(),
        };
        self.send(victim, Msg::Steal);
        self.steal_out = true;
        self.steals += 1;
    }

    /// Far more queued than this rank's threads will start soon (one huge
    /// directory's batches): push the older half to a random rank, at most
    /// once per `SHARE_GAP`. The receivers do the same, so the work spreads
    /// by doubling instead of waiting for random steal requests to find the
    /// one rank that has it.
    fn maybe_share(&mut self) {
        let many = self.queue.len() > SHARE_ABOVE * self.env.ctl.threads();
        if self.n < 2 || !many || self.env.ctl.stopping() {
            return;
        }
        let now = Instant::now();
        // Just given work: pass it on only after a while, or two busy ranks
        // would push the same items back and forth.
        if now < self.next_share || now < self.given_at + SHARE_HOLD {
            return;
        }
        self.next_share = now + SHARE_GAP;
        let items = self.queue.steal(false);
        if items.is_empty() {
            return;
        }
        let to = self.random_other();
        self.safra.sent_work();
        self.shares += 1;
        self.send(
            to,
            Msg::Work {
                items,
                pinned: false,
            },
        );
    }

    fn random_other(&mut self) -> Rank {
        let v = self.rng.gen_range(0..self.n - 1);
        if v >= self.me {
            v + 1
        } else {
            v
        }
    }

    fn is_passive(&self) -> bool {
        self.queue.is_empty()
            && self.pinned.is_empty()
            && self.inflight == 0
            && self.held_seeds.is_none()
    }

    fn when_passive(&mut self) {
        let step = self.safra.when_passive(self.me, self.n);
        self.follow(step);
    }

    /// Carry out what termination detection asks of this rank.
    fn follow(&mut self, step: Step) {
        match step {
            Step::Nothing => {}
            Step::Probe(kids) => {
                for k in kids {
                    self.send(k, Msg::Probe);
                }
            }
            Step::Answer(to, tally) => self.send(to, Msg::Answer(tally)),
            Step::Terminate => {
                for r in 1..self.n {
                    self.send(r, Msg::Terminate);
                }
                self.terminated = true;
            }
        }
    }

    /// Queue gauges every turn; every `interval`, a report to rank 0.
    fn publish(&mut self) {
        let c = self.env.counters;
        let queued = (self.queue.len() + self.pinned.len()) as u64;
        c.queued.store(queued, Ordering::Relaxed);
        c.inflight.store(self.inflight as u64, Ordering::Relaxed);
        let now = Instant::now();
        if now < self.next_report {
            return;
        }
        self.next_report = now + self.env.opts.interval;
        let active = self
            .pool
            .active
            .lock()
            .map(|a| a.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default();
        let report = RankReport {
            counters: c.snapshot(),
            active,
        };
        if self.me != 0 {
            return self.send(0, Msg::Report(report));
        }
        self.reports[0] = Some(report);
        self.env.monitor.tick(&self.reports, self.env.ctl);
    }

    /// Wake as soon as an I/O thread reports, and poll the transport (MPI
    /// cannot wake a thread) more often while messages come in; back off
    /// while nothing at all happens. Hundreds of ranks per node must not
    /// spend the node's CPU on polling.
    fn wait(&mut self, progressed: bool, heard: bool) {
        // A transport that wakes us on arrival needs polling only as a backstop.
        let most = if self.env.t.wakes_receiver() {
            MAX_POLL_GAP * 10
        } else {
            MAX_POLL_GAP
        };
        if progressed {
            self.idle_sleep = Duration::from_micros(20);
        }
        self.poll_gap = if heard {
            Duration::from_micros(100)
        } else {
            (self.poll_gap * 2).min(most)
        };
        if self.inflight > 0 {
            self.pool.wait_for_result(self.poll_gap);
        } else if !progressed {
            let steal_in = self.next_steal.saturating_duration_since(Instant::now());
            let nap = if steal_in.is_zero() {
                self.idle_sleep
            } else {
                self.idle_sleep.min(steal_in)
            };
            self.pool.wait_for_result(nap);
            self.idle_sleep = (self.idle_sleep * 2).min(most);
        }
    }
}
