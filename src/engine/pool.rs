//! A rank's pool of I/O threads: they take items from one channel, run the
//! pass on them, and hand new items back through the `Emitter`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::{Processor, RunControl};
use crate::transport::Rank;

pub(crate) enum PoolMsg<I> {
    Local(I),
    Pinned(Rank, I),
    Done,
}

/// How an I/O thread hands back new work.
pub struct Emitter<'a, I> {
    sink: &'a mut dyn FnMut(PoolMsg<I>),
    ctl: &'a RunControl,
}

impl<'a, I> Emitter<'a, I> {
    /// New work for any rank (it may be stolen).
    pub fn push(&mut self, item: I) {
        (self.sink)(PoolMsg::Local(item));
    }
    /// Work that must run on `rank` (e.g. the owner of a hardlink group).
    pub fn send_to(&mut self, rank: Rank, item: I) {
        (self.sink)(PoolMsg::Pinned(rank, item));
    }
    /// True once a graceful stop was requested: finish or abandon, don't start more.
    pub fn stopping(&self) -> bool {
        self.ctl.stopping()
    }

    /// Run `body` with an emitter of another pass's items, wrapped by `wrap`
    /// into ours: how a pass made of other passes (the final pass) reuses them.
    pub fn mapped<J, R>(
        &mut self,
        wrap: impl Fn(J) -> I,
        body: impl FnOnce(&mut Emitter<'_, J>) -> R,
    ) -> R {
        let ctl = self.ctl;
        let sink = &mut *self.sink;
        let mut inner = |m: PoolMsg<J>| {
            sink(match m {
                PoolMsg::Local(j) => PoolMsg::Local(wrap(j)),
                PoolMsg::Pinned(r, j) => PoolMsg::Pinned(r, wrap(j)),
                PoolMsg::Done => PoolMsg::Done,
            })
        };
        body(&mut Emitter {
            sink: &mut inner,
            ctl,
        })
    }
}

/// Items waiting for an I/O thread. A mutex and a condition variable, not a
/// channel: idle threads sleep in the kernel instead of spinning through
/// `sched_yield` (a crossbeam receiver's backoff cost about one syscall per
/// file copied).
struct Tasks<I> {
    queue: Mutex<(VecDeque<I>, bool)>,
    ready: Condvar,
}

enum Pop<I> {
    Item(I),
    Idle,
    Closed,
}

impl<I> Tasks<I> {
    fn push(&self, item: I, first: bool) {
        if let Ok(mut q) = self.queue.lock() {
            if first {
                q.0.push_front(item);
            } else {
                q.0.push_back(item);
            }
        }
        self.ready.notify_one();
    }

    fn close(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.1 = true;
        }
        self.ready.notify_all();
    }

    /// The next item, or Idle after `wait` (so the caller can look at its
    /// switches), or Closed once the pool is shut down and drained.
    fn pop(&self, wait: Duration) -> Pop<I> {
        let Ok(mut q) = self.queue.lock() else {
            return Pop::Closed;
        };
        if q.0.is_empty() && !q.1 {
            q = match self.ready.wait_timeout(q, wait) {
                Ok((q, _)) => q,
                Err(_) => return Pop::Closed,
            };
        }
        match q.0.pop_front() {
            Some(item) => Pop::Item(item),
            None if q.1 => Pop::Closed,
            None => Pop::Idle,
        }
    }
}

pub(crate) struct Pool<I> {
    tasks: Arc<Tasks<I>>,
    pub results: Receiver<PoolMsg<I>>,
    result_tx: Sender<PoolMsg<I>>,
    /// The rank's main thread, woken (unparked) when a result arrives.
    waker: Thread,
    alive: Arc<AtomicUsize>,
    handles: Vec<JoinHandle<()>>,
    pub active: Arc<Mutex<Vec<(usize, String)>>>,
    next_id: usize,
}

impl<I: Send + 'static> Pool<I> {
    /// Call on the thread that will wait for results.
    pub fn new() -> Self {
        let (result_tx, results) = unbounded();
        Pool {
            tasks: Arc::new(Tasks {
                queue: Mutex::new((VecDeque::new(), false)),
                ready: Condvar::new(),
            }),
            results,
            result_tx,
            waker: std::thread::current(),
            alive: Arc::new(AtomicUsize::new(0)),
            handles: Vec::new(),
            active: Arc::new(Mutex::new(Vec::new())),
            next_id: 0,
        }
    }

    /// `first`: ahead of what is already waiting (a branch, which makes
    /// more work, must not wait behind prefetched leaves).
    pub fn submit(&self, item: I, first: bool) {
        self.tasks.push(item, first);
    }

    /// Sleep until a result arrives or `at_most` passes.
    pub fn wait_for_result(&self, at_most: Duration) {
        if self.results.is_empty() {
            std::thread::park_timeout(at_most);
        }
    }

    /// Grow to the wanted size; shrinking happens in the workers themselves.
    pub fn resize<P: Processor<Item = I>>(&mut self, proc: &Arc<P>, ctl: &Arc<RunControl>) {
        while self.alive.load(Ordering::SeqCst) < ctl.threads() {
            self.alive.fetch_add(1, Ordering::SeqCst);
            let id = self.next_id;
            self.next_id += 1;
            let ends = Ends {
                tasks: self.tasks.clone(),
                results: self.result_tx.clone(),
                waker: self.waker.clone(),
                alive: self.alive.clone(),
                active: self.active.clone(),
            };
            let (proc, ctl) = (proc.clone(), ctl.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("lmpi-io-{id}"))
                .spawn(move || worker(id, &*proc, &ctl, &ends));
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

    pub fn shutdown(&mut self) {
        self.tasks.close();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// What an I/O thread holds of its pool.
struct Ends<I> {
    tasks: Arc<Tasks<I>>,
    results: Sender<PoolMsg<I>>,
    waker: Thread,
    alive: Arc<AtomicUsize>,
    active: Arc<Mutex<Vec<(usize, String)>>>,
}

/// Shrink: leave while more threads are alive than wanted.
fn should_leave(alive: &AtomicUsize, ctl: &RunControl) -> bool {
    let mut cur = alive.load(Ordering::SeqCst);
    while cur > ctl.threads() {
        match alive.compare_exchange(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}

fn worker<P: Processor>(id: usize, proc: &P, ctl: &RunControl, ends: &Ends<P::Item>) {
    loop {
        if should_leave(&ends.alive, ctl) {
            return;
        }
        let item = match ends.tasks.pop(Duration::from_millis(50)) {
            Pop::Item(item) => item,
            Pop::Idle => continue,
            Pop::Closed => {
                ends.alive.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        let mut next = Some(item);
        while let Some(item) = next.take() {
            next = run_one(id, proc, ctl, ends, item);
        }
        let _ = ends.results.send(PoolMsg::Done);
        ends.waker.unpark();
    }
}

/// Run one item; the last branch it made is kept and returned, to run next
/// on this thread (depth-first, as ripgrep's walker pops its own stack): a
/// deep tree is walked without a round trip through the rank's loop per
/// level. Everything else goes back to the loop, where it can be stolen.
fn run_one<P: Processor>(
    id: usize,
    proc: &P,
    ctl: &RunControl,
    ends: &Ends<P::Item>,
    item: P::Item,
) -> Option<P::Item> {
    let label = proc.describe(&item);
    if let Ok(mut a) = ends.active.lock() {
        a.push((id, label));
    }
    let mut kept = None;
    let mut send = |m| match m {
        PoolMsg::Local(i) if proc.is_branch(&i) => {
            if let Some(prev) = kept.replace(i) {
                let _ = ends.results.send(PoolMsg::Local(prev));
            }
        }
        m => {
            let _ = ends.results.send(m);
        }
    };
    proc.process(
        item,
        &mut Emitter {
            sink: &mut send,
            ctl,
        },
    );
    if let Ok(mut a) = ends.active.lock() {
        a.retain(|(i, _)| *i != id);
    }
    if ctl.stopping() {
        // The loop counts it as abandoned.
        if let Some(i) = kept.take() {
            let _ = ends.results.send(PoolMsg::Local(i));
        }
    }
    if kept.is_some() {
        // Let the loop see (and offer thieves) what this item made meanwhile.
        ends.waker.unpark();
    }
    kept
}
