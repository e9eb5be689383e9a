//! Dijkstra–Safra termination detection, with its waves run over a tree of
//! the ranks instead of round a ring. Each rank counts work messages sent
//! minus received and turns black when it receives work. Rank 0, passive,
//! starts a wave: a `Probe` goes down the tree (rank r's children are
//! `FANOUT * r + 1 ..= FANOUT * r + FANOUT`) at once, and each rank, once
//! all its children have answered and it is passive itself, answers its
//! parent with the sum of its subtree's counts and whether any of them was
//! black, and turns white. The phase is over when rank 0 sees a wave come
//! back white with the counts summing to zero while it is white and passive.
//!
//! Safra's proof holds for any wave in which every rank contributes once
//! while passive (it splits the ranks into those that have contributed and
//! those that have not; the ring's order plays no part). A ring costs N
//! hops per wave, paid after the last work item ends; the tree costs
//! 2 × log_FANOUT(N): at 256 ranks, 8 hops instead of 256.

use serde::{Deserialize, Serialize};

use crate::transport::Rank;

/// Children per rank in the wave tree.
const FANOUT: usize = 4;

/// A subtree's answer to a wave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Work messages sent minus received, summed over the subtree.
    pub q: i64,
    /// Some rank of the subtree received work since its last answer.
    pub black: bool,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.q += other.q;
        self.black |= other.black;
    }
}

/// What a rank must do about termination.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Nothing,
    /// Send a probe to each of these ranks (the children): a wave begins.
    Probe(Vec<Rank>),
    /// Answer the parent.
    Answer(Rank, Tally),
    Terminate,
}

/// This rank's part of the current wave, until it has answered.
#[derive(Debug)]
struct Wave {
    /// Children that have not answered yet.
    waiting: usize,
    tally: Tally,
}

#[derive(Debug, Default)]
pub(crate) struct Safra {
    count: i64,
    black: bool,
    wave: Option<Wave>,
}

fn children(me: Rank, n: usize) -> Vec<Rank> {
    let first = FANOUT * me + 1;
    (first..(first + FANOUT).min(n)).collect()
}

fn parent(me: Rank) -> Rank {
    (me - 1) / FANOUT
}

impl Safra {
    pub fn sent_work(&mut self) {
        self.count += 1;
    }

    pub fn got_work(&mut self) {
        self.count -= 1;
        self.black = true;
    }

    /// A wave reached this rank (never rank 0): it goes on down at once;
    /// this rank answers later, when passive.
    pub fn got_probe(&mut self, me: Rank, n: usize) -> Step {
        let kids = children(me, n);
        self.wave = Some(Wave {
            waiting: kids.len(),
            tally: Tally::default(),
        });
        if kids.is_empty() {
            Step::Nothing
        } else {
            Step::Probe(kids)
        }
    }

    pub fn got_answer(&mut self, t: Tally) {
        // Answers come only from children, once per wave, before this
        // rank answers: anything else is a bug in the protocol.
        debug_assert!(self.wave.as_ref().is_some_and(|w| w.waiting > 0));
        if let Some(w) = &mut self.wave {
            w.waiting = w.waiting.saturating_sub(1);
            w.tally.add(t);
        }
    }

    /// Called whenever this rank is passive.
    pub fn when_passive(&mut self, me: Rank, n: usize) -> Step {
        let Some(w) = &self.wave else {
            return if me == 0 {
                self.start(n)
            } else {
                Step::Nothing
            };
        };
        if w.waiting > 0 {
            return Step::Nothing;
        }
        let mut tally = w.tally;
        tally.add(Tally {
            q: self.count,
            black: self.black,
        });
        self.black = false;
        self.wave = None;
        if me != 0 {
            return Step::Answer(parent(me), tally);
        }
        if !tally.black && tally.q == 0 {
            return Step::Terminate;
        }
        self.start(n)
    }

    /// Rank 0 begins a wave.
    fn start(&mut self, n: usize) -> Step {
        let kids = children(0, n);
        self.wave = Some(Wave {
            waiting: kids.len(),
            tally: Tally::default(),
        });
        if kids.is_empty() {
            // Alone: the wave is over at the next passive look.
            return Step::Nothing;
        }
        Step::Probe(kids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rank 0 starts a wave; `finish` runs it.
    fn wave(r: &mut [Safra]) -> Step {
        let Step::Probe(kids) = r[0].when_passive(0, r.len()) else {
            panic!("rank 0 should start a wave")
        };
        finish(r, kids)
    }

    /// Deliver every probe of the wave rank 0 sent to `kids`, let each rank
    /// answer as soon as it can (all passive), deepest first; rank 0's verdict.
    fn finish(r: &mut [Safra], mut frontier: Vec<Rank>) -> Step {
        let n = r.len();
        let mut order = Vec::new();
        while let Some(k) = frontier.pop() {
            order.push(k);
            if let Step::Probe(more) = r[k].got_probe(k, n) {
                frontier.extend(more);
            }
        }
        order.sort_unstable_by(|a, b| b.cmp(a));
        for k in order {
            let Step::Answer(p, t) = r[k].when_passive(k, n) else {
                panic!("rank {k} should answer")
            };
            assert_eq!(p, parent(k));
            r[p].got_answer(t);
        }
        r[0].when_passive(0, n)
    }

    #[test]
    fn the_tree_covers_every_rank_once() {
        for n in [1, 2, 5, 17, 256] {
            let mut seen = vec![0; n];
            seen[0] = 1;
            for me in 0..n {
                for k in children(me, n) {
                    seen[k] += 1;
                    assert_eq!(parent(k), me);
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{n}: {seen:?}");
        }
    }

    #[test]
    fn a_quiet_job_terminates_after_one_clean_wave() {
        let mut r: Vec<Safra> = (0..23).map(|_| Safra::default()).collect();
        assert_eq!(wave(&mut r), Step::Terminate);
    }

    #[test]
    fn a_rank_answers_only_after_its_children() {
        let mut r: Vec<Safra> = (0..6).map(|_| Safra::default()).collect();
        let Step::Probe(k) = r[0].when_passive(0, 6) else {
            panic!()
        };
        assert_eq!(k, vec![1, 2, 3, 4]);
        assert_eq!(r[0].when_passive(0, 6), Step::Nothing, "one wave at a time");
        assert_eq!(r[1].got_probe(1, 6), Step::Probe(vec![5]));
        assert_eq!(r[1].when_passive(1, 6), Step::Nothing);
        assert_eq!(r[5].got_probe(5, 6), Step::Nothing);
        let Step::Answer(1, t) = r[5].when_passive(5, 6) else {
            panic!()
        };
        r[1].got_answer(t);
        assert!(matches!(r[1].when_passive(1, 6), Step::Answer(0, _)));
    }

    #[test]
    fn work_in_flight_or_a_black_rank_forces_another_wave() {
        let mut r: Vec<Safra> = (0..9).map(|_| Safra::default()).collect();
        r[7].sent_work(); // not received yet: the counts sum to 1
        assert!(matches!(wave(&mut r), Step::Probe(_)), "must not terminate");
        r[2].got_work(); // now it arrives: counts sum to 0, but rank 2 is black
        let Step::Probe(_) = finish(&mut r, children(0, 9)) else {
            panic!("black wave")
        };
        assert_eq!(
            finish(&mut r, children(0, 9)),
            Step::Terminate,
            "the next wave is clean"
        );
    }

    #[test]
    fn work_received_by_a_rank_that_answered_is_seen_next_wave() {
        // Rank 3 answers white, then rank 4 (not yet answered) sends it work
        // and goes passive: q counts the send but not the receipt.
        let n = 5;
        let mut r: Vec<Safra> = (0..n).map(|_| Safra::default()).collect();
        let Step::Probe(kids) = r[0].when_passive(0, n) else {
            panic!()
        };
        for &k in &kids {
            r[k].got_probe(k, n);
        }
        let Step::Answer(0, t3) = r[3].when_passive(3, n) else {
            panic!()
        };
        r[0].got_answer(t3);
        r[4].sent_work();
        r[3].got_work();
        for k in [1, 2, 4] {
            let Step::Answer(0, t) = r[k].when_passive(k, n) else {
                panic!()
            };
            r[0].got_answer(t);
        }
        assert!(matches!(r[0].when_passive(0, n), Step::Probe(_)), "q is 1");
        assert!(
            matches!(finish(&mut r, children(0, n)), Step::Probe(_)),
            "3 is black"
        );
        assert_eq!(finish(&mut r, children(0, n)), Step::Terminate);
    }

    #[test]
    fn alone_terminates_on_the_second_look() {
        let mut s = Safra::default();
        assert_eq!(s.when_passive(0, 1), Step::Nothing);
        assert_eq!(s.when_passive(0, 1), Step::Terminate);
    }
}
