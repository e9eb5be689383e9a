//! A rank's pool of I/O threads: they take items from one channel, run the
//! pass on them, and hand new items back through the `Emitter`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

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

pub(crate) struct Pool<I> {
    pub tasks: Option<Sender<I>>,
    task_rx: Receiver<I>,
    pub results: Receiver<PoolMsg<I>>,
    result_tx: Sender<PoolMsg<I>>,
    alive: Arc<AtomicUsize>,
    handles: Vec<JoinHandle<()>>,
    pub active: Arc<Mutex<Vec<(usize, String)>>>,
    next_id: usize,
}

impl<I: Send + 'static> Pool<I> {
    pub fn new() -> Self {
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
    pub fn resize<P: Processor<Item = I>>(&mut self, proc: &Arc<P>, ctl: &Arc<RunControl>) {
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

    pub fn shutdown(&mut self) {
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
        let mut send = |m| {
            let _ = tx.send(m);
        };
        proc.process(
            item,
            &mut Emitter {
                sink: &mut send,
                ctl,
            },
        );
        if let Ok(mut a) = active.lock() {
            a.retain(|(i, _)| *i != id);
        }
        let _ = tx.send(PoolMsg::Done);
    }
}
