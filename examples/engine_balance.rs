//! The engine's balance at the scale it exists for: the real engine (work
//! stealing, Safra termination) on N simulated ranks of the in-process
//! transport, where handling an entry sleeps like a metadata round trip and
//! every message is delayed like a network hop. Sleeping threads cost no CPU,
//! so hundreds of ranks fit on a 2-core machine.
//!
//! Usage: engine_balance [RANKS...] [--threads N] [--trees a,b] [--seconds S]
//! Prints one line per (ranks, tree): efficiency = (total sleep / (ranks ×
//! threads)) / wall time, steal requests and unasked pushes of work per
//! item. The wall time ends when rank 0 has found the phase over, plus one
//! hop for its word to reach the others. What this host then takes until
//! every rank thread has returned (256 rank threads waking and 512 I/O
//! threads exiting on 2 cores, where each cluster node wakes 1 and joins a
//! few) is printed apart as host_s, with the efficiency it leaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lmpi::engine::{self, Emitter, NoMonitor, Processor, RunControl, RunOpts};
use lmpi::stats::Counters;
use lmpi::transport::{local, Transport};
use serde::{Deserialize, Serialize};

/// One metadata round trip per entry (stat, create, chown, utimens folded
/// into one), as on a shared Lustre MDS.
const PER_ENTRY: Duration = Duration::from_micros(200);
/// One readdir round trip returns this many names.
const NAMES_PER_PAGE: u64 = 1000;
/// A network hop between ranks.
const HOP: Duration = Duration::from_micros(20);

/// A balanced subtree: `fanout` subdirectories per directory down to
/// `depth`, `files` files in every directory.
#[derive(Debug, Clone, Copy)]
struct Shape {
    fanout: u64,
    depth: u32,
    files: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum Item {
    /// The skewed tree's root: one heavy first-level directory, nine light.
    SkewRoot,
    Dir {
        shape: u8,
        level: u32,
    },
    Files(u64),
}

struct Sim {
    shapes: Vec<Shape>,
    batch: u64,
    slept_us: AtomicU64,
    items: AtomicU64,
}

impl Sim {
    fn sleep(&self, d: Duration) {
        self.slept_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        std::thread::sleep(d);
    }

    /// List a directory page by page, emitting full batches of files and
    /// the subdirectories as they are read (as the copy pass does).
    fn dir(&self, shape: u8, level: u32, out: &mut Emitter<'_, Item>) {
        let s = self.shapes[shape as usize];
        self.sleep(PER_ENTRY);
        let subdirs = if level < s.depth { s.fanout } else { 0 };
        let names = subdirs + s.files;
        let (mut listed, mut pending) = (0, 0);
        while listed < names {
            let page = NAMES_PER_PAGE.min(names - listed);
            self.sleep(PER_ENTRY);
            let dirs_here = subdirs.saturating_sub(listed).min(page);
            for _ in 0..dirs_here {
                out.push(Item::Dir {
                    shape,
                    level: level + 1,
                });
            }
            pending += page - dirs_here;
            while pending >= self.batch {
                out.push(Item::Files(self.batch));
                pending -= self.batch;
            }
            listed += page;
        }
        if pending > 0 {
            out.push(Item::Files(pending));
        }
    }
}

impl Processor for Sim {
    type Item = Item;
    fn process(&self, item: Item, out: &mut Emitter<'_, Item>) {
        self.items.fetch_add(1, Ordering::Relaxed);
        match item {
            Item::SkewRoot => {
                self.sleep(PER_ENTRY);
                out.push(Item::Dir { shape: 0, level: 1 });
                for _ in 0..9 {
                    out.push(Item::Dir { shape: 1, level: 1 });
                }
            }
            Item::Dir { shape, level } => self.dir(shape, level, out),
            Item::Files(n) => self.sleep(PER_ENTRY * n as u32),
        }
    }
    fn is_branch(&self, item: &Item) -> bool {
        !matches!(item, Item::Files(_))
    }
    fn describe(&self, item: &Item) -> String {
        format!("{item:?}")
    }
}

/// Directories in a balanced subtree of `fanout` and `depth` (root at level 0).
fn dirs_in(fanout: u64, depth: u32) -> u64 {
    (0..=depth).map(|l| fanout.pow(l)).sum()
}

/// The tree, sized so that ideal wall time is about `seconds` where it can
/// be (the million-entry directory is fixed by definition), and its seed.
fn tree(name: &str, workers: u64, seconds: f64) -> (Vec<Shape>, Item) {
    let entries = (seconds * workers as f64 / PER_ENTRY.as_secs_f64()) as u64;
    let root = Item::Dir { shape: 0, level: 0 };
    match name {
        "balanced" => {
            let files = entries / dirs_in(10, 4);
            (
                vec![Shape {
                    fanout: 10,
                    depth: 4,
                    files,
                }],
                root,
            )
        }
        "bigdir" => (
            vec![Shape {
                fanout: 0,
                depth: 0,
                files: 1_000_000,
            }],
            root,
        ),
        "chain" => {
            let files = entries / 10_000;
            (
                vec![Shape {
                    fanout: 1,
                    depth: 9_999,
                    files,
                }],
                root,
            )
        }
        "skewed" => {
            // One first-level directory holds 90% of the files.
            let per = dirs_in(10, 3);
            let heavy = Shape {
                fanout: 10,
                depth: 4,
                files: entries * 9 / 10 / per,
            };
            let light = Shape {
                fanout: 10,
                depth: 4,
                files: entries / 10 / 9 / per,
            };
            (vec![heavy, light], Item::SkewRoot)
        }
        other => panic!("unknown tree {other}: balanced, bigdir, chain or skewed"),
    }
}

struct Outcome {
    /// Until rank 0 found the phase over, plus one hop.
    wall: Duration,
    /// Then until every rank thread had returned.
    host: Duration,
    slept: Duration,
    items: u64,
    steals: u64,
    shares: u64,
}

fn simulate(ranks: usize, threads: usize, batch: u64, shapes: Vec<Shape>, seed: Item) -> Outcome {
    let sim = Arc::new(Sim {
        shapes,
        batch,
        slept_us: AtomicU64::new(0),
        items: AtomicU64::new(0),
    });
    let start = Arc::new(Barrier::new(ranks + 1));
    let mut seed = Some(seed);
    let handles: Vec<_> = local::network_with_latency(ranks, None, HOP)
        .into_iter()
        .map(|mut t| {
            let (sim, start) = (sim.clone(), start.clone());
            let seeds: Vec<Item> = if t.rank() == 0 {
                seed.take().into_iter().collect()
            } else {
                vec![]
            };
            std::thread::spawn(move || {
                let counters = Counters::default();
                let ctl = RunControl::new(threads, threads);
                let opts = RunOpts {
                    epoch: 1,
                    interval: Duration::from_secs(1),
                    wait_for_start: false,
                    seed: 42,
                };
                start.wait();
                engine::run(&mut t, sim, seeds, &counters, &ctl, &mut NoMonitor, &opts)
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let runs: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("rank thread"))
        .collect();
    let joined = t0.elapsed();
    // Rank 0 decides first; everyone else learns of it from a message.
    let decided = runs.iter().map(|r| r.settled).min().unwrap_or(t0) - t0;
    let wall = (decided + HOP).min(joined);
    Outcome {
        wall,
        host: joined - wall,
        slept: Duration::from_micros(sim.slept_us.load(Ordering::Relaxed)),
        items: sim.items.load(Ordering::Relaxed),
        steals: runs.iter().map(|r| r.steals).sum(),
        shares: runs.iter().map(|r| r.shares).sum(),
    }
}

struct Args {
    ranks: Vec<usize>,
    threads: usize,
    batch: u64,
    trees: Vec<String>,
    seconds: f64,
}

fn args() -> Args {
    let mut a = Args {
        ranks: vec![],
        threads: 4,
        batch: 100,
        trees: ["balanced", "bigdir", "chain", "skewed"]
            .map(String::from)
            .to_vec(),
        seconds: 3.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().expect("a value after the flag");
        match arg.as_str() {
            "--threads" => a.threads = val().parse().expect("--threads N"),
            "--batch" => a.batch = val().parse().expect("--batch N"),
            "--seconds" => a.seconds = val().parse().expect("--seconds S"),
            "--trees" => a.trees = val().split(',').map(String::from).collect(),
            n => a.ranks.push(n.parse().expect("a rank count")),
        }
    }
    if a.ranks.is_empty() {
        a.ranks = vec![16, 64, 256];
    }
    a
}

fn main() {
    let a = args();
    println!(
        "entry {} us, readdir page {} names, hop {} us, {} threads/rank, batch {}",
        PER_ENTRY.as_micros(),
        NAMES_PER_PAGE,
        HOP.as_micros(),
        a.threads,
        a.batch
    );
    println!(
        "ranks tree     items     wall_s  ideal_s efficiency steals/item shares/item  host_s with_host"
    );
    for &ranks in &a.ranks {
        for name in &a.trees {
            let workers = (ranks * a.threads) as u64;
            let (shapes, seed) = tree(name, workers, a.seconds);
            let o = simulate(ranks, a.threads, a.batch, shapes, seed);
            let ideal = o.slept.as_secs_f64() / workers as f64;
            println!(
                "{ranks:>5} {name:<8} {:>9} {:>8.2} {:>8.2} {:>10.2} {:>11.3} {:>11.3} {:>7.3} {:>9.2}",
                o.items,
                o.wall.as_secs_f64(),
                ideal,
                ideal / o.wall.as_secs_f64(),
                o.steals as f64 / o.items.max(1) as f64,
                o.shares as f64 / o.items.max(1) as f64,
                o.host.as_secs_f64(),
                ideal / (o.wall + o.host).as_secs_f64()
            );
        }
    }
}
