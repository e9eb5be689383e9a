//! A rank's stealable work: branches (items that make more work, such as
//! directories) and leaves (such as batches of files), each newest first.
//!
//! A branch runs before the leaves while few leaves wait: the walk keeps
//! ahead of the copying, so idle threads and ranks find work sooner and a
//! deep narrow tree is not held up behind its own files. Past the high-water
//! mark leaves go first, so a rank's memory stays bounded whatever the tree.

use std::collections::VecDeque;

pub(crate) struct WorkQueue<I> {
    branches: VecDeque<I>,
    leaves: VecDeque<I>,
}

impl<I> WorkQueue<I> {
    pub fn new() -> Self {
        WorkQueue {
            branches: VecDeque::new(),
            leaves: VecDeque::new(),
        }
    }

    pub fn push(&mut self, item: I, branch: bool) {
        if branch {
            self.branches.push_back(item);
        } else {
            self.leaves.push_back(item);
        }
    }

    pub fn len(&self) -> usize {
        self.branches.len() + self.leaves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop everything (a stop); how many items were dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        self.branches.clear();
        self.leaves.clear();
        n
    }

    /// The next item to run, and whether it is a branch.
    pub fn next(&mut self, leaf_high_water: usize) -> Option<(I, bool)> {
        let leaves_first = self.leaves.len() > leaf_high_water;
        if !leaves_first {
            if let Some(b) = self.branches.pop_back() {
                return Some((b, true));
            }
        }
        if let Some(l) = self.leaves.pop_back() {
            return Some((l, false));
        }
        self.branches.pop_back().map(|b| (b, true))
    }

    /// For a thief: half of the oldest branches (the big subtrees) and half
    /// of the oldest leaves. A lone item goes only if `busy` (this rank has
    /// no free thread to run it soon).
    pub fn steal(&mut self, busy: bool) -> Vec<I> {
        let take = |q: &mut VecDeque<I>| -> Vec<I> {
            let give = match q.len() {
                0 => 0,
                1 => usize::from(busy),
                n => n / 2,
            };
            q.drain(..give).collect()
        };
        let mut out = take(&mut self.branches);
        out.extend(take(&mut self.leaves));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_run_first_until_leaves_pile_up() {
        let mut q = WorkQueue::new();
        q.push("d1", true);
        q.push("f1", false);
        q.push("f2", false);
        assert_eq!(q.next(4), Some(("d1", true)));
        q.push("d2", true);
        // Over the high-water mark (1 leaf allowed): leaves, newest first.
        assert_eq!(q.next(1), Some(("f2", false)));
        assert_eq!(q.next(1), Some(("d2", true)));
        assert_eq!(q.next(1), Some(("f1", false)));
        assert_eq!(q.next(1), None);
    }

    #[test]
    fn a_thief_gets_the_oldest_halves_and_a_lone_item_only_from_a_busy_rank() {
        let mut q = WorkQueue::new();
        for i in 0..4 {
            q.push(i, true);
        }
        q.push(10, false);
        assert_eq!(q.steal(false), vec![0, 1]);
        assert_eq!(q.steal(true), vec![2, 10]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.clear(), 1);
        assert!(q.is_empty());
    }
}
