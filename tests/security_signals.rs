//! A signal to `mpirun` itself (kill, Ctrl-C, scancel), not to the ranks.
//!
//! Open MPI 4's mpirun never forwards SIGTERM/SIGINT: it ends the job with
//! its kill sequence, SIGCONT to the ranks at once, SIGTERM
//! `odls_base_sigkill_timeout` seconds later (1 by default), SIGKILL as long
//! after that, and exits 1. lmpi's graceful stop runs on that SIGTERM; these
//! tests show that with the delay slurm/run-pass.sh gives mpirun it is the
//! whole stop (summary, resume records, lock removed, the next pass resumes
//! and converges), that with Open MPI's 1 s lmpi says what a cut-short stop
//! loses and the next pass still converges, and that run-pass.sh reports a
//! stop under mpirun as a stop (4), not as mpirun's 1.

mod common;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lmpi::fsops;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
/// Every chunk write takes this long: a stop then waits longer than Open
/// MPI's default 1 s for the chunks in flight.
const WRITE_US: &str = "1500000";
const CHUNK_ARGS: [&str; 4] = ["--chunk-size", "1048576", "--chunk-threshold", "2097152"];

/// One mpirun at a time: on two cores, parallel jobs would blur the timing.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// `src` with one big file (64 chunks, every 4 KiB block different) and a
/// small one; an empty `dst`.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = scratch();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    let mut data = Vec::with_capacity(SIZE as usize);
    for n in 0..SIZE / 4096 {
        let mut b: Vec<u8> = (0..4096u32).map(|i| (i * 7 + n as u32) as u8).collect();
        b[..8].copy_from_slice(&n.to_le_bytes());
        data.extend_from_slice(&b);
    }
    std::fs::write(src.join("big"), &data).unwrap();
    std::fs::write(src.join("small"), b"small\n").unwrap();
    (tmp, src, dst)
}

fn partials(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_resume_partial(p))
        .collect()
}

/// Chunks the record on partial `p` lists (`done=0-4,7` is 6).
fn chunks_recorded(p: &Path) -> u64 {
    let d = open(p.parent().unwrap());
    let name = p.file_name().unwrap().as_encoded_bytes();
    let rec = fsops::get_xattr(None, d.as_fd(), name, b"trusted.lmpi.resume").unwrap();
    let rec = String::from_utf8(rec).unwrap();
    let done = rec
        .split(' ')
        .find_map(|f| f.strip_prefix("done="))
        .unwrap_or("");
    done.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, z)) => z.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// Wait until the partial copy holds `want` chunks of data, then send `sig`
/// to `pids`; the child's (exit code, stdout, stderr).
fn signal_midway(
    mut child: Child,
    dst: &Path,
    want: u64,
    sig: i32,
    pids: impl FnOnce(&Child) -> Vec<i32>,
) -> (Option<i32>, String, String) {
    let t0 = Instant::now();
    loop {
        let held = partials(dst)
            .first()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.blocks() * 512);
        if held >= want * MIB {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no chunks came in");
        assert!(child.try_wait().unwrap().is_none(), "ended before the stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    for pid in pids(&child) {
        // SAFETY: kill only sends a signal, to processes this test started.
        unsafe { libc::kill(pid, sig) };
    }
    let (mut out, mut err) = (String::new(), String::new());
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        se.read_to_string(&mut err).unwrap();
        err
    });
    so.read_to_string(&mut out).unwrap();
    let err = errs.join().unwrap();
    (child.wait().unwrap().code(), out, err)
}

/// `mpirun -np 2 lmpi --pass copy` with slow chunk writes; `kill_delay`:
/// mpirun's odls_base_sigkill_timeout (None: Open MPI's default).
fn start_mpirun(src: &Path, dst: &Path, kill_delay: Option<u32>, write_us: &str) -> Child {
    let mut cmd = launcher(Launch::Mpirun(2), &bin());
    cmd.args(["--pass", "copy", "--threads", "2", "--report-interval", "1"])
        .args(CHUNK_ARGS)
        .arg("--source")
        .arg(src)
        .arg("--target")
        .arg(dst)
        .arg("--error-log")
        .arg(dst.with_extension("errors"))
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_WRITE_US", write_us)
        .env_remove("OMPI_MCA_odls_base_sigkill_timeout")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = kill_delay {
        cmd.env("OMPI_MCA_odls_base_sigkill_timeout", s.to_string());
    }
    cmd.spawn().expect("start mpirun")
}

/// The next copy pass resumes the recorded chunks (copies fewer bytes) and
/// the target ends identical to the source.
fn resumes_and_converges(src: &Path, dst: &Path, recorded: u64) {
    let (code, rep, o) = pass(Launch::Mpirun(2), "copy", src, dst, &CHUNK_ARGS);
    assert_eq!(code, 0, "{}", text(&o));
    let (data, resumed) = (total(&rep, "data"), total(&rep, "resumed"));
    assert!(resumed >= recorded * MIB, "resumed {resumed}\n{rep}");
    assert!(data < SIZE, "copied {data} bytes again\n{rep}");
    assert!(
        partials(dst).is_empty(),
        "the partial is renamed into place"
    );
    let diffs = compare_trees(src, dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A signal to mpirun with a kill delay long enough for the stop: the
/// ranks' SIGTERM comes 4 s after it, their stop (1.5 s chunk writes in
/// flight) ends before the SIGKILL 4 s later, and it is the whole stop.
fn graceful_via_mpirun(sig: i32) {
    if !have("mpirun") {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let (_tmp, src, dst) = setup();
    let child = start_mpirun(&src, &dst, Some(4), WRITE_US);
    let (code, out, err) = signal_midway(child, &dst, 3, sig, |c| vec![c.id() as i32]);
    let all = format!("status {code:?}\nstdout:\n{out}\nstderr:\n{err}");
    // Open MPI: a signalled mpirun exits 1 whatever its ranks' status.
    assert_eq!(code, Some(1), "{all}");
    assert!(out.contains("STOPPED"), "the summary: {all}");
    assert!(out.contains("exit status 4"), "the ranks stopped: {all}");
    assert!(
        out.contains("1 partly copied big files kept for the next pass to resume"),
        "{all}"
    );
    assert!(
        err.contains("mpirun was signalled and ends the job: it kills the ranks 4 s after"),
        "rank 0 says what ends the job: {all}"
    );
    assert!(
        !dst.join(".lmpi.lock").exists(),
        "the lock is removed: {all}"
    );
    let part = partials(&dst);
    assert_eq!(part.len(), 1, "{part:?}\n{all}");
    let recorded = chunks_recorded(&part[0]);
    assert!(recorded >= 3, "{recorded} chunks recorded\n{all}");
    resumes_and_converges(&src, &dst, recorded);
}

#[test]
fn sigterm_to_mpirun_is_a_graceful_stop() {
    graceful_via_mpirun(libc::SIGTERM);
}

/// Ctrl-C at an interactive mpirun: the ranks get the same SIGTERM.
#[test]
fn sigint_to_mpirun_is_a_graceful_stop() {
    graceful_via_mpirun(libc::SIGINT);
}

/// With Open MPI's default delay (1 s) a stop waiting seconds for a chunk in
/// flight is killed: rank 0 has said why and how to avoid it, nothing
/// partial looks complete, and the next pass (over the stale lock file)
/// converges.
#[test]
fn sigterm_to_mpirun_with_the_default_delay_is_explained_and_safe() {
    if !have("mpirun") {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let (_tmp, src, dst) = setup();
    // 4 s chunk writes: the stop almost always outlasts the second after
    // the ranks' SIGTERM (the line below says which way it went).
    let child = start_mpirun(&src, &dst, None, "4000000");
    let (code, out, err) = signal_midway(child, &dst, 3, libc::SIGTERM, |c| vec![c.id() as i32]);
    let all = format!("status {code:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert_ne!(code, Some(0), "{all}");
    assert!(
        err.contains("kills the ranks 1 s (Open MPI's default")
            && err.contains("OMPI_MCA_odls_base_sigkill_timeout=10"),
        "{all}"
    );
    assert!(
        !dst.join("big").exists(),
        "nothing partial has the name: {all}"
    );
    let recorded: u64 = partials(&dst).iter().map(|p| chunks_recorded(p)).sum();
    println!(
        "default delay: summary {}, lock file left {}, {recorded} chunks recorded",
        out.contains("STOPPED"),
        dst.join(".lmpi.lock").exists()
    );
    let (code, _, o) = pass(Launch::Mpirun(2), "copy", &src, &dst, &CHUNK_ARGS);
    assert_eq!(code, 0, "{}", text(&o));
    let diffs = compare_trees(&src, &dst, false);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// The children of `pid` (the ranks of an mpirun).
fn children(pid: u32) -> Vec<i32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// slurm/run-pass.sh with LMPI_LAUNCHER=mpirun, signalled as scancel does
/// (the script, mpirun and the ranks at once): the ranks stop gracefully
/// within the kill delay the script gives mpirun, the summary comes out,
/// and the script exits 4 (stopped), not mpirun's 1.
#[test]
fn run_pass_sh_with_mpirun_reports_a_stop_as_a_stop() {
    if !have("mpirun") {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let (tmp, src, dst) = setup();
    let cfg = tmp.path().join("lmpi.toml");
    std::fs::write(&cfg, "report_interval = 1\nthreads_per_rank = 2\n").unwrap();
    let args = format!(
        "--source {} --target {} --error-log {} {}",
        src.display(),
        dst.display(),
        tmp.path().join("errors").display(),
        CHUNK_ARGS.join(" ")
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm/run-pass.sh");
    let child = Command::new(script)
        .arg("copy")
        .env("LMPI", bin())
        .env("LMPI_CONFIG", &cfg)
        .env("LMPI_ARGS", &args)
        .env("LMPI_LAUNCHER", "mpirun")
        .env("OMPI_MCA_pml", "ob1")
        .env_remove("OMPI_MCA_odls_base_sigkill_timeout")
        .env_remove("SLURM_JOB_ID")
        .env("LD_PRELOAD", shim())
        .env("LMPI_FAULT_WRITE_US", WRITE_US)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let (code, out, err) = signal_midway(child, &dst, 3, libc::SIGTERM, |c| {
        let mpirun = children(c.id());
        let ranks = mpirun.iter().flat_map(|&m| children(m as u32));
        let mut all = vec![c.id() as i32];
        all.extend(mpirun.iter().copied().chain(ranks));
        all
    });
    let all = format!("status {code:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(code, Some(4), "{all}");
    assert!(err.contains("pass copy STOPPED (exit status 4)"), "{all}");
    assert!(
        out.contains("STOPPED") && out.contains("exit status 4"),
        "{all}"
    );
    // mpirun forwards the summary only after its kill sequence, 2 x 10 s:
    // under Slurm's default KillWait (30 s).
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(
        !dst.join(".lmpi.lock").exists(),
        "the lock is removed: {all}"
    );
    let part = partials(&dst);
    assert_eq!(part.len(), 1, "{part:?}\n{all}");
    let recorded = chunks_recorded(&part[0]);
    assert!(recorded >= 3, "{recorded} chunks recorded\n{all}");
    resumes_and_converges(&src, &dst, recorded);
}

fn cluster_up() -> bool {
    let ok = Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok || !in_ci(), "the Slurm test cluster is required in CI");
    ok
}

/// scancel of `sbatch slurm/copy.sbatch` with LMPI_LAUNCHER=mpirun: Slurm
/// signals the batch shell, mpirun and the ranks; mpirun's kill sequence
/// (delay 10 s from run-pass.sh) must neither cut the ranks' stop short nor
/// hold the summary past Slurm's KillWait. The job log has the summary and
/// run-pass.sh's "STOPPED (exit status 4)"; the resubmitted job resumes.
#[test]
fn scancel_of_an_mpirun_job_is_a_graceful_stop() {
    if !have("mpirun") || !cluster_up() {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let (tmp, src, dst) = setup();
    let out_file = tmp.path().join("job.out");
    let lmpi_args = format!(
        "--source {} --target {} --report-interval 1 --threads 2 {}",
        src.display(),
        dst.display(),
        CHUNK_ARGS.join(" ")
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("slurm/copy.sbatch");
    let sub = Command::new("sbatch")
        .arg("--parsable")
        .arg(format!("--chdir={}", tmp.path().display()))
        .arg(format!("--output={}", out_file.display()))
        .args(["--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=2"])
        .arg(&script)
        .env("LMPI", bin())
        .env("LMPI_HOME", env!("CARGO_MANIFEST_DIR"))
        .env("LMPI_ARGS", &lmpi_args)
        .env("LMPI_LAUNCHER", "mpirun")
        .env("OMPI_MCA_pml", "ob1")
        .env_remove("OMPI_MCA_odls_base_sigkill_timeout")
        .env("LD_PRELOAD", shim())
        // 4 s chunk writes: the stop outlasts the 2 s Open MPI's default
        // delay would leave (SIGKILL at 2 x 1 s after scancel).
        .env("LMPI_FAULT_WRITE_US", "4000000")
        .output()
        .unwrap();
    assert!(sub.status.success(), "{}", text(&sub));
    let job = String::from_utf8_lossy(&sub.stdout).trim().to_string();
    let t0 = Instant::now();
    while partials(&dst)
        .first()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.blocks() * 512)
        < 3 * MIB
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job {job} never copied"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = Command::new("scancel").arg(&job).output().unwrap();
    assert!(st.status.success(), "{}", text(&st));
    let t1 = Instant::now();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(90),
            "job {job} still queued"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(
        log.contains("STOPPED") && log.contains("exit status 4"),
        "{log}"
    );
    assert!(log.contains("pass copy STOPPED (exit status 4)"), "{log}");
    assert!(
        !dst.join(".lmpi.lock").exists(),
        "the lock is removed:\n{log}"
    );
    let part = partials(&dst);
    assert_eq!(part.len(), 1, "{part:?}\n{log}");
    let recorded = chunks_recorded(&part[0]);
    assert!(recorded >= 3, "{recorded} chunks recorded\n{log}");
    resumes_and_converges(&src, &dst, recorded);
}
