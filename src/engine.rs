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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::control::Command;
use crate::stats::{Counters, Snapshot};
use crate::transport::{Rank, Transport};
use crate::wire::{Malformed, Reader, Wire, Writer};

/// What a pass does with one item, on an I/O thread.
pub trait Processor: Send + Sync + 'static {
    type Item: Wire;
    fn process(&self, item: Self::Item, out: &mut Emitter<'_, Self::Item>);
    /// A short human label for `status` / `inspect active`.
    fn describe(&self, item: &Self::Item) -> String;
}

/// Switches shared by the main loop and the I/O threads of one rank.
#[derive(Debug)]
pub struct RunControl {
    stop: AtomicBool,
    threads: AtomicUsize,
}

impl RunControl {
    pub fn new(threads: usize) -> Arc<RunControl> {
        Arc::new(RunControl {
            stop: AtomicBool::new(false),
            threads: AtomicUsize::new(threads.max(1)),
        })
    }
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }
    fn apply(&self, cmd: Command) {
        match cmd {
            Command::Stop => self.request_stop(),
            Command::PoolGrow(n) => {
                let _ = self
                    .threads
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                        Some((t + n).min(1024))
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

enum PoolMsg<I> {
    Local(I),
    Pinned(Rank, I),
    Done,
}

/// How an I/O thread hands back new work.
pub struct Emitter<'a, I> {
    tx: &'a Sender<PoolMsg<I>>,
    ctl: &'a RunControl,
}

impl<I> Emitter<'_, I> {
    /// New work for any rank (it may be stolen).
    pub fn push(&mut self, item: I) {
        let _ = self.tx.send(PoolMsg::Local(item));
    }
    /// Work that must run on `rank` (e.g. the owner of a hardlink group).
    pub fn send_to(&mut self, rank: Rank, item: I) {
        let _ = self.tx.send(PoolMsg::Pinned(rank, item));
    }
    /// True once a graceful stop was requested: finish or abandon, don't start more.
    pub fn stopping(&self) -> bool {
        self.ctl.stopping()
    }
}

/// A rank's periodic report to rank 0.
#[derive(Debug, Clone, Default)]
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
}

const M_WORK: u8 = 1;
const M_PINNED: u8 = 2;
const M_STEAL: u8 = 3;
const M_NOWORK: u8 = 4;
const M_TOKEN: u8 = 5;
const M_TERMINATE: u8 = 6;
const M_REPORT: u8 = 7;
const M_CONTROL: u8 = 8;

fn header(kind: u8, epoch: u32) -> Writer {
    let mut w = Writer::new();
    w.u8(kind).u32(epoch);
    w
}

fn encode_command(w: &mut Writer, c: Command) {
    match c {
        Command::Stop => w.u8(0).u64(0),
        Command::Start => w.u8(1).u64(0),
        Command::PoolGrow(n) => w.u8(2).u64(n as u64),
        Command::PoolShrink(n) => w.u8(3).u64(n as u64),
    };
}

fn decode_command(r: &mut Reader<'_>) -> Result<Command, Malformed> {
    let k = r.u8()?;
    let n = r.u64()? as usize;
    Ok(match k {
        0 => Command::Stop,
        1 => Command::Start,
        2 => Command::PoolGrow(n),
        3 => Command::PoolShrink(n),
        _ => return Err(Malformed),
    })
}

struct Token {
    q: i64,
    black: bool,
}

struct Pool<I> {
    tasks: Option<Sender<I>>,
    task_rx: Receiver<I>,
    results: Receiver<PoolMsg<I>>,
    result_tx: Sender<PoolMsg<I>>,
    alive: Arc<AtomicUsize>,
    handles: Vec<JoinHandle<()>>,
    active: Arc<Mutex<Vec<(usize, String)>>>,
    next_id: usize,
}

impl<I: Wire> Pool<I> {
    fn new() -> Self {
        let (tasks, task_rx) = unbounded();
        let (result_tx, results) = unbounded();
        Pool {
            tasks: Some(tasks),
            task_rx,
            results,
            result_tx,
            alive: Arc::new(AtomicUsize::new(0)),
            handles: Vec::new(),
            active: Arc::new(Mutex::new(Vec::new())),
            next_id: 0,
        }
    }

    /// Grow to the wanted size; shrinking happens in the workers themselves.
    fn resize<P: Processor<Item = I>>(&mut self, proc: &Arc<P>, ctl: &Arc<RunControl>) {
        while self.alive.load(Ordering::SeqCst) < ctl.threads() {
            self.alive.fetch_add(1, Ordering::SeqCst);
            let id = self.next_id;
            self.next_id += 1;
            let (rx, tx, alive, active) = (
                self.task_rx.clone(),
                self.result_tx.clone(),
                self.alive.clone(),
                self.active.clone(),
            );
            let (proc, ctl) = (proc.clone(), ctl.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("lmpi-io-{id}"))
                .spawn(move || worker(id, &*proc, &ctl, &rx, &tx, &alive, &active));
            match spawned {
                Ok(h) => self.handles.push(h),
                Err(e) => {
                    self.alive.fetch_sub(1, Ordering::SeqCst);
                    if self.alive.load(Ordering::SeqCst) == 0 {
                        // Without a single thread no work can be done; say so loudly.
                        eprintln!("lmpi: cannot start an I/O thread: {e}");
                    }
                    break;
                }
            }
        }
    }

    fn shutdown(&mut self) {
        self.tasks = None;
        // Workers still holding a sender clone see Disconnected only once tasks is dropped
        // and the channel is empty; they exit on the next poll.
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker<P: Processor>(
    id: usize,
    proc: &P,
    ctl: &RunControl,
    rx: &Receiver<P::Item>,
    tx: &Sender<PoolMsg<P::Item>>,
    alive: &AtomicUsize,
    active: &Mutex<Vec<(usize, String)>>,
) {
    loop {
        // Shrink: leave while more threads are alive than wanted.
        let mut cur = alive.load(Ordering::SeqCst);
        let mut leaving = false;
        while cur > ctl.threads() {
            match alive.compare_exchange(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    leaving = true;
                    break;
                }
                Err(now) => cur = now,
            }
        }
        if leaving {
            return;
        }
        let item = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                alive.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        let label = proc.describe(&item);
        if let Ok(mut a) = active.lock() {
            a.push((id, label));
        }
        let mut out = Emitter { tx, ctl };
        proc.process(item, &mut out);
        if let Ok(mut a) = active.lock() {
            a.retain(|(i, _)| *i != id);
        }
        let _ = tx.send(PoolMsg::Done);
    }
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
    let me = t.rank();
    let n = t.size();
    let epoch = opts.epoch;
    let mut rng =
        SmallRng::seed_from_u64(opts.seed ^ (me as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut pool: Pool<P::Item> = Pool::new();
    pool.resize(&proc, ctl);

    let mut st: Local<P::Item> = Local::default();
    // Every rank may bring seeds (phase 2 of a copy does); only rank 0 waits for the start gate.
    let mut held_seeds = Some(seeds);
    let mut gate_open = !(opts.wait_for_start && me == 0);
    let mut steal_out = false;
    let mut black = false;
    let mut token: Option<Token> = None;
    let mut wave_out = false;
    let mut terminated = false;
    let mut reports: Vec<Option<RankReport>> = vec![None; if me == 0 { n } else { 0 }];
    let mut next_report = Instant::now() + opts.interval;
    let mut idle_sleep = Duration::from_micros(20);
    let mut was_stopping = false;

    while !terminated {
        let mut progressed = false;

        // Messages from other ranks.
        while let Some((from, msg)) = t.try_recv() {
            progressed = true;
            let mut r = Reader::new(&msg);
            let (Ok(kind), Ok(ep)) = (r.u8(), r.u32()) else {
                continue;
            };
            if ep != epoch {
                continue; // a straggler from an earlier phase
            }
            match kind {
                M_WORK | M_PINNED => {
                    st.count -= 1;
                    black = true;
                    if kind == M_WORK {
                        steal_out = false;
                    }
                    let Ok(k) = r.u32() else { continue };
                    for _ in 0..k {
                        match P::Item::decode(&mut r) {
                            Ok(item) if kind == M_PINNED => st.pinned.push_back(item),
                            Ok(_) if ctl.stopping() => st.abandoned += 1,
                            Ok(item) => st.queue.push_back(item),
                            Err(_) => {
                                eprintln!(
                                    "lmpi: rank {me}: malformed work message from rank {from}"
                                );
                                break;
                            }
                        }
                    }
                }
                M_STEAL => {
                    let give = if st.queue.len() >= 2 {
                        st.queue.len() / 2
                    } else if st.queue.len() == 1 && st.inflight >= ctl.threads() {
                        1
                    } else {
                        0
                    };
                    if give == 0 || ctl.stopping() {
                        t.send(from, header(M_NOWORK, epoch).finish());
                    } else {
                        let mut w = header(M_WORK, epoch);
                        w.u32(give as u32);
                        for item in st.queue.drain(..give) {
                            item.encode(&mut w);
                        }
                        st.count += 1;
                        t.send(from, w.finish());
                    }
                }
                M_NOWORK => steal_out = false,
                M_TOKEN => {
                    let (Ok(q), Ok(b)) = (r.i64(), r.u8()) else {
                        continue;
                    };
                    token = Some(Token { q, black: b != 0 });
                }
                M_TERMINATE => terminated = true,
                M_REPORT if me == 0 => {
                    let mut v = Vec::with_capacity(Snapshot::KEYS.len());
                    for _ in 0..Snapshot::KEYS.len() {
                        v.push(r.u64().unwrap_or(0));
                    }
                    let mut active = Vec::new();
                    let k = r.u32().unwrap_or(0);
                    for _ in 0..k {
                        match r.bytes() {
                            Ok(b) => active.push(String::from_utf8_lossy(b).into_owned()),
                            Err(_) => break,
                        }
                    }
                    if from < reports.len() {
                        reports[from] = Some(RankReport {
                            counters: Snapshot::from_slice(&v),
                            active,
                        });
                    }
                }
                M_CONTROL => {
                    if let Ok(cmd) = decode_command(&mut r) {
                        if cmd == Command::Start {
                            gate_open = true;
                        }
                        ctl.apply(cmd);
                    }
                }
                _ => {}
            }
        }
        if terminated {
            break;
        }

        // Rank 0 decides control commands for everyone; signals act locally (scancel
        // signals every rank anyway).
        if me == 0 {
            while let Some(cmd) = monitor.poll_command() {
                for r in 1..n {
                    let mut w = header(M_CONTROL, epoch);
                    encode_command(&mut w, cmd);
                    t.send(r, w.finish());
                }
                if cmd == Command::Start {
                    gate_open = true;
                }
                ctl.apply(cmd);
            }
        }
        if gate_open {
            if let Some(seeds) = held_seeds.take() {
                st.queue.extend(seeds);
            }
        }
        if crate::signals::stop_requested() {
            ctl.request_stop();
        }
        if ctl.stopping() && !was_stopping {
            was_stopping = true;
            st.abandoned += st.queue.len() as u64;
            st.queue.clear();
            if let Some(s) = held_seeds.take() {
                st.abandoned += s.len() as u64;
            }
        }

        // Results of the I/O threads.
        while let Ok(m) = pool.results.try_recv() {
            progressed = true;
            st.handle_result(m, me, epoch, t, ctl);
        }

        // Feed the pool; st.pinned items first, they unblock other ranks' bookkeeping.
        pool.resize(&proc, ctl);
        let cap = ctl.threads() + 2;
        while st.inflight < cap {
            let next = st.pinned.pop_front().or_else(|| st.queue.pop_back());
            let Some(item) = next else { break };
            if let Some(tx) = &pool.tasks {
                let _ = tx.send(item);
            }
            st.inflight += 1;
            progressed = true;
        }

        // Ask for work when the st.queue ran dry.
        if n > 1
            && st.queue.is_empty()
            && st.pinned.is_empty()
            && !steal_out
            && !ctl.stopping()
            && st.inflight < ctl.threads()
        {
            let mut victim = rng.gen_range(0..n - 1);
            if victim >= me {
                victim += 1;
            }
            t.send(victim, header(M_STEAL, epoch).finish());
            steal_out = true;
        }

        let passive =
            st.queue.is_empty() && st.pinned.is_empty() && st.inflight == 0 && held_seeds.is_none();
        if passive {
            if me == 0 {
                if let Some(tok) = token.take() {
                    if !tok.black && !black && tok.q + st.count == 0 {
                        for r in 1..n {
                            t.send(r, header(M_TERMINATE, epoch).finish());
                        }
                        terminated = true;
                    } else {
                        black = false;
                        wave_out = false;
                    }
                }
                if !terminated && !wave_out {
                    black = false;
                    if n == 1 {
                        token = Some(Token { q: 0, black: false });
                    } else {
                        let mut w = header(M_TOKEN, epoch);
                        w.i64(0).u8(0);
                        t.send(1, w.finish());
                    }
                    wave_out = true;
                }
            } else if let Some(tok) = token.take() {
                let mut w = header(M_TOKEN, epoch);
                w.i64(tok.q + st.count).u8((tok.black || black) as u8);
                t.send((me + 1) % n, w.finish());
                black = false;
            }
        }

        counters
            .queued
            .store((st.queue.len() + st.pinned.len()) as u64, Ordering::Relaxed);
        counters
            .inflight
            .store(st.inflight as u64, Ordering::Relaxed);
        let now = Instant::now();
        if now >= next_report {
            next_report = now + opts.interval;
            let report = RankReport {
                counters: counters.snapshot(),
                active: pool
                    .active
                    .lock()
                    .map(|a| a.iter().map(|(_, s)| s.clone()).collect())
                    .unwrap_or_default(),
            };
            if me == 0 {
                reports[0] = Some(report);
                monitor.tick(&reports, ctl);
            } else {
                let mut w = header(M_REPORT, epoch);
                for v in report.counters.to_vec() {
                    w.u64(v);
                }
                w.u32(report.active.len() as u32);
                for a in &report.active {
                    w.bytes(a.as_bytes());
                }
                t.send(0, w.finish());
            }
        }

        if terminated {
            break;
        }
        if progressed {
            idle_sleep = Duration::from_micros(20);
        }
        if st.inflight > 0 {
            // Wake as soon as an I/O thread reports, but keep polling the transport.
            if let Ok(m) = pool.results.recv_timeout(Duration::from_micros(500)) {
                st.handle_result(m, me, epoch, t, ctl);
            }
        } else if !progressed {
            std::thread::sleep(idle_sleep);
            idle_sleep = (idle_sleep * 2).min(Duration::from_millis(2));
        }
    }

    pool.shutdown();
    counters.queued.store(0, Ordering::Relaxed);
    counters.inflight.store(0, Ordering::Relaxed);
    RunOutcome {
        stopped: ctl.stopping(),
        abandoned: st.abandoned,
    }
}

/// This rank's share of the work and its Safra bookkeeping.
struct Local<I> {
    /// Stealable items; the newest is processed first.
    queue: VecDeque<I>,
    /// Items that must run here (sent by another rank to this one).
    pinned: VecDeque<I>,
    /// Items handed to I/O threads and not yet done.
    inflight: usize,
    /// Safra's counter: work messages sent minus received.
    count: i64,
    /// Items dropped because of a stop.
    abandoned: u64,
}

impl<I> Default for Local<I> {
    fn default() -> Self {
        Local {
            queue: VecDeque::new(),
            pinned: VecDeque::new(),
            inflight: 0,
            count: 0,
            abandoned: 0,
        }
    }
}

impl<I: Wire> Local<I> {
    fn handle_result<T: Transport + ?Sized>(
        &mut self,
        m: PoolMsg<I>,
        me: Rank,
        epoch: u32,
        t: &mut T,
        ctl: &RunControl,
    ) {
        match m {
            PoolMsg::Local(_) if ctl.stopping() => self.abandoned += 1,
            PoolMsg::Local(item) => self.queue.push_back(item),
            PoolMsg::Pinned(rank, item) if rank == me => self.pinned.push_back(item),
            PoolMsg::Pinned(rank, item) => {
                let mut w = header(M_PINNED, epoch);
                w.u32(1);
                item.encode(&mut w);
                self.count += 1;
                t.send(rank, w.finish());
            }
            PoolMsg::Done => self.inflight -= 1,
        }
    }
}
