//! The passes driven in-process by N simulated ranks (no MPI): the same
//! `run_pass` the binary runs, over `transport::local` with random delivery.

mod common;

use std::path::Path;

use common::*;
use lmpi::config::Config;
use lmpi::settings::{PassKind, Settings};
use lmpi::transport::local;

fn run_sim(
    ranks: usize,
    seed: u64,
    pass: PassKind,
    src: &Path,
    dst: &Path,
    elog: &Path,
) -> Vec<i32> {
    let cfg = Config {
        source_mount: Some(src.to_path_buf()),
        target_mount: Some(dst.to_path_buf()),
        chunk_threshold: 1 << 20,
        chunk_size: 256 << 10,
        threads_per_rank: 3,
        ..Default::default()
    };
    let mut args = Settings::new(pass, cfg);
    args.error_log = Some(elog.to_path_buf());
    args.quiet = true;
    let handles: Vec<_> = local::network(ranks, Some(seed))
        .into_iter()
        .map(|mut t| {
            let args = args.clone();
            std::thread::spawn(move || lmpi::run::run_pass(&mut t, Ok(&args)).code())
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("rank thread"))
        .collect()
}

#[test]
fn simulated_ranks_migrate_the_odd_tree() {
    lmpi::fsops::clear_umask();
    for (ranks, seed) in [(1, 1), (3, 7), (5, 42)] {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst, elog) = (
            tmp.path().join("src"),
            tmp.path().join("dst"),
            tmp.path().join("e.log"),
        );
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        build_odd_tree(&src, true);
        std::fs::write(dst.join("stale"), b"delete me").unwrap();
        for pass in [PassKind::Copy, PassKind::Delete, PassKind::Dirtime] {
            let codes = run_sim(ranks, seed, pass, &src, &dst, &elog);
            assert!(
                codes.iter().all(|&c| c == 0),
                "{pass:?} with {ranks} ranks: exit codes {codes:?}: {}",
                std::fs::read_to_string(&elog).unwrap_or_default()
            );
        }
        let diffs = compare_trees(&src, &dst, true);
        assert!(diffs.is_empty(), "{ranks} ranks: {}", diffs.join("\n"));
    }
}
