//! One Slurm job per pass, on the repo's single-node test cluster
//! (scripts/slurm-up.sh). In CI a missing cluster fails these tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// The cluster is one shared resource (and one test reshapes it): one test at a time.
static CLUSTER: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cluster_up() -> bool {
    let ok = Command::new("sinfo")
        .arg("-h")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            !in_ci(),
            "the Slurm test cluster is required in CI (scripts/slurm-up.sh)"
        );
        eprintln!("skipped: no Slurm cluster (run scripts/slurm-up.sh)");
    }
    ok
}

fn sh(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

/// `sbatch --wait` one of our sbatch files with the tree roots in LMPI_ARGS.
fn sbatch(
    script: &str,
    src: &Path,
    dst: &Path,
    work: &Path,
    extra_env: &[(&str, &str)],
    extra: &[&str],
) -> (Output, String) {
    let out_file = work.join(format!("{script}.out"));
    let mut c = Command::new("sbatch");
    c.arg("--wait")
        .arg(format!("--chdir={}", work.display()))
        .arg(format!("--output={}", out_file.display()))
        // The scripts ask for 8 CPUs per task; the test node has 8 in all.
        .arg("--cpus-per-task=2")
        .args(extra)
        .arg(repo().join("slurm").join(script))
        .env("LMPI", bin())
        .env("LMPI_HOME", repo())
        .env(
            "LMPI_ARGS",
            format!(
                "--source {} --target {} --report-interval 1",
                src.display(),
                dst.display()
            ),
        )
        .env("OMPI_MCA_pml", "ob1");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = sh(&mut c);
    let log = std::fs::read_to_string(&out_file).unwrap_or_default();
    (out, log)
}

fn tree(root: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let p = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&p).unwrap();
        for f in 0..files {
            std::fs::write(
                p.join(format!("slowfile{f:04}")),
                format!("{d}:{f}\n").repeat(16),
            )
            .unwrap();
        }
    }
}

fn setup(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (src, dst, work) = (tmp.join("src"), tmp.join("dst"), tmp.join("work"));
    for p in [&src, &dst, &work] {
        std::fs::create_dir_all(p).unwrap();
    }
    (src, dst, work)
}

#[test]
fn copy_sbatch_with_four_tasks() {
    let _g = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !cluster_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, work) = setup(tmp.path());
    build_odd_tree(&src, false);
    let (out, log) = sbatch("copy.sbatch", &src, &dst, &work, &[], &["--ntasks=4"]);
    assert!(out.status.success(), "{}\n{log}", text(&out));
    assert!(
        log.contains("(4 ranks x 2 threads)"),
        "4 ranks of --cpus-per-task threads expected:\n{log}"
    );
    assert!(log.contains("COMPLETE"), "{log}");
    // The error log is named after the job, and a pass without errors leaves none.
    let job = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .unwrap_or("")
        .to_string();
    assert!(
        !work.join(format!("lmpi-copy-{job}.errors")).exists(),
        "an empty error log (job id {job}) left in {work:?}"
    );
    let (out, log) = sbatch("dirtime.sbatch", &src, &dst, &work, &[], &["--ntasks=4"]);
    assert!(out.status.success(), "{}\n{log}", text(&out));
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn final_sbatch_makes_a_changed_target_identical() {
    let _g = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !cluster_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, work) = setup(tmp.path());
    build_odd_tree(&src, false);
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    std::fs::write(src.join("new-after-first-pass"), b"n").unwrap();
    std::fs::remove_file(src.join("medium.bin")).unwrap();
    std::fs::write(dst.join("only-on-target"), b"gone").unwrap();
    let (out, log) = sbatch("final.sbatch", &src, &dst, &work, &[], &["--ntasks=3"]);
    assert!(out.status.success(), "{}\n{log}", text(&out));
    assert!(log.contains("pass final done"), "{log}");
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn final_sbatch_stops_at_the_first_failed_step() {
    let _g = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !cluster_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, _, work) = setup(tmp.path());
    let missing = tmp.path().join("no-such-target");
    let passes = [("LMPI_PASSES", "copy delete dirtime")];
    let (out, log) = sbatch(
        "final.sbatch",
        &src,
        &missing,
        &work,
        &passes,
        &["--ntasks=2"],
    );
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("pass copy FAILED"), "{log}");
    assert!(
        !log.contains("pass delete"),
        "later passes must not run:\n{log}"
    );
}

#[test]
fn scancel_mid_copy_then_resubmit() {
    let _g = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !cluster_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, work) = setup(tmp.path());
    tree(&src, 20, 200);
    std::fs::write(src.join("big"), vec![3u8; 40 << 20]).unwrap();
    let shim = shim();
    let out_file = work.join("scancel.out");
    // Submit without --wait; slow metadata so the copy is surely running when cancelled.
    let out = sh(Command::new("sbatch")
        .arg("--parsable")
        .arg(format!("--chdir={}", work.display()))
        .arg(format!("--output={}", out_file.display()))
        .args(["--ntasks=4", "--cpus-per-task=2"])
        .arg(repo().join("slurm/copy.sbatch"))
        .env("LMPI", bin())
        .env("LMPI_HOME", repo())
        .env(
            "LMPI_ARGS",
            format!(
                "--source {} --target {} --chunk-threshold 8388608 --chunk-size 1048576",
                src.display(),
                dst.display()
            ),
        )
        .env("LD_PRELOAD", &shim)
        .env("LMPI_FAULT_SLOW", "slowfile")
        .env("LMPI_FAULT_SLOW_US", "2000")
        .env("OMPI_MCA_pml", "ob1"));
    assert!(out.status.success(), "{}", text(&out));
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let t0 = Instant::now();
    while std::fs::read_dir(&dst).map(|d| d.count()).unwrap_or(0) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job {job} never started copying"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = sh(Command::new("scancel").arg(&job));
    assert!(st.status.success(), "{}", text(&st));
    // Wait for the job to leave the queue.
    let t1 = Instant::now();
    loop {
        let q = sh(Command::new("squeue").args(["-h", "-j", &job]));
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(120),
            "job {job} did not end after scancel"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(log.contains("STOPPED"), "graceful stop expected:\n{log}");
    assert!(log.contains("pass copy STOPPED (exit status 4)"), "{log}");
    // Only a big file's recorded partial copy may stay (the next pass resumes it).
    for e in std::fs::read_dir(&dst).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !n.starts_with(".lmpi-") || is_resume_partial(&p),
            "temp file left: {n:?}"
        );
    }
    // Resubmit the same pass: it resumes through the normal compare.
    let (out, log) = sbatch("copy.sbatch", &src, &dst, &work, &[], &["--ntasks=4"]);
    assert!(out.status.success(), "{}\n{log}", text(&out));
    let (out, log) = sbatch("dirtime.sbatch", &src, &dst, &work, &[], &["--ntasks=2"]);
    assert!(out.status.success(), "{}\n{log}", text(&out));
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn srun_dirtime_inside_an_allocation() {
    let _g = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !cluster_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, work) = setup(tmp.path());
    build_odd_tree(&src, false);
    let (code, _, o) = pass(Launch::Alone, "copy", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let out_file = work.join("srun.out");
    let wrap = format!(
        "srun --mpi=pmix --cpu-bind=none -n 4 {} --pass dirtime --source {} --target {}",
        bin().display(),
        src.display(),
        dst.display()
    );
    let out = sh(Command::new("sbatch")
        .args(["--wait", "--ntasks=4"])
        .arg(format!("--chdir={}", work.display()))
        .arg(format!("--output={}", out_file.display()))
        .arg(format!("--wrap={wrap}"))
        .env("OMPI_MCA_pml", "ob1"));
    let log = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(out.status.success(), "{}\n{log}", text(&out));
    assert!(
        log.contains("lmpi dirtime: COMPLETE") && log.contains("(4 ranks x"),
        "{log}"
    );
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn two_node_shaped_job_with_mpirun_inside() {
    let _g = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !cluster_up() {
        return;
    }
    let up = |two: bool| {
        let mut c = Command::new("bash");
        c.arg(repo().join("scripts/slurm-up.sh"));
        if two {
            c.arg("--two-nodes");
        }
        let o = sh(&mut c);
        assert!(o.status.success(), "slurm-up failed: {}", text(&o));
    };
    up(true);
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, work) = setup(tmp.path());
    build_odd_tree(&src, false);
    let (out, log) = sbatch(
        "copy.sbatch",
        &src,
        &dst,
        &work,
        // Two emulated nodes share one kernel: Open MPI's shared-memory transport
        // (vader) between ranks of different "nodes" crashes in the first
        // collective. Real nodes talk over the network, so use TCP here too.
        &[("LMPI_LAUNCHER", "mpirun"), ("OMPI_MCA_btl", "self,tcp")],
        &["--nodes=2", "--ntasks=4", "--ntasks-per-node=2"],
    );
    up(false);
    assert!(out.status.success(), "{}\n{log}", text(&out));
    assert!(log.contains("(4 ranks x"), "{log}");
    let (code, _, o) = pass(Launch::Alone, "dirtime", &src, &dst, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let diffs = compare_trees(&src, &dst, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// `--signal=TERM@120` in the sbatch files: Slurm's warning before a time
/// limit reaches the ranks, which stop gracefully; resubmitting converges.
#[test]
fn time_limit_warning_signal_stops_gracefully() {
    let _g = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !cluster_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, work) = setup(tmp.path());
    tree(&src, 10, 400);
    let shim = shim();
    // A 1-minute limit with the warning 50 s before it: the signal comes
    // about 10 s in, long before the slowed-down copy could finish.
    let (out, log) = sbatch(
        "copy.sbatch",
        &src,
        &dst,
        &work,
        &[
            ("LD_PRELOAD", shim.to_str().unwrap()),
            ("LMPI_FAULT_SLOW", "slowfile"),
            ("LMPI_FAULT_SLOW_US", "50000"),
        ],
        &["--ntasks=2", "--time=1", "--signal=TERM@50"],
    );
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("lmpi copy: STOPPED"), "{log}");
    assert!(log.contains("pass copy STOPPED (exit status 4)"), "{log}");
    let (out, log) = sbatch("copy.sbatch", &src, &dst, &work, &[], &["--ntasks=2"]);
    assert!(out.status.success(), "{}\n{log}", text(&out));
    let diffs = compare_trees(&src, &dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Quoted as an admin would: one name with a space, one with a `$`.
const EXCLUDES: &str = "--report-interval 1 --exclude 'skip me' --exclude \\$HOME";

/// The job id `sbatch` printed.
fn job_id(out: &Output) -> String {
    let said = String::from_utf8_lossy(&out.stdout);
    said.split_whitespace().last().unwrap_or("").to_string()
}

/// `sbatch /path/to/slurm/copy.sbatch` from another directory, without
/// LMPI_HOME: the script finds its own checkout (sbatch runs a copy of it
/// from the spool directory). Arguments after the script reach lmpi one
/// each (a root with a space), LMPI_ARGS is split as the shell would but
/// never expanded; the job asks for a time limit, the warning signal and a
/// requeue, and each rank runs --cpus-per-task threads. A relative script
/// path works too.
#[test]
fn sbatch_from_another_directory_finds_its_checkout() {
    let _g = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if !cluster_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_, dst, work) = setup(tmp.path());
    let src = tmp.path().join("the source");
    std::fs::create_dir(&src).unwrap();
    build_odd_tree(&src, false);
    std::fs::create_dir(src.join("skip me")).unwrap();
    std::fs::write(src.join("skip me/f"), b"x").unwrap();
    std::fs::write(src.join("$HOME"), b"a literal name").unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out_file = work.join("copy.out");
    let out = sh(Command::new("sbatch")
        .current_dir(&elsewhere)
        .arg("--wait")
        .arg(format!("--chdir={}", work.display()))
        .arg(format!("--output={}", out_file.display()))
        .args(["--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=3"])
        .arg(repo().join("slurm/copy.sbatch"))
        .arg("--source")
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .env_remove("LMPI_HOME")
        .env("LMPI", bin())
        .env("LMPI_ARGS", EXCLUDES)
        .env("OMPI_MCA_pml", "ob1"));
    let log = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(out.status.success(), "{}\n{log}", text(&out));
    assert!(log.contains("lmpi copy: COMPLETE"), "{log}");
    assert!(log.contains("(2 ranks x 3 threads)"), "{log}");
    assert!(
        !dst.join("skip me").exists(),
        "the quoted exclude was split:\n{log}"
    );
    assert!(
        !dst.join("$HOME").exists(),
        "the escaped exclude was expanded:\n{log}"
    );
    assert!(dst.join("medium.bin").exists(), "{log}");
    let job = sh(Command::new("scontrol").args(["show", "job", &job_id(&out)]));
    let job = String::from_utf8_lossy(&job.stdout);
    for want in ["TimeLimit=1-00:00:00", "Requeue=1", "CPUs/Task=3"] {
        assert!(job.contains(want), "{want} not in:\n{job}");
    }
    // From the checkout's parent, with a relative path.
    let parent = repo().parent().unwrap().to_path_buf();
    let rel = Path::new(repo().file_name().unwrap()).join("slurm/dirtime.sbatch");
    let out_file = work.join("dirtime.out");
    let out = sh(Command::new("sbatch")
        .current_dir(&parent)
        .arg("--wait")
        .arg(format!("--chdir={}", work.display()))
        .arg(format!("--output={}", out_file.display()))
        .args(["--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=2"])
        .arg(&rel)
        .arg("--source")
        .arg(&src)
        .arg("--target")
        .arg(&dst)
        .env_remove("LMPI_HOME")
        .env("LMPI", bin())
        .env("LMPI_ARGS", EXCLUDES)
        .env("OMPI_MCA_pml", "ob1"));
    let log = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(out.status.success(), "{}\n{log}", text(&out));
    assert!(log.contains("pass dirtime done"), "{log}");
}
