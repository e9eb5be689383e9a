//! N simulated ranks in one process. With a seed, delivery is delayed and
//! reordered at random, so tests can try many schedules deterministically;
//! with a latency, a courier thread hands every message over that long after
//! it was sent (the balance benchmark's network hop). A delivered message
//! wakes the receiving rank's thread, so ranks need not poll.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Rank, Transport};

struct Shared {
    barrier: Barrier,
    reduce: Mutex<Vec<Vec<u64>>>,
    gather: Mutex<Vec<Vec<u8>>>,
    inboxes: Vec<Sender<(Rank, Vec<u8>)>>,
    /// Each rank's thread, known from its first receive: woken on delivery.
    receivers: Vec<OnceLock<Thread>>,
}

impl Shared {
    fn deliver(&self, from: Rank, to: Rank, msg: Vec<u8>) {
        // A closed inbox means that rank's thread is gone (a test tearing down).
        let _ = self.inboxes[to].send((from, msg));
        if let Some(t) = self.receivers[to].get() {
            t.unpark();
        }
    }
}

/// A message for the courier: when it is due, from, to, its bytes.
type Parcel = (Instant, u64, Rank, Rank, Vec<u8>);

pub struct LocalTransport {
    rank: Rank,
    inbox: Receiver<(Rank, Vec<u8>)>,
    pending: Vec<(Rank, Vec<u8>)>,
    registered: bool,
    shared: Arc<Shared>,
    chaos: Option<SmallRng>,
    /// With a latency: the courier's mailbox, and a sequence number that
    /// keeps one sender's messages in order.
    courier: Option<(Sender<Parcel>, Duration, u64)>,
}

/// Make `n` connected ranks. `seed`: randomise delivery order and delays.
pub fn network(n: usize, seed: Option<u64>) -> Vec<LocalTransport> {
    network_with_latency(n, seed, Duration::ZERO)
}

/// As `network`, and no message can be received before `latency` has
/// passed since it was sent.
pub fn network_with_latency(n: usize, seed: Option<u64>, latency: Duration) -> Vec<LocalTransport> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded()).unzip();
    let shared = Arc::new(Shared {
        barrier: Barrier::new(n),
        reduce: Mutex::new(vec![Vec::new(); n]),
        gather: Mutex::new(vec![Vec::new(); n]),
        inboxes: txs,
        receivers: (0..n).map(|_| OnceLock::new()).collect(),
    });
    let courier = (!latency.is_zero()).then(|| start_courier(shared.clone()));
    rxs.into_iter()
        .enumerate()
        .map(|(rank, inbox)| LocalTransport {
            rank,
            inbox,
            pending: Vec::new(),
            registered: false,
            shared: shared.clone(),
            chaos: seed.map(|s| {
                SmallRng::seed_from_u64(s.wrapping_mul(1000003).wrapping_add(rank as u64))
            }),
            courier: courier.clone().map(|c| (c, latency, 0)),
        })
        .collect()
}

/// A thread that delivers each parcel when it is due; it ends when every
/// rank has dropped its transport and nothing is left to deliver.
fn start_courier(shared: Arc<Shared>) -> Sender<Parcel> {
    let (tx, rx) = unbounded::<Parcel>();
    std::thread::spawn(move || {
        let mut due: BinaryHeap<Reverse<Parcel>> = BinaryHeap::new();
        loop {
            let now = Instant::now();
            while due.peek().is_some_and(|p| p.0 .0 <= now) {
                if let Some(Reverse((_, _, from, to, msg))) = due.pop() {
                    shared.deliver(from, to, msg);
                }
            }
            let wait = due.peek().map_or(Duration::from_secs(1), |p| p.0 .0 - now);
            match rx.recv_timeout(wait) {
                Ok(p) => due.push(Reverse(p)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if due.is_empty() => return,
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
        }
    });
    tx
}

impl LocalTransport {
    fn reduce(&mut self, v: &[u64], f: fn(u64, u64) -> u64) -> Vec<u64> {
        self.shared.reduce.lock().expect("reduce lock")[self.rank] = v.to_vec();
        self.shared.barrier.wait();
        let out = {
            let all = self.shared.reduce.lock().expect("reduce lock");
            let mut acc = all[0].clone();
            for other in &all[1..] {
                for (a, b) in acc.iter_mut().zip(other) {
                    *a = f(*a, *b);
                }
            }
            acc
        };
        // Second barrier: nobody may overwrite its slot before all have read.
        self.shared.barrier.wait();
        out
    }
}

impl Transport for LocalTransport {
    fn rank(&self) -> Rank {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.inboxes.len()
    }
    fn send(&mut self, to: Rank, msg: Vec<u8>) {
        match &mut self.courier {
            Some((courier, latency, seq)) => {
                *seq += 1;
                let seq = *seq * self.shared.inboxes.len() as u64 + self.rank as u64;
                let _ = courier.send((Instant::now() + *latency, seq, self.rank, to, msg));
            }
            None => self.shared.deliver(self.rank, to, msg),
        }
    }
    fn try_recv(&mut self) -> Option<(Rank, Vec<u8>)> {
        if !self.registered {
            self.registered = true;
            let _ = self.shared.receivers[self.rank].set(std::thread::current());
        }
        self.pending.extend(self.inbox.try_iter());
        if self.pending.is_empty() {
            return None;
        }
        match &mut self.chaos {
            None => Some(self.pending.remove(0)),
            Some(rng) => {
                if rng.gen_bool(0.3) {
                    return None;
                }
                let i = rng.gen_range(0..self.pending.len());
                Some(self.pending.swap_remove(i))
            }
        }
    }
    fn wakes_receiver(&self) -> bool {
        true
    }
    fn barrier(&mut self) {
        self.shared.barrier.wait();
    }
    fn all_reduce_sum(&mut self, v: &[u64]) -> Vec<u64> {
        self.reduce(v, |a, b| a + b)
    }
    fn all_reduce_max(&mut self, v: &[u64]) -> Vec<u64> {
        self.reduce(v, u64::max)
    }
    fn gather(&mut self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        self.shared.gather.lock().expect("gather lock")[self.rank] = mine;
        self.shared.barrier.wait();
        let n = self.size();
        let out = if self.rank == 0 {
            let mut slots = self.shared.gather.lock().expect("gather lock");
            std::mem::replace(&mut *slots, vec![Vec::new(); n])
        } else {
            Vec::new()
        };
        // Second barrier: rank 0 has taken them before anyone gathers again.
        self.shared.barrier.wait();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_brings_every_rank_in_order_to_rank_zero_repeatedly() {
        let handles: Vec<_> = network(4, Some(7))
            .into_iter()
            .map(|mut t| {
                std::thread::spawn(move || {
                    // A stray message in flight must not be taken for a part.
                    let peer = (t.rank() + 1) % t.size();
                    t.send(peer, b"work".to_vec());
                    let first = t.gather(vec![t.rank() as u8; t.rank()]);
                    let second = t.gather(vec![9; 1]);
                    (t.rank(), first, second)
                })
            })
            .collect();
        for h in handles {
            let (rank, first, second) = h.join().expect("rank thread");
            if rank == 0 {
                let want: Vec<Vec<u8>> = (0..4u8).map(|r| vec![r; r as usize]).collect();
                assert_eq!(first, want);
                assert_eq!(second, vec![vec![9u8]; 4]);
            } else {
                assert!(first.is_empty() && second.is_empty());
            }
        }
    }

    #[test]
    fn with_latency_a_message_arrives_no_sooner_and_in_order() {
        let mut net = network_with_latency(2, None, Duration::from_millis(30));
        let mut b = net.pop().expect("rank 1");
        let mut a = net.pop().expect("rank 0");
        assert_eq!(b.try_recv(), None); // registers rank 1's thread
        let sent = Instant::now();
        a.send(1, vec![1]);
        a.send(1, vec![2]);
        assert_eq!(b.try_recv(), None);
        // Parked until the courier delivers (and unparks this thread).
        let mut got = Vec::new();
        while got.len() < 2 && sent.elapsed() < Duration::from_secs(5) {
            std::thread::park_timeout(Duration::from_millis(100));
            got.extend(std::iter::from_fn(|| b.try_recv()).map(|(_, m)| m[0]));
        }
        assert!(sent.elapsed() >= Duration::from_millis(30));
        assert_eq!(got, vec![1, 2]);
    }
}
