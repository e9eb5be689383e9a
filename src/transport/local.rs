//! N simulated ranks in one process. With a seed, delivery is delayed and
//! reordered at random, so tests can try many schedules deterministically.

use std::sync::{Arc, Barrier, Mutex};

use crossbeam_channel::{unbounded, Receiver, Sender};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Rank, Transport};

struct Shared {
    barrier: Barrier,
    reduce: Mutex<Vec<Vec<u64>>>,
    gather: Mutex<Vec<Vec<u8>>>,
}

pub struct LocalTransport {
    rank: Rank,
    peers: Vec<Sender<(Rank, Vec<u8>)>>,
    inbox: Receiver<(Rank, Vec<u8>)>,
    pending: Vec<(Rank, Vec<u8>)>,
    shared: Arc<Shared>,
    chaos: Option<SmallRng>,
}

/// Make `n` connected ranks. `seed`: randomise delivery order and delays.
pub fn network(n: usize, seed: Option<u64>) -> Vec<LocalTransport> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded()).unzip();
    let shared = Arc::new(Shared {
        barrier: Barrier::new(n),
        reduce: Mutex::new(vec![Vec::new(); n]),
        gather: Mutex::new(vec![Vec::new(); n]),
    });
    rxs.into_iter()
        .enumerate()
        .map(|(rank, inbox)| LocalTransport {
            rank,
            peers: txs.clone(),
            inbox,
            pending: Vec::new(),
            shared: shared.clone(),
            chaos: seed.map(|s| {
                SmallRng::seed_from_u64(s.wrapping_mul(1000003).wrapping_add(rank as u64))
            }),
        })
        .collect()
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
        self.peers.len()
    }
    fn send(&mut self, to: Rank, msg: Vec<u8>) {
        // A closed inbox means that rank's thread is gone (a test tearing down).
        let _ = self.peers[to].send((self.rank, msg));
    }
    fn try_recv(&mut self) -> Option<(Rank, Vec<u8>)> {
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
}
