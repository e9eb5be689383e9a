//! A world of one rank, for runs without a launcher. MPI's singleton start
//! costs about 0.3 s (it forks a runtime daemon), more than a whole no-change
//! pass over a small tree; one rank needs none of it.

use std::collections::VecDeque;

use super::{Rank, Transport};

#[derive(Default)]
pub struct SoloTransport {
    // Rank 0 may address itself (e.g. as the owner of a hardlink group).
    inbox: VecDeque<Vec<u8>>,
}

impl Transport for SoloTransport {
    fn rank(&self) -> Rank {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn send(&mut self, to: Rank, msg: Vec<u8>) {
        debug_assert_eq!(to, 0, "a world of one rank");
        self.inbox.push_back(msg);
    }
    fn try_recv(&mut self) -> Option<(Rank, Vec<u8>)> {
        self.inbox.pop_front().map(|m| (0, m))
    }
    fn barrier(&mut self) {}
    fn all_reduce_sum(&mut self, v: &[u64]) -> Vec<u64> {
        v.to_vec()
    }
    fn all_reduce_max(&mut self, v: &[u64]) -> Vec<u64> {
        v.to_vec()
    }
    fn gather(&mut self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        vec![mine]
    }
}

/// How this process was started.
#[derive(Debug, PartialEq, Eq)]
pub enum Launch {
    /// By an MPI launcher (mpirun, srun --mpi=pmix/pmi2, hydra).
    Mpi,
    /// By hand: one rank, no MPI.
    Alone,
    /// By srun without an MPI plugin: every task would believe it is alone
    /// and copy the whole tree. `tasks` is SLURM_NTASKS.
    SrunWithoutMpi { tasks: usize },
}

/// Decide from the environment the launchers set; `var` is `std::env::var_os`
/// in production.
pub fn detect(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Launch {
    const MPI_VARS: &[&str] = &[
        "OMPI_COMM_WORLD_SIZE", // Open MPI's mpirun/prterun
        "PMIX_RANK",            // any PMIx launcher, srun --mpi=pmix included
        "PMI_RANK",             // hydra (MPICH), srun --mpi=pmi2
        "PMI_FD",
        "PMI_SIZE",
    ];
    if MPI_VARS.iter().any(|v| var(v).is_some()) {
        return Launch::Mpi;
    }
    let tasks = var("SLURM_STEP_NUM_TASKS")
        .and_then(|v| v.to_str().and_then(|s| s.parse::<usize>().ok()))
        .unwrap_or(1);
    if var("SLURM_STEP_ID").is_some() && tasks > 1 {
        return Launch::SrunWithoutMpi { tasks };
    }
    Launch::Alone
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn launchers_are_recognised() {
        assert_eq!(detect(env(&[])), Launch::Alone);
        assert_eq!(detect(env(&[("OMPI_COMM_WORLD_SIZE", "1")])), Launch::Mpi);
        assert_eq!(
            detect(env(&[("PMIX_RANK", "0"), ("SLURM_STEP_ID", "0")])),
            Launch::Mpi
        );
        // A one-task srun step needs no MPI; a wider one without a plugin is an error.
        assert_eq!(
            detect(env(&[
                ("SLURM_STEP_ID", "0"),
                ("SLURM_STEP_NUM_TASKS", "1")
            ])),
            Launch::Alone
        );
        assert_eq!(
            detect(env(&[
                ("SLURM_STEP_ID", "3"),
                ("SLURM_STEP_NUM_TASKS", "4")
            ])),
            Launch::SrunWithoutMpi { tasks: 4 }
        );
    }

    #[test]
    fn solo_delivers_to_itself_in_order() {
        let mut t = SoloTransport::default();
        t.send(0, vec![1]);
        t.send(0, vec![2]);
        assert_eq!(t.try_recv(), Some((0, vec![1])));
        assert_eq!(t.try_recv(), Some((0, vec![2])));
        assert_eq!(t.try_recv(), None);
        assert_eq!(t.all_reduce_sum(&[3, 4]), vec![3, 4]);
    }
}
