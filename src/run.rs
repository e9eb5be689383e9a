//! One pass, start to finish, on every rank: check the roots, run the engine
//! phases, agree on totals and the exit status, and have rank 0 report.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;

use crate::config::Config;
use crate::control::{self, Command, JobStatus, RankStatus, SharedStatus};
use crate::engine::{self, Monitor, RankReport, RunControl, RunOpts, RunOutcome};
use crate::errlog::ErrorLog;
use crate::filter::Filter;
use crate::fsops;
use crate::passes::changes::{self, Seeds};
use crate::passes::sink::Sink;
use crate::passes::{self, copy, delete, dirtime, final_pass, verify, Ctx, RootIds};
use crate::report::{self, Percentiles, RankFigures, Summary};
use crate::settings::{PassKind, Settings};
use crate::stats::{Counters, Histograms, Snapshot};
use crate::status::{ExitStatus, RunState};
use crate::transport::Transport;

struct Roots {
    src_path: PathBuf,
    dst_path: PathBuf,
    src: OwnedFd,
    dst: OwnedFd,
}

fn open_roots(cfg: &Config) -> Result<Roots, String> {
    let src_path = cfg
        .source_mount
        .clone()
        .ok_or("no source given (--source or source_mount)")?;
    let dst_path = cfg
        .target_mount
        .clone()
        .ok_or("no target given (--target or target_mount)")?;
    let open = |p: &Path, what: &str| {
        fsops::open_root(p).map_err(|e| format!("{what} {}", e.at(p.as_os_str().as_bytes())))
    };
    let src = open(&src_path, "source")?;
    let dst = open(&dst_path, "target")?;
    for (fd, p, what) in [(&src, &src_path, "source"), (&dst, &dst_path, "target")] {
        let shown = || fsops::show(p.as_os_str().as_bytes());
        match fsops::pseudo_fs(fd.as_fd()) {
            Ok(None) => {}
            Ok(Some(fs)) => {
                return Err(format!(
                    "{what} {}: on {fs}, not a real filesystem",
                    shown()
                ))
            }
            Err(e) => return Err(format!("{what} {}", e.at(p.as_os_str().as_bytes()))),
        }
    }
    let (s, d) = (
        fsops::fstat(src.as_fd())
            .map_err(|e| format!("source {}", e.at(src_path.as_os_str().as_bytes())))?,
        fsops::fstat(dst.as_fd())
            .map_err(|e| format!("target {}", e.at(dst_path.as_os_str().as_bytes())))?,
    );
    if s.dev == d.dev && s.ino == d.ino {
        return Err(format!(
            "source {} and target {} are the same directory",
            fsops::show(src_path.as_os_str().as_bytes()),
            fsops::show(dst_path.as_os_str().as_bytes())
        ));
    }
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (cs, cd) = (canon(&src_path), canon(&dst_path));
    if cd.starts_with(&cs) || cs.starts_with(&cd) {
        return Err(format!(
            "source {} and target {} are nested (one is inside the other)",
            fsops::show(cs.as_os_str().as_bytes()),
            fsops::show(cd.as_os_str().as_bytes())
        ));
    }
    Ok(Roots {
        src_path,
        dst_path,
        src,
        dst,
    })
}

/// The first entry of a root directory other than the job lock.
fn first_entry(root: &OwnedFd) -> Result<Option<fsops::Entry>, fsops::OsError> {
    let mut rd = fsops::DirReader::new(fsops::open_dir_at(root.as_fd(), b".")?);
    while let Some(e) = rd.next_entry() {
        let e = e?;
        if !passes::is_job_lock(b"", &e.name) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// The delete pass only starts on a source it can read, and not on an empty
/// source root while the target has data (an unmounted filesystem looks empty).
fn delete_preflight(roots: &Roots, allow_empty: bool) -> Result<(), String> {
    let shown = fsops::show(roots.src_path.as_os_str().as_bytes());
    let src_empty = first_entry(&roots.src)
        .map_err(|e| format!("source {shown} is not readable: {e}"))?
        .is_none();
    if src_empty && !allow_empty {
        // A target that cannot be read counts as holding data.
        if !matches!(first_entry(&roots.dst), Ok(None)) {
            return Err(format!(
                "source {shown} is empty but the target is not: is the source mounted? (--allow-empty-source to delete anyway)"
            ));
        }
    }
    Ok(())
}

/// With `require_mountpoints`, both roots must be mount points: a mount
/// point directory with nothing mounted on it may still hold a stray file,
/// which the empty-source check would take for the data.
fn mount_check(roots: &Roots) -> Result<(), String> {
    for (side, fd, path) in [
        ("source", &roots.src, &roots.src_path),
        ("target", &roots.dst, &roots.dst_path),
    ] {
        let p = path.as_os_str().as_bytes();
        match fsops::is_mount_root(fd.as_fd()) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "{side} {} is not a mount point (require_mountpoints): is it mounted?",
                    fsops::show(p)
                ))
            }
            Err(e) => return Err(format!("{side} {}", e.at(p))),
        }
    }
    Ok(())
}

/// One job per target: rank 0 holds an flock on `<target>/.lmpi.lock` for
/// the whole pass (the other ranks of the job never take it), so a second
/// job on the same target stops here. A dry run changes nothing and takes
/// no lock. The lock dies with the process, so a killed job frees it.
/// Only lmpi's own lock file (a regular file with one link owned by our
/// euid, mode 0600) is obeyed: one another user made (whoever can write
/// the target root could hold its flock and forge its holder line) is
/// removed and replaced, with a note; a downtime is not lost to it.
fn lock_target<T: Transport + ?Sized>(
    t: &mut T,
    args: &Settings,
    roots: &Roots,
    job: &str,
    host: &str,
) -> Result<Option<JobLock>, ExitStatus> {
    let mine = (t.rank() == 0 && !args.dry_run && !args.force_concurrent)
        .then(|| JobLock::take(roots, job, host));
    let failed = matches!(mine, Some(Err(_)));
    if t.all_reduce_max(&[failed as u64])[0] != 0 {
        if let Some(Err(msg)) = &mine {
            eprintln!("lmpi: {msg}");
        }
        return Err(ExitStatus::Usage);
    }
    Ok(mine.and_then(Result::ok).flatten())
}

/// The target's lock file, locked; removed again when the pass ends.
struct JobLock {
    file: OwnedFd,
    /// The target root, whose times the removal must not disturb.
    root: OwnedFd,
}

impl JobLock {
    /// Take the target's lock and write who holds it; Ok(None) on a
    /// read-only or full target (nobody can change the first; the delete
    /// pass must still run on the second).
    fn take(roots: &Roots, job: &str, host: &str) -> Result<Option<JobLock>, String> {
        let mut path = roots.dst_path.as_os_str().as_bytes().to_vec();
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(passes::JOB_LOCK);
        let shown = fsops::show(&path);
        let at = |e: fsops::OsError| format!("target lock {}", e.at(&path));
        // A holder that ends removes the file while still holding it: a lock
        // won on such an unlinked file is retried on the new one.
        // Creating the file moves the root's times: put them back, so the
        // lock never makes a converged target look changed to a pass.
        let before = fsops::fstat(roots.dst.as_fd()).map_err(at)?;
        for _ in 0..10 {
            let opened = fsops::open_own_output(
                roots.dst.as_fd(),
                passes::JOB_LOCK,
                fsops::Existing::Keep,
                0o600,
            );
            restore_times(roots.dst.as_fd(), &before);
            let (file, st) = match opened {
                Ok((file, st, _)) => (file, st),
                Err(fsops::OutputError::Os(e)) if e.errno == libc::EROFS => return Ok(None),
                Err(fsops::OutputError::Os(e))
                    if e.errno == libc::ENOSPC || e.errno == libc::EDQUOT =>
                {
                    eprintln!("lmpi: warning: {}: no one-job-per-target check", at(e));
                    return Ok(None);
                }
                Err(fsops::OutputError::Os(e)) => return Err(at(e)),
                Err(e) if planted(&e) => {
                    remove_planted_lock(roots, &before, e.at(&path))?;
                    continue;
                }
                Err(e) => return Err(format!("target lock {}: remove it", e.at(&path))),
            };
            if !fsops::try_lock(file.as_fd()).map_err(at)? {
                return Err(in_use(roots, file.as_fd(), &shown));
            }
            match fsops::stat_at(roots.dst.as_fd(), passes::JOB_LOCK) {
                Ok(now) if now.ident() == st.ident() => {}
                Ok(_) => continue,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(at(e)),
            }
            let me = format!("job {job} host {host} pid {}\n", std::process::id());
            // Only informative: a lock without a holder line still locks.
            let _ = fsops::replace_contents(file.as_fd(), me.as_bytes());
            let root = roots
                .dst
                .try_clone()
                .map_err(|e| format!("target lock {shown}: {e}"))?;
            return Ok(Some(JobLock { file, root }));
        }
        Err(format!(
            "target lock {shown}: replaced again and again by other jobs"
        ))
    }
}

/// The line for a target whose lock another job holds: that job's own
/// holder line (the file is root's, so the line is a job's, not a user's).
fn in_use(roots: &Roots, file: BorrowedFd, shown: &str) -> String {
    let holder = fsops::read_head(file, 200).unwrap_or_default();
    let holder = match fsops::show(holder.trim_ascii()) {
        h if h.is_empty() => "holder unknown".to_string(),
        h => h,
    };
    format!(
        "target {} is in use by another job ({holder}; lock {shown}); --force-concurrent to run anyway",
        fsops::show(roots.dst_path.as_os_str().as_bytes())
    )
}

/// Whether what is at the lock's name was put there by another user (who
/// can write the target root: to hold the lock or forge its holder), or is
/// a second name of some file: then it is removed, not obeyed. Anything
/// else that is not a lock (a symlink, FIFO or directory of our own euid)
/// stops the job with one line: only root made it.
fn planted(e: &fsops::OutputError) -> bool {
    let me = fsops::euid();
    matches!(e, fsops::OutputError::Links { .. }) || e.owner().is_some_and(|uid| uid != me)
}

/// Something at the lock's name that is not lmpi's lock (a user who can
/// write the target root made it, to hold the lock or forge its holder):
/// removed (a directory with what it holds, as the copy removes a target
/// directory in a file's way), so the loop in `JobLock::take` makes our
/// own, with a note.
fn remove_planted_lock(
    roots: &Roots,
    before: &fsops::Stat,
    why: fsops::OutputFailure,
) -> Result<(), String> {
    let dir = roots.dst.as_fd();
    let removed = match fsops::unlink_at(dir, passes::JOB_LOCK) {
        // Never followed: the walk opens each directory O_NOFOLLOW.
        Err(e) if e.errno == libc::EISDIR => fsops::remove_tree_at(dir, passes::JOB_LOCK).map(drop),
        r => r,
    };
    restore_times(dir, before);
    match removed {
        Ok(()) => {
            eprintln!(
                "lmpi: note: target lock {why}: removed, and lmpi's own lock made in its place"
            );
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(format!(
            "target lock {why}; cannot remove it ({e}): remove it"
        )),
    }
}

/// Give the target root back the times it had before the lock's file came
/// or went, so the lock never makes a converged target look changed.
fn restore_times(dir: BorrowedFd, before: &fsops::Stat) {
    if let Ok(now) = fsops::fstat(dir) {
        if (now.atime, now.mtime) != (before.atime, before.mtime) {
            let _ = fsops::futimes(dir, before.atime, before.mtime);
        }
    }
}

impl Drop for JobLock {
    /// Remove the file while still holding it (see `take`), and give the
    /// target root back the times it had, which the dirtime or final pass
    /// may have just set.
    fn drop(&mut self) {
        let (Ok(mine), Ok(dir)) = (
            fsops::fstat(self.file.as_fd()),
            fsops::fstat(self.root.as_fd()),
        ) else {
            return;
        };
        match fsops::stat_at(self.root.as_fd(), passes::JOB_LOCK) {
            Ok(s) if s.ident() == mine.ident() => {}
            _ => return,
        }
        if fsops::unlink_at(self.root.as_fd(), passes::JOB_LOCK).is_ok() {
            let _ = fsops::futimes(self.root.as_fd(), dir.atime, dir.mtime);
        }
    }
}

/// Rank 0's eyes: progress lines, control status, control commands.
struct RankZero {
    pass: &'static str,
    progress: crate::progress::Progress,
    quiet: bool,
    status: SharedStatus,
    commands: Option<Receiver<Command>>,
    host: String,
}

impl RankZero {
    /// Rank 0's monitor, with the control bridge started (if configured)
    /// and the CPU-binding note said once.
    fn start(
        args: &Settings,
        job: &str,
        status: &SharedStatus,
        host: &str,
        started: Instant,
    ) -> RankZero {
        let cfg = &args.cfg;
        if let Some(note) = crate::host::binding_note(cfg.threads_per_rank) {
            eprintln!("lmpi: note: {note}");
        }
        let source = cfg.source_mount.as_deref().unwrap_or(Path::new(""));
        let expected = crate::progress::expected_from(args.report.as_deref(), source);
        RankZero {
            pass: args.pass.name(),
            progress: crate::progress::Progress::new(args.pass.name(), started, expected),
            quiet: args.quiet,
            status: status.clone(),
            commands: control::spawn(&cfg.control, job, status.clone(), args.wait_for_start),
            host: host.to_string(),
        }
    }

    fn state(&self) -> RunState {
        self.status
            .lock()
            .map(|s| s.state)
            .unwrap_or(RunState::Running)
    }
}

impl Monitor for RankZero {
    fn tick(&mut self, reports: &[Option<RankReport>], ctl: &RunControl) {
        let mut total = Snapshot::default();
        for r in reports.iter().flatten() {
            total = total.sum(&r.counters);
        }
        let waiting = self.state() == RunState::Waiting;
        if !self.quiet {
            if waiting {
                report::say(&format!(
                    "lmpi {}: waiting for `lmpi ctl start` (or the old cmover start)",
                    self.pass
                ));
            } else {
                report::say(&self.progress.line(&total));
            }
        }
        if let Ok(mut s) = self.status.lock() {
            s.state = match (ctl.stopping(), waiting) {
                (true, _) => RunState::Stopping,
                (false, true) => RunState::Waiting,
                (false, false) => RunState::Running,
            };
            s.threads_per_rank = ctl.threads();
            s.totals = total;
            s.per_rank = reports
                .iter()
                .enumerate()
                .map(|(rank, r)| RankStatus {
                    rank,
                    host: if rank == 0 {
                        self.host.clone()
                    } else {
                        String::new()
                    },
                    counters: r.as_ref().map(|r| r.counters).unwrap_or_default(),
                    active: r.as_ref().map(|r| r.active.clone()).unwrap_or_default(),
                })
                .collect();
        }
    }
    fn poll_command(&mut self) -> Option<Command> {
        let c = self.commands.as_ref()?.try_recv().ok()?;
        if c == Command::Start {
            if let Ok(mut s) = self.status.lock() {
                s.state = RunState::Running;
            }
        }
        Some(c)
    }
}

/// One rank's end-of-pass figures, gathered at rank 0 for the summary.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct RankEnd {
    host: String,
    counters: Snapshot,
    /// (value, count) of each recorded histogram bucket.
    size: Vec<(u64, u64)>,
    copy_us: Vec<(u64, u64)>,
    /// The inode of this rank's part of the manifest, which the merge checks.
    part_ino: u64,
}

impl RankEnd {
    fn of(host: &str, counters: Snapshot, hist: &Histograms, part_ino: u64) -> RankEnd {
        let mut end = RankEnd {
            host: host.to_string(),
            counters,
            part_ino,
            ..Default::default()
        };
        if let (Ok(s), Ok(c)) = (hist.size.lock(), hist.copy_us.lock()) {
            (end.size, end.copy_us) = (recorded(&s), recorded(&c));
        }
        end
    }
}

fn recorded(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|x| (x.value_iterated_to(), x.count_at_value()))
        .collect()
}

fn replay(h: &mut Histogram<u64>, buckets: &[(u64, u64)]) {
    for &(v, c) in buckets {
        let _ = h.record_n(v, c);
    }
}

/// Only rank 0 seeds the root.
fn root_seed<I>(rank: usize, item: I) -> Vec<I> {
    if rank == 0 {
        vec![item]
    } else {
        Vec::new()
    }
}

struct Prepared {
    cfg: Config,
    roots: Roots,
    filter: Filter,
    lustre: Option<crate::lustre::Lustre>,
    /// The target's job lock (rank 0), held until the pass ends.
    lock: Option<JobLock>,
}

/// "All ranks agree or every rank exits": each rank brings its own result;
/// if any failed, every rank returns `failed`, and the reason is printed
/// once (rank 0's, or a pointer to another rank's when rank 0 was fine).
fn all_agree<T: Transport + ?Sized, V, E: std::fmt::Display>(
    t: &mut T,
    mine: Result<V, E>,
    failed: ExitStatus,
    elsewhere: &str,
    host: &str,
) -> Result<V, ExitStatus> {
    let rank = t.rank();
    if t.all_reduce_max(&[mine.is_err() as u64])[0] == 0 {
        return mine.map_err(|_| failed);
    }
    match &mine {
        Err(msg) if rank == 0 => eprintln!("lmpi: {msg}"),
        Err(msg) => eprintln!("lmpi[{host}:{rank}]: {msg}"),
        Ok(_) if rank == 0 => eprintln!("lmpi: {elsewhere}"),
        Ok(_) => {}
    }
    Err(failed)
}

/// Why a rank cannot set a pass up.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("{0}")]
    Roots(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Exclude(#[from] crate::filter::ExcludeError),
}

/// Both roots open and the filters built from the settings.
fn roots_and_filter(args: &Settings, now: u64) -> Result<(Roots, Filter), SetupError> {
    let cfg = &args.cfg;
    let roots = open_roots(cfg).map_err(SetupError::Roots)?;
    let excludes = cfg.exclude_prefixes()?;
    // Absolute excludes are matched against the source root as given
    // (made absolute, symlinks kept), like the old `exceptions` file.
    let root = std::path::absolute(&roots.src_path).unwrap_or_else(|_| roots.src_path.clone());
    let filter = Filter::new(
        now as i64,
        cfg.oldest_date,
        cfg.newest_date,
        &excludes,
        root.as_os_str().as_bytes(),
    )?;
    Ok((roots, filter))
}

/// What a pass needs before it may touch anything: both roots open, the
/// filters, the target's lock, the delete guards and, for a copy, Lustre.
/// Every rank checks; all must agree, or every rank returns the same status.
fn prepare<T: Transport + ?Sized>(
    t: &mut T,
    args: &Settings,
    host: &str,
    now: u64,
    job: &str,
) -> Result<Prepared, ExitStatus> {
    let kind = args.pass;
    let setup = roots_and_filter(args, now);
    let elsewhere = "setup failed on another rank (see its message)";
    let (roots, filter) = all_agree(t, setup, ExitStatus::Usage, elsewhere, host)?;
    // Verify writes nothing, so it may run beside a job (and takes no lock).
    let lock = match kind {
        PassKind::Verify => None,
        _ => lock_target(t, args, &roots, job, host)?,
    };
    if matches!(kind, PassKind::Delete | PassKind::Final) {
        let require = args.require_mountpoints;
        let pre = if require { mount_check(&roots) } else { Ok(()) };
        let pre = pre
            .and_then(|()| delete_preflight(&roots, args.allow_empty_source))
            .map_err(|msg| format!("{} refused: {msg}", kind.name()));
        let elsewhere = format!(
            "{} refused on another rank (mount points or the source; see its node)",
            kind.name()
        );
        all_agree(t, pre, ExitStatus::Refused, &elsewhere, host)?;
    }
    // Lustre layouts matter to the passes that create files and to verify;
    // `require` fails here, before anything is touched.
    let mut lustre = None;
    if matches!(kind, PassKind::Copy | PassKind::Final | PassKind::Verify) {
        let r = crate::lustre::Lustre::open(&args.cfg.lustre, roots.src.as_fd(), roots.dst.as_fd());
        let elsewhere = "Lustre is required but not usable on another rank";
        let (l, warning) = all_agree(t, r, ExitStatus::Usage, elsewhere, host)?;
        if let (0, Some(w)) = (t.rank(), warning) {
            eprintln!("lmpi: warning: {w}");
        }
        lustre = l;
    }
    Ok(Prepared {
        cfg: args.cfg.clone(),
        roots,
        filter,
        lustre,
        lock,
    })
}

/// What every engine phase of a pass shares.
struct Phases<'a> {
    args: &'a Settings,
    cfg: &'a Config,
    counters: &'a Arc<Counters>,
    ctl: &'a Arc<RunControl>,
    interval: Duration,
    seed: u64,
}

/// A pass's result: the engine's outcome, whether --max-delete was reached,
/// and notes for the summary.
struct PhasesDone {
    outcome: RunOutcome,
    /// --max-delete: more were due than allowed (nothing was deleted).
    over_cap: bool,
    /// Lines for the summary.
    notes: Vec<String>,
}

impl PhasesDone {
    fn new(outcome: RunOutcome, over_cap: bool, notes: Vec<String>) -> PhasesDone {
        PhasesDone {
            outcome,
            over_cap,
            notes,
        }
    }
}

impl Phases<'_> {
    /// The pass's phases, by kind.
    fn run_pass<T: Transport + ?Sized>(
        &self,
        t: &mut T,
        ctx: Ctx,
        lustre: Option<crate::lustre::Lustre>,
        monitor: &mut dyn Monitor,
    ) -> PhasesDone {
        match self.args.pass {
            PassKind::Copy => run_copy(t, ctx, lustre, self, monitor),
            PassKind::Delete => run_delete(t, ctx, self, monitor),
            PassKind::Dirtime => run_dirtime(t, ctx, self, monitor),
            PassKind::Final => run_final(t, ctx, lustre, self, monitor),
            PassKind::Verify => run_verify(t, ctx, lustre, self, monitor),
        }
    }

    fn run<T: Transport + ?Sized, P: engine::Processor>(
        &self,
        t: &mut T,
        p: Arc<P>,
        seeds: Vec<P::Item>,
        monitor: &mut dyn Monitor,
        epoch: u32,
    ) -> RunOutcome {
        // Only the first phase waits for `lmpi ctl start`.
        let opts = RunOpts {
            epoch,
            interval: self.interval,
            wait_for_start: epoch == 1 && self.args.wait_for_start,
            seed: self.seed ^ epoch as u64,
        };
        engine::run(t, p, seeds, self.counters, self.ctl, monitor, &opts)
    }
}

fn copy_opts<T: Transport + ?Sized>(t: &mut T, env: &Phases<'_>) -> copy::CopyOpts {
    let rank = t.rank();
    copy::CopyOpts {
        chunk_threshold: env.cfg.chunk_threshold,
        chunk_size: env.cfg.chunk_size,
        check_xattrs: env.cfg.check_xattrs,
        content: env.cfg.verify_content,
        copy_project_ids: env.cfg.copy_project_ids,
        // Rank 0's random draw, the same on every rank.
        token: t.all_reduce_max(&[if rank == 0 { rand::random::<u64>() } else { 0 }])[0],
    }
}

/// --max-delete plans the removals first (a dry run only lists them).
fn delete_cap(env: &Phases<'_>) -> Option<u64> {
    env.args.max_delete
}

/// After a planning walk: the work items that carry out this rank's part
/// of the plan, or None (said once, by rank 0) if the whole job found more
/// entries due than the cap, and then nothing is removed.
fn approve_plan<T: Transport + ?Sized>(
    t: &mut T,
    p: &delete::DeletePass,
    cap: u64,
) -> Option<Vec<delete::Item>> {
    let due = t.all_reduce_sum(&[p.due()])[0];
    if due > cap {
        if t.rank() == 0 {
            eprintln!(
                "lmpi: {due} entries due for deletion, cap {cap} (--max-delete): nothing deleted"
            );
        }
        return None;
    }
    Some(p.take_plan())
}

/// Remove the directories the delete work emptied, deepest level first,
/// all ranks in step (a parent is removed only after its children).
fn remove_emptied<T: Transport + ?Sized>(t: &mut T, p: &delete::DeletePass) {
    let deepest = t.all_reduce_max(&[p.purged_depths()])[0];
    for level in (1..=deepest).rev() {
        p.remove_level(level);
        t.barrier();
    }
}

/// Final, the downtime pass: one walk that copies, removes and records
/// directory times (phase 1); the hardlink groups (2); the emptied
/// directories; and last, once nothing else changes, the directory times.
fn run_final<T: Transport + ?Sized>(
    t: &mut T,
    ctx: Ctx,
    lustre: Option<crate::lustre::Lustre>,
    env: &Phases<'_>,
    monitor: &mut dyn Monitor,
) -> PhasesDone {
    let rank = ctx.rank;
    let started_ns = crate::track::unix_ns();
    let (seeds, mut notes) = match env.args.from_manifest.is_empty() {
        true => final_seeds(&ctx, env.args.changes.as_deref(), &env.args.cfg.lustre),
        false => named_seeds(&ctx, env, |n, c| n.final_items(c)),
    };
    // Agreed: only rank 0 read the journal.
    let by_changes = t.all_reduce_max(&[matches!(seeds, Seeds::Changes(..)) as u64])[0] != 0;
    let ctx = Arc::new(ctx);
    let copy = copy::CopyPass::new(ctx.clone(), copy_opts(t, env), lustre);
    let delete = delete::DeletePass::new(ctx.clone(), delete_cap(env));
    let p = Arc::new(final_pass::FinalPass::new(copy, delete));
    let root = || final_pass::Item::Dir {
        rel: Vec::new(),
        ids: Default::default(),
    };
    let seeds = match seeds {
        Seeds::Changes(items, _) => items,
        Seeds::Walk(_) => root_seed(rank, root()),
    };
    let mut outcome = env.run(t, p.clone(), seeds, monitor, 1);
    let stopped = |t: &mut T, o: &RunOutcome| t.all_reduce_max(&[o.stopped as u64])[0] != 0;
    if !stopped(t, &outcome) {
        let mut groups = p.copy().take_link_groups();
        // A journal names only the names that changed, never all of a
        // hardlinked inode's: a group would be split. Walk to find them all.
        if by_changes && t.all_reduce_max(&[!groups.is_empty() as u64])[0] != 0 {
            notes.push(
                "hardlinked files were named: the whole tree was walked to find each one's names"
                    .into(),
            );
            outcome.stopped |= env
                .run(t, p.clone(), root_seed(rank, root()), monitor, 1)
                .stopped;
            groups = p.copy().take_link_groups();
        }
        let groups = groups.into_iter().map(final_pass::Item::Copy).collect();
        outcome.stopped |= env.run(t, p.clone(), groups, monitor, 2).stopped;
    }
    let mut over_cap = false;
    if let (false, Some(cap)) = (stopped(t, &outcome), delete_cap(env)) {
        match approve_plan(t, p.delete(), cap) {
            Some(items) => {
                let items = items.into_iter().map(final_pass::Item::Delete).collect();
                outcome.stopped |= env.run(t, p.clone(), items, monitor, 3).stopped;
            }
            None => over_cap = true,
        }
    }
    if !stopped(t, &outcome) && !over_cap {
        remove_emptied(t, p.delete());
    }
    if !stopped(t, &outcome) {
        t.barrier();
        p.set_dir_times();
    }
    notes.extend(partials_note(t, p.copy(), outcome.stopped));
    // Only a pass that looked at every change (a walk, or a journal) is a
    // clean sync a later --changes can start from; a named repair is not.
    let whole = env.args.from_manifest.is_empty();
    if clean(t, &ctx, &outcome) && !over_cap && whole {
        changes::mark_synced(&ctx, started_ns);
    }
    PhasesDone::new(outcome, over_cap, notes)
}

/// Rank 0's seeds for a final pass (the journal's changes, or the root
/// with the reason), with the summary's note about them.
fn final_seeds(
    ctx: &Ctx,
    journal: Option<&std::path::Path>,
    lustre: &crate::lustre::LustreConfig,
) -> (Seeds, Vec<String>) {
    let Some(j) = journal.filter(|_| ctx.rank == 0) else {
        let why = changes::WalkWhy::Doubt(String::new());
        return (Seeds::Walk(why), Vec::new());
    };
    match changes::seeds(ctx, j, lustre) {
        Seeds::Changes(items, note) => (Seeds::Changes(items, note.clone()), vec![note]),
        Seeds::Walk(why) => {
            let note = format!(
                "--changes {}: {why}: the whole tree was walked",
                j.display()
            );
            (Seeds::Walk(why), vec![note])
        }
    }
}

/// Rank 0's seeds from `--from-manifest` (copy or final): exactly the
/// entries the manifests name, made into items by `make`.
fn named_seeds<I>(
    ctx: &Ctx,
    env: &Phases<'_>,
    make: impl FnOnce(passes::named::Named, &Ctx) -> Vec<I>,
) -> (Seeds<I>, Vec<String>) {
    if ctx.rank != 0 {
        return (
            Seeds::Walk(changes::WalkWhy::Doubt(String::new())),
            Vec::new(),
        );
    }
    let named = passes::named::read(
        ctx,
        &env.args.from_manifest,
        env.cfg.from_manifest_max_bytes,
    );
    let note = format!(
        "--from-manifest: {} records named; nothing else was looked at",
        named.records
    );
    (Seeds::Changes(make(named, ctx), note.clone()), vec![note])
}

/// Every rank ended the pass with nothing failed and no stop.
fn clean<T: Transport + ?Sized>(t: &mut T, ctx: &Ctx, o: &RunOutcome) -> bool {
    let bad = o.stopped || ctx.counters.errors.load(Ordering::Relaxed) > 0;
    t.all_reduce_max(&[bad as u64])[0] == 0
}

/// After the phases, on every rank: big files a stop left partly copied.
/// If any rank stopped, every rank first syncs the partial copies it wrote
/// chunks into; only when all did does each owner write the chunks that are
/// in into its partials' records (so no record lists a chunk another node
/// has not synced) and keep them for the next pass. The summary says how
/// many were kept or removed, over all ranks.
fn partials_note<T: Transport + ?Sized>(
    t: &mut T,
    p: &copy::CopyPass,
    stopped: bool,
) -> Vec<String> {
    let stopped = t.all_reduce_max(&[stopped as u64])[0] != 0;
    let synced = !stopped || p.sync_written();
    let synced = t.all_reduce_max(&[!synced as u64])[0] == 0;
    let (kept, removed) = p.keep_partials(synced);
    let all = t.all_reduce_sum(&[kept as u64, removed as u64]);
    let mut notes = Vec::new();
    if all[0] > 0 {
        notes.push(format!(
            "{} partly copied big files kept for the next pass to resume",
            all[0]
        ));
    }
    if all[1] > 0 {
        notes.push(format!(
            "{} partly copied big files abandoned (temp files removed)",
            all[1]
        ));
    }
    notes
}

/// Copy: walk and copy, then (phase 2) the hardlink groups each rank collected.
fn run_copy<T: Transport + ?Sized>(
    t: &mut T,
    ctx: Ctx,
    lustre: Option<crate::lustre::Lustre>,
    env: &Phases<'_>,
    monitor: &mut dyn Monitor,
) -> PhasesDone {
    let rank = ctx.rank;
    let opts = copy_opts(t, env);
    let (seeds, notes) = match env.args.from_manifest.is_empty() {
        true => {
            let root = copy::Item::Dir {
                rel: Vec::new(),
                ids: Default::default(),
            };
            (root_seed(rank, root), Vec::new())
        }
        false => match named_seeds(&ctx, env, |n, c| n.copy_items(c.batch)) {
            (Seeds::Changes(items, _), notes) => (items, notes),
            (Seeds::Walk(_), notes) => (Vec::new(), notes),
        },
    };
    let p = Arc::new(copy::CopyPass::new(Arc::new(ctx), opts, lustre));
    let mut outcome = env.run(t, p.clone(), seeds, monitor, 1);
    let groups = if outcome.stopped {
        Vec::new()
    } else {
        p.take_link_groups()
    };
    if t.all_reduce_max(&[outcome.stopped as u64])[0] == 0 {
        outcome.stopped |= env.run(t, p.clone(), groups, monitor, 2).stopped;
    }
    let mut notes = notes;
    notes.extend(partials_note(t, &p, outcome.stopped));
    PhasesDone::new(outcome, false, notes)
}

/// Delete: compare and empty doomed subtrees, then (phase 2) remove the
/// emptied directories deepest level first, all ranks in step.
fn run_delete<T: Transport + ?Sized>(
    t: &mut T,
    ctx: Ctx,
    env: &Phases<'_>,
    monitor: &mut dyn Monitor,
) -> PhasesDone {
    let rank = ctx.rank;
    let p = Arc::new(delete::DeletePass::new(Arc::new(ctx), delete_cap(env)));
    let seeds = root_seed(
        rank,
        delete::Item::Dir {
            rel: Vec::new(),
            ids: Default::default(),
        },
    );
    let mut outcome = env.run(t, p.clone(), seeds, monitor, 1);
    let stopped = |t: &mut T, o: &RunOutcome| t.all_reduce_max(&[o.stopped as u64])[0] != 0;
    if stopped(t, &outcome) {
        return PhasesDone::new(outcome, false, Vec::new());
    }
    if let Some(cap) = delete_cap(env) {
        let Some(items) = approve_plan(t, &p, cap) else {
            return PhasesDone::new(outcome, true, Vec::new());
        };
        outcome.stopped |= env.run(t, p.clone(), items, monitor, 2).stopped;
        if stopped(t, &outcome) {
            return PhasesDone::new(outcome, false, Vec::new());
        }
    }
    remove_emptied(t, &p);
    PhasesDone::new(outcome, false, Vec::new())
}

fn run_dirtime<T: Transport + ?Sized>(
    t: &mut T,
    ctx: Ctx,
    env: &Phases<'_>,
    monitor: &mut dyn Monitor,
) -> PhasesDone {
    let seeds = root_seed(
        ctx.rank,
        dirtime::Item {
            rel: Vec::new(),
            ids: Default::default(),
        },
    );
    let p = Arc::new(dirtime::DirtimePass { ctx });
    PhasesDone::new(env.run(t, p, seeds, monitor, 1), false, Vec::new())
}

fn run_verify<T: Transport + ?Sized>(
    t: &mut T,
    ctx: Ctx,
    lustre: Option<crate::lustre::Lustre>,
    env: &Phases<'_>,
    monitor: &mut dyn Monitor,
) -> PhasesDone {
    let seeds = if env.args.from_manifest.is_empty() {
        let root = verify::Item::Dir {
            rel: Vec::new(),
            ids: Default::default(),
        };
        root_seed(ctx.rank, root)
    } else if ctx.rank == 0 {
        verify::first_pieces(env.args.from_manifest.len())
    } else {
        Vec::new()
    };
    let cfg = env.cfg;
    let opts = verify::VerifyOpts {
        content: cfg.verify_content,
        sample: cfg.verify_sample,
        chunk_threshold: cfg.chunk_threshold,
        chunk_size: cfg.chunk_size,
        whole_tree: env.args.from_manifest.is_empty(),
        manifest_max_bytes: cfg.from_manifest_max_bytes,
    };
    let p = Arc::new(verify::VerifyPass {
        ctx,
        opts,
        lustre,
        links: Default::default(),
        missed: Default::default(),
        from: env.args.from_manifest.clone(),
    });
    let outcome = env.run(t, p.clone(), seeds, monitor, 1);
    let notes = link_counts(t, &p, outcome.stopped);
    PhasesDone::new(outcome, false, notes)
}

/// Hardlink counts per group, once the whole tree was walked. A stopped
/// walk, or one that went on past names it could not see, saw only some
/// names of a group: each such group would be a second, false line. Agreed
/// by all ranks: a signal is seen by each rank on its own, and one that
/// comes after the phase ended leaves that rank unaware of a stop that
/// dropped others' names.
fn link_counts<T: Transport + ?Sized>(
    t: &mut T,
    p: &verify::VerifyPass,
    stopped: bool,
) -> Vec<String> {
    let agreed = t.all_reduce_max(&[stopped as u64, p.missed_names() as u64]);
    match (p.opts.whole_tree, agreed.as_slice()) {
        (true, [0, 0]) => {
            p.check_link_counts();
            Vec::new()
        }
        (true, [0, _]) => vec![
            "hardlink counts were not checked: some names could not be read (see the errors)"
                .into(),
        ],
        _ => Vec::new(),
    }
}

/// What every pass of this rank shares.
fn make_ctx<T: Transport + ?Sized>(
    t: &T,
    args: &Settings,
    (roots, filter): (Roots, Filter),
    log: ErrorLog,
    (counters, hist): (&Arc<Counters>, &Arc<Histograms>),
    sink: &Arc<Sink>,
) -> Ctx {
    Ctx {
        // open_roots has already fstat'ed both; a failure here leaves an identity nothing matches.
        roots: RootIds::of(roots.src.as_fd(), roots.dst.as_fd()).unwrap_or_default(),
        src: roots.src,
        dst: roots.dst,
        rank: t.rank(),
        size: t.size(),
        counters: counters.clone(),
        hist: hist.clone(),
        log,
        filter,
        dry_run: args.dry_run,
        sink: sink.clone(),
        batch: args.cfg.batch_size,
        is_root: fsops::is_root(),
    }
}

/// The job id names the error log and the lock's holder, and answers
/// `lmpi ctl --job`: LMPI_JOB_ID, else Slurm's, else the start time (agreed
/// by all ranks).
fn job_id<T: Transport + ?Sized>(t: &mut T, now: u64) -> String {
    match std::env::var("LMPI_JOB_ID").or_else(|_| std::env::var("SLURM_JOB_ID")) {
        Ok(j) if !j.is_empty() => j,
        _ => format!("{}", t.all_reduce_max(&[now])[0]),
    }
}

/// The job's status as the bridge, `lmpi ctl status` and rank 0 share it.
fn job_status(args: &Settings, job: &str, ranks: usize) -> SharedStatus {
    Arc::new(Mutex::new(JobStatus {
        job: job.to_string(),
        pass: args.pass.name().into(),
        state: if args.wait_for_start {
            RunState::Waiting
        } else {
            RunState::Running
        },
        ranks,
        threads_per_rank: args.cfg.threads_per_rank,
        ..Default::default()
    }))
}

/// Run one pass on this rank: the library's entry point. `settings` is what
/// this rank resolved from its command line and config file (or why not).
pub fn run_pass<T: Transport + ?Sized>(
    t: &mut T,
    settings: Result<&Settings, &dyn std::fmt::Display>,
) -> ExitStatus {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let rank = t.rank();
    let size = t.size();
    let host = crate::host::hostname();
    // Every rank resolved its own settings (flags and config file).
    let elsewhere = "setup failed on another rank (see its message)";
    let args = match all_agree(t, settings, ExitStatus::Usage, elsewhere, &host) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let kind = args.pass;
    let pass = kind.name();
    let now = unix_now();
    let job = job_id(t, now);
    // `_lock` (not `_`) keeps the target's lock for the whole pass.
    let Prepared {
        cfg,
        roots,
        filter,
        lustre,
        lock: _lock,
    } = match prepare(t, args, &host, now, &job) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let sink = open_sink(args, rank);
    let sink = match all_agree(t, sink, ExitStatus::Usage, elsewhere, &host) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let who = format!("lmpi[{host}:{rank}]");
    let log_path = error_log_path(args, &cfg, &job, &who);
    let counters = Arc::new(Counters::default());
    let hist = Arc::new(Histograms::default());
    let (log, log_state) = open_error_log(&roots, log_path.as_deref(), who.clone(), &counters);
    let ctx = make_ctx(t, args, (roots, filter), log, (&counters, &hist), &sink);
    let status = job_status(args, &job, size);
    let mut zero = (rank == 0).then(|| RankZero::start(args, &job, &status, &host, started));
    let mut quiet_monitor = engine::NoMonitor;
    let monitor: &mut dyn Monitor = match zero.as_mut() {
        Some(z) => z,
        None => &mut quiet_monitor,
    };
    let ctl = RunControl::new(cfg.threads_per_rank, cfg.max_threads_per_rank);
    crate::signals::watchdog(Duration::from_secs(cfg.stop_grace_seconds), rank == 0);
    let interval = Duration::from_secs(cfg.report_interval);
    // A dry run's figures are what would be done: never mixed into the
    // site's counters.
    let stats_pusher = match args.dry_run {
        true => None,
        false => {
            crate::statsd::start_for_rank(&cfg.stats, pass, &host, rank, counters.clone(), interval)
        }
    };
    let env = Phases {
        args,
        cfg: &cfg,
        counters: &counters,
        ctl: &ctl,
        interval,
        seed: now,
    };
    let done = env.run_pass(t, ctx, lustre, monitor);
    if let Err(e) = sink.finish() {
        eprintln!("{who}: error: manifest: {e}");
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    let stats_ok = stats_pusher.map(|p| p.finish());
    let (failed, lines) = log_state;
    let end = End {
        started,
        started_at,
        job: &job,
        host: &host,
        pass,
        log_path: log_path.as_deref(),
        log: (
            failed.load(Ordering::Relaxed),
            lines.load(Ordering::Relaxed),
        ),
        stats_failed: stats_ok == Some(false),
        manifest: args.manifest.as_deref(),
        part_ino: sink.part_ino(),
    };
    let done = (done.outcome, done.over_cap, done.notes);
    let code = end.conclude(t, (&counters, &hist), done, &ctl, args);
    if let Ok(mut s) = status.lock() {
        s.state = RunState::Done;
    }
    code
}

/// This rank's error log, and what the summary needs to know of it at the
/// end: it could not be opened, its line count.
fn open_error_log(
    roots: &Roots,
    path: Option<&Path>,
    who: String,
    counters: &Arc<Counters>,
) -> (ErrorLog, (Arc<AtomicBool>, Arc<AtomicU64>)) {
    let log = ErrorLog::new(
        who,
        roots.src_path.as_os_str().as_bytes(),
        roots.dst_path.as_os_str().as_bytes(),
        path,
        counters.clone(),
    );
    let state = (log.failed(), log.lines());
    (log, state)
}

/// The action sink: with `--manifest`, recording into this rank's part
/// (opened now, so a manifest that cannot be written stops the pass before
/// it starts); flushed too if the stop watchdog ends the process.
fn open_sink(args: &Settings, rank: usize) -> Result<Arc<Sink>, String> {
    if rank == 0 {
        check_outputs(args)?;
    }
    let sink = match &args.manifest {
        None => Sink::new(args.dry_run),
        Some(m) => {
            let part = crate::manifest::part_path(m, rank);
            Sink::with_manifest(args.dry_run, &part).map_err(|e| format!("manifest: {e}"))?
        }
    };
    let sink = Arc::new(sink);
    if sink.records() {
        let weak = Arc::downgrade(&sink);
        crate::signals::on_hard_exit(Box::new(move || {
            if let Some(s) = weak.upgrade() {
                s.flush_now();
            }
        }));
    }
    Ok(sink)
}

/// Rank 0, before the pass: the report and the merged manifest will be
/// written at their names at the end; a link, FIFO or user's file there
/// is refused now rather than after hours.
fn check_outputs(args: &Settings) -> Result<(), String> {
    if let Some(r) = &args.report {
        fsops::check_output_path(r).map_err(|e| format!("report {e}"))?;
    }
    if let Some(m) = &args.manifest {
        fsops::check_output_path(m).map_err(|e| format!("manifest {e}"))?;
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where this job's error lines go: `--error-log` (`/dev/null`: nowhere but
/// stderr), else `<log_dir>/lmpi-<pass>-<job>.errors`, `log_dir` being root's
/// own `/var/log/lmpi` unless configured (`errlog::default_dir`). None:
/// stderr only (said here, once per rank, when the default is unusable).
fn error_log_path(args: &Settings, cfg: &Config, job: &str, who: &str) -> Option<PathBuf> {
    if let Some(p) = &args.error_log {
        return (p.as_path() != Path::new("/dev/null")).then(|| p.clone());
    }
    let dir = match &cfg.log_dir {
        Some(d) => d.clone(),
        None => match crate::errlog::default_dir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{who}: error log directory {e}; errors go to stderr only");
                return None;
            }
        },
    };
    Some(dir.join(format!("lmpi-{}-{job}.errors", args.pass.name())))
}

/// What the end of a pass needs to know besides the counters.
struct End<'a> {
    started: Instant,
    started_at: SystemTime,
    job: &'a str,
    host: &'a str,
    pass: &'static str,
    log_path: Option<&'a Path>,
    /// The error log: could not be opened (or was refused), lines written.
    log: (bool, u64),
    stats_failed: bool,
    /// `--manifest`: rank 0 merges the ranks' parts into it.
    manifest: Option<&'a Path>,
    /// This rank's part of it (its inode; 0 without a manifest).
    part_ino: u64,
}

impl End<'_> {
    /// Agree on totals and the outcome; rank 0 reports. The exit status
    /// every rank returns.
    fn conclude<T: Transport + ?Sized>(
        &self,
        t: &mut T,
        (counters, hist): (&Counters, &Histograms),
        (outcome, max_hit, mut notes): (RunOutcome, bool, Vec<String>),
        ctl: &RunControl,
        args: &Settings,
    ) -> ExitStatus {
        let (log_failed, my_lines) = self.log;
        let mine = counters.snapshot();
        let mut sums = mine.to_vec();
        sums.extend([my_lines, outcome.abandoned]);
        let sums = t.all_reduce_sum(&sums);
        let (totals, lines, abandoned) = match sums.as_slice() {
            [.., l, a] => (Snapshot::from_slice(&sums), *l, *a),
            _ => (Snapshot::from_slice(&sums), 0, 0),
        };
        if abandoned > 0 {
            notes.push(format!(
                "{abandoned} queued work items were not started (stopped): the next pass does them"
            ));
        }
        if args.dry_run {
            notes
                .push("dry run: nothing was changed; the figures above are the changes due".into());
        }
        let flags = t.all_reduce_max(&[
            outcome.stopped as u64,
            max_hit as u64,
            self.stats_failed as u64,
            log_failed as u64,
        ]);
        if flags[2] != 0 {
            notes.push(
                "stats could not be delivered to memcached (the pass itself is unaffected)".into(),
            );
        }
        if flags[3] != 0 {
            notes.push(format!(
                "the error log {} could not be opened on some ranks: their errors went to stderr only",
                self.log_path.unwrap_or(Path::new("")).display()
            ));
        }
        let code = match (flags[0] != 0, flags[1] != 0) {
            (true, _) => ExitStatus::Stopped,
            (false, true) => ExitStatus::MaxDelete,
            _ if totals.errors > 0 => ExitStatus::Errors,
            _ => ExitStatus::Done,
        };
        let all = t.gather(
            postcard::to_allocvec(&RankEnd::of(self.host, mine, hist, self.part_ino))
                .unwrap_or_default(),
        );
        if t.rank() != 0 {
            return code;
        }
        let code = self.merge_manifest(&all, code, &mut notes);
        let cfg = &args.cfg;
        let shown = |p: &Option<PathBuf>| p.as_deref().map(|p| p.display().to_string());
        let summary = Summary {
            pass: self.pass.into(),
            job: self.job.into(),
            source: shown(&cfg.source_mount).unwrap_or_default(),
            target: shown(&cfg.target_mount).unwrap_or_default(),
            version: option_env!("LMPI_GIT_DESCRIBE")
                .unwrap_or(env!("CARGO_PKG_VERSION"))
                .into(),
            started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
            ended_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            status: code.outcome().into(),
            exit_code: code.code(),
            ranks: t.size(),
            threads_per_rank: ctl.threads(),
            wall_seconds: self.started.elapsed().as_secs_f64().max(1e-6),
            totals,
            error_log: self
                .log_path
                .filter(|_| lines > 0)
                .map(|p| p.display().to_string()),
            notes,
            ..Default::default()
        };
        let report_ok = report_on_rank_zero(summary, &all, args.report.as_deref());
        match code {
            ExitStatus::Done if !report_ok => ExitStatus::Errors,
            _ => code,
        }
    }
}

impl End<'_> {
    /// Rank 0, after the reductions (every rank flushed its part of the
    /// manifest before them): merge the parts. A failed merge is an error.
    fn merge_manifest(
        &self,
        all: &[Vec<u8>],
        code: ExitStatus,
        notes: &mut Vec<String>,
    ) -> ExitStatus {
        // A rank whose figures do not decode has inode 0: its part is refused.
        let inos: Vec<u64> = all
            .iter()
            .map(|b| postcard::from_bytes::<RankEnd>(b).map_or(0, |e| e.part_ino))
            .collect();
        let Some(Err(e)) = self.manifest.map(|m| crate::manifest::merge(m, &inos)) else {
            return code;
        };
        eprintln!("lmpi: error: manifest not merged (its parts stay): {e}");
        notes.push(format!("manifest not merged (its parts stay): {e}"));
        if code == ExitStatus::Done {
            ExitStatus::Errors
        } else {
            code
        }
    }
}

/// Rank 0: fold every rank's figures and histograms into the summary, print
/// it, and write the JSON report if asked. False: the report was asked for
/// and not written (said, and in the printed exit status).
fn report_on_rank_zero(mut summary: Summary, all: &[Vec<u8>], json: Option<&Path>) -> bool {
    let mut hist = Histograms::default();
    if let (Ok(s), Ok(c)) = (hist.size.get_mut(), hist.copy_us.get_mut()) {
        for (r, bytes) in all.iter().enumerate() {
            // A part that does not decode leaves that rank's row empty, not the summary.
            let end: RankEnd = postcard::from_bytes(bytes).unwrap_or_default();
            replay(s, &end.size);
            replay(c, &end.copy_us);
            summary.per_rank.push(RankFigures {
                rank: r,
                host: end.host,
                counters: end.counters,
            });
        }
    }
    let wall = summary.wall_seconds;
    summary.bytes_per_second = summary.totals.data as f64 / wall;
    summary.files_per_second = summary.totals.files as f64 / wall;
    summary.file_size_bytes = hist
        .size
        .get_mut()
        .map(|h| Percentiles::of(h))
        .unwrap_or_default();
    summary.copy_time_us = hist
        .copy_us
        .get_mut()
        .map(|h| Percentiles::of(h))
        .unwrap_or_default();
    // Written before the text is printed, so the text's exit status counts
    // a report that could not be written.
    let failed = json.and_then(|path| {
        let written = serde_json::to_vec_pretty(&summary)
            .map_err(|e| format!("cannot encode report: {e}"))
            .and_then(|b| {
                report::write_json(path, &b).map_err(|e| format!("cannot write report {e}"))
            });
        written.err()
    });
    if let Some(e) = &failed {
        eprintln!("lmpi: error: {e}");
        summary.notes.push(e.clone());
        if summary.exit_code == ExitStatus::Done.code() {
            summary.exit_code = ExitStatus::Errors.code();
            summary.status = ExitStatus::Errors.outcome().into();
        }
    }
    report::say(&summary.text());
    failed.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Empty files are 0 B in the summary, not 1 B, through the gather too.
    #[test]
    fn all_empty_files_report_zero_bytes() {
        let h = Histograms::default();
        for _ in 0..10 {
            h.record(0, 0);
        }
        let mut merged = Histograms::default();
        let size = h.size.lock().map(|s| recorded(&s)).unwrap_or_default();
        let m = merged.size.get_mut().expect("fresh histogram");
        replay(m, &size);
        let p = Percentiles::of(m);
        assert_eq!((p.count, p.p50, p.p99, p.max), (10, 0, 0, 0));
        assert_eq!(report::human_bytes(p.p50), "0 B");
        replay(m, &[(4096, 10)]);
        let p = Percentiles::of(m);
        assert_eq!((p.count, p.p50), (20, 0));
        assert!((4096..4100).contains(&p.max), "{p:?}");
    }
}
