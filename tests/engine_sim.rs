//! The work-stealing queue under simulated ranks: every item is processed exactly
//! once and the run terminates, under many seeded random delivery schedules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lmpi::engine::{self, Emitter, NoMonitor, Processor, RunControl, RunOpts};
use lmpi::stats::Counters;
use lmpi::transport::local;

#[derive(Debug, Clone, Copy)]
enum Shape {
    Chain(u64),
    Flat(u64),
    Wide { fanout: u64, depth: u64 },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Node {
    Tree { id: u64, depth: u64 },
    Batch { start: u64, len: u64 },
    Ack(u64),
}

struct Sim {
    shape: Shape,
    ranks: usize,
    seen: Mutex<Vec<u8>>,
    acks: AtomicU64,
    jitter: bool,
}

impl Sim {
    fn total(&self) -> u64 {
        match self.shape {
            Shape::Chain(n) => n,
            Shape::Flat(n) => n + 1,
            Shape::Wide { fanout, depth } => (0..=depth).map(|d| fanout.pow(d as u32)).sum(),
        }
    }
    fn mark(&self, id: u64) {
        let mut s = self.seen.lock().unwrap();
        s[id as usize] += 1;
    }
}

impl Processor for Sim {
    type Item = Node;
    fn process(&self, item: Node, out: &mut Emitter<'_, Node>) {
        if self.jitter {
            // Uneven item costs shake up who steals what.
            let spin = (item_key(&item) * 2654435761) % 7;
            if spin == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        match item {
            Node::Tree { id, depth } => {
                self.mark(id);
                out.send_to((id as usize) % self.ranks, Node::Ack(id));
                match self.shape {
                    Shape::Chain(n) => {
                        if id + 1 < n {
                            out.push(Node::Tree {
                                id: id + 1,
                                depth: depth + 1,
                            });
                        }
                    }
                    Shape::Flat(n) => {
                        let mut s = 1;
                        while s <= n {
                            let len = 1000.min(n - s + 1);
                            out.push(Node::Batch { start: s, len });
                            s += len;
                        }
                    }
                    Shape::Wide { fanout, depth: max } => {
                        if depth < max {
                            // Level-order numbering: children of id are id*f+1 ..= id*f+f.
                            for c in 1..=fanout {
                                out.push(Node::Tree {
                                    id: id * fanout + c,
                                    depth: depth + 1,
                                });
                            }
                        }
                    }
                }
            }
            Node::Batch { start, len } => {
                for id in start..start + len {
                    self.mark(id);
                }
            }
            Node::Ack(_) => {
                self.acks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    fn describe(&self, item: &Node) -> String {
        format!("{item:?}")
    }
}

fn item_key(n: &Node) -> u64 {
    match n {
        Node::Tree { id, .. } | Node::Ack(id) => *id,
        Node::Batch { start, .. } => *start,
    }
}

fn simulate(shape: Shape, ranks: usize, seed: Option<u64>, threads: usize) {
    let sim = Arc::new(Sim {
        shape,
        ranks,
        seen: Mutex::new(Vec::new()),
        acks: AtomicU64::new(0),
        jitter: seed.is_some(),
    });
    *sim.seen.lock().unwrap() = vec![0; sim.total() as usize];
    let nets = local::network(ranks, seed);
    let handles: Vec<_> = nets
        .into_iter()
        .map(|mut t| {
            let sim = sim.clone();
            std::thread::spawn(move || {
                let counters = Counters::default();
                let ctl = RunControl::new(threads, engine::THREADS_LIMIT);
                let opts = RunOpts {
                    epoch: 1,
                    interval: Duration::from_millis(50),
                    wait_for_start: false,
                    seed: seed.unwrap_or(0),
                };
                let seeds = if lmpi::transport::Transport::rank(&t) == 0 {
                    vec![Node::Tree { id: 0, depth: 0 }]
                } else {
                    vec![]
                };
                let out = engine::run(&mut t, sim, seeds, &counters, &ctl, &mut NoMonitor, &opts);
                assert!(!out.stopped);
                // After termination every rank still agrees on a collective.
                lmpi::transport::Transport::all_reduce_sum(&mut t, &[1])[0]
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("rank thread"), ranks as u64);
    }
    let seen = sim.seen.lock().unwrap();
    let bad: Vec<_> = seen
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 1)
        .take(5)
        .collect();
    assert!(
        bad.is_empty(),
        "{shape:?} ranks={ranks} seed={seed:?}: items not seen exactly once: {bad:?}"
    );
    let trees = match shape {
        Shape::Flat(_) => 1,
        _ => sim.total(),
    };
    assert_eq!(
        sim.acks.load(Ordering::Relaxed),
        trees,
        "pinned items lost or duplicated"
    );
}

#[test]
fn random_schedules_wide_tree() {
    for seed in 0..40u64 {
        let ranks = 1 + (seed as usize % 5);
        simulate(WIDE, ranks, Some(seed), 1 + (seed as usize % 3));
    }
}

/// 341 directories of a 4-way tree.
const WIDE: Shape = Shape::Wide {
    fanout: 4,
    depth: 4,
};

/// Enough ranks that termination waves pass through inner ranks of the
/// wave tree (4 children each) and reach depth 3.
#[test]
fn random_schedules_many_ranks() {
    for seed in 0..12u64 {
        let ranks = 6 + (seed as usize * 7 % 20);
        simulate(WIDE, ranks, Some(seed), 1 + (seed as usize % 2));
        simulate(Shape::Flat(2_000), ranks, Some(seed), 2);
    }
}

#[test]
fn random_schedules_chain_and_flat() {
    for seed in 0..12u64 {
        let ranks = 2 + (seed as usize % 3);
        simulate(Shape::Chain(300), ranks, Some(seed), 2);
        simulate(Shape::Flat(5_000), ranks, Some(seed), 2);
    }
}

#[test]
fn chain_10000_deep() {
    simulate(Shape::Chain(10_000), 4, None, 2);
}

#[test]
fn one_directory_of_200000() {
    simulate(Shape::Flat(200_000), 4, None, 4);
}

#[test]
fn wide_shallow() {
    simulate(
        Shape::Wide {
            fanout: 2000,
            depth: 1,
        },
        3,
        None,
        4,
    );
    simulate(
        Shape::Wide {
            fanout: 8,
            depth: 5,
        },
        4,
        Some(99),
        3,
    );
}
