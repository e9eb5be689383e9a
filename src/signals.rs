//! SIGTERM/SIGINT (scancel, Ctrl-C, a signalled mpirun ending the job) ask
//! for a graceful stop; a watchdog makes sure a stop always stops.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);
/// A stop of any kind (signal or control command) has begun.
static STOPPING: AtomicBool = AtomicBool::new(false);
static GRACE_SECS: AtomicU64 = AtomicU64::new(30);
/// Who sent the first SIGTERM (0: none yet, or not sent by a process).
static TERM_SENDER: AtomicI32 = AtomicI32::new(0);
/// The watchdog says why the stop may be cut short (rank 0 only).
static SPEAK: AtomicBool = AtomicBool::new(false);
/// What the watchdog runs before it ends the process (see `on_hard_exit`).
type LastWords = Box<dyn Fn() + Send>;
static LAST_WORDS: Mutex<Vec<LastWords>> = Mutex::new(Vec::new());

/// Run `f` (on the watchdog's thread) just before a stop that overran its
/// grace ends the process: it must never block (try_lock, not lock).
pub fn on_hard_exit(f: LastWords) {
    LAST_WORDS.lock().unwrap_or_else(|p| p.into_inner()).push(f);
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if sig == libc::SIGTERM && !info.is_null() {
        // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t for
        // the duration of the handler; si_code is always set, and si_pid
        // is read only for a signal sent by kill(2) (SI_USER), which fills
        // it in.
        let pid = unsafe {
            match (*info).si_code {
                libc::SI_USER => (*info).si_pid(),
                _ => 0,
            }
        };
        let _ = TERM_SENDER.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst);
    }
    // Only lock-free atomics: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
    STOPPING.store(true, Ordering::SeqCst);
}

pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
        // SAFETY: `libc::sigaction` is integers, a sigset and an optional fn
        // pointer, for all of which zero is valid (None restorer). With
        // SA_SIGINFO the kernel calls `sa_sigaction` with (signal, siginfo,
        // context), which is `on_signal`'s signature (extern "C",
        // 'static); it only does lock-free atomic loads and stores, which
        // are async-signal-safe. sigemptyset and sigaction get pointers to
        // the live local `sa`; the old-action pointer may be NULL.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// A stop has begun (a signal, or a control command): the watchdog's clock starts.
pub fn stopping_began() {
    STOPPING.store(true, Ordering::Relaxed);
}

/// Start the watchdog: once a stop has begun, the process gets `grace` to
/// finish; past it, one line and exit status 4. Some calls cannot be
/// interrupted (open on a hung network filesystem, a read the kernel
/// restarts); the abrupt end is safe because nothing partial looks complete:
/// new files get their times last and replacements are written under
/// `.lmpi-*.part` names, which the next pass removes.
///
/// `speak`: this process (rank 0) says why a stop may be cut short.
pub fn watchdog(grace: Duration, speak: bool) {
    GRACE_SECS.store(grace.as_secs().max(1), Ordering::Relaxed);
    SPEAK.store(speak, Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name("lmpi-watchdog".into())
        .spawn(watch);
    if let Err(e) = spawned {
        eprintln!("lmpi: warning: no stop watchdog ({e}): a hung call could delay a stop");
    }
}

fn watch() {
    while !STOPPING.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let sender = TERM_SENDER.load(Ordering::SeqCst);
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    let var = |k: &str| std::env::var(k).ok();
    if let (true, Some(kill_after)) = (
        SPEAK.load(Ordering::Relaxed),
        mpirun_ending(sender, parent, var),
    ) {
        eprintln!("{}", mpirun_note(kill_after));
    }
    let grace = Duration::from_secs(GRACE_SECS.load(Ordering::Relaxed));
    let t0 = Instant::now();
    while t0.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "lmpi: stop: work still in flight {} s after the stop (a call the kernel does not \
         interrupt?); ending now, status 4 (stopped); partial files never look complete",
        grace.as_secs()
    );
    // Buffered records (the manifest) out first; never waiting on a lock.
    if let Ok(words) = LAST_WORDS.try_lock() {
        words.iter().for_each(|f| f());
    }
    // SAFETY: _exit takes an int and never returns: it ends the process at
    // once, running no destructors or atexit handlers and flushing no stdio
    // (the line above went to unbuffered stderr), so no Rust state is
    // observed half-way. Other threads simply stop with the process.
    unsafe { libc::_exit(crate::status::ExitStatus::Stopped.code()) }
}

/// Whether the SIGTERM that stopped this rank came from Open MPI's mpirun
/// (or its orted on another node) ending the job because it was signalled
/// itself (kill, Ctrl-C; under scancel the ranks' own SIGTERM comes
/// first, from Slurm): Some(its kill delay as the
/// environment sets it, None when unset). That daemon never forwards a
/// SIGTERM (only SIGTSTP, SIGCONT, SIGUSR1/2...): one from the process that
/// started this rank is always its kill sequence, SIGCONT, `delay` seconds,
/// SIGTERM, `delay` seconds, SIGKILL (`odls_base_sigkill_timeout`, 1 by
/// default in Open MPI 4).
fn mpirun_ending(
    sender: i32,
    parent: i32,
    var: impl Fn(&str) -> Option<String>,
) -> Option<Option<u64>> {
    // Set by ORTE's launch (mpirun and orted), not by srun's direct launch,
    // where the parent is slurmstepd and the kill comes after KillWait.
    let by_orte = var("OMPI_MCA_orte_launch").is_some();
    (by_orte && sender > 1 && sender == parent)
        .then(|| var("OMPI_MCA_odls_base_sigkill_timeout").and_then(|v| v.trim().parse().ok()))
}

/// mpirun's kill delay (`odls_base_sigkill_timeout`) slurm/run-pass.sh
/// sets: room for a stop, yet short enough that a signalled mpirun, which
/// forwards no output until its kill sequence is over (2 delays), is done
/// before Slurm's default KillWait (30 s) kills it under scancel.
const KILL_DELAY: u64 = 10;

/// One line: what the SIGKILL that follows means and, when its delay is
/// short, how to get a whole stop.
fn mpirun_note(kill_after: Option<u64>) -> String {
    let head = "lmpi: stop: mpirun was signalled and ends the job: it kills the ranks";
    let status = "mpirun exits 1, the ranks 4 (stopped)";
    let delay = match kill_after {
        Some(s) if s >= KILL_DELAY => return format!("{head} {s} s after this SIGTERM; {status}"),
        Some(s) => format!("{s} s"),
        None => "1 s (Open MPI's default, unless an MCA params file sets it)".to_string(),
    };
    format!(
        "{head} {delay} after this SIGTERM (odls_base_sigkill_timeout); a stop that takes \
         longer loses its summary, big files' resume records and the lock cleanup: give \
         mpirun OMPI_MCA_odls_base_sigkill_timeout={KILL_DELAY} (slurm/run-pass.sh does); \
         {status}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn only_a_sigterm_from_the_orte_daemon_is_mpirun_ending() {
        let orte = [("OMPI_MCA_orte_launch", "1")];
        assert_eq!(mpirun_ending(42, 42, env(&orte)), Some(None));
        // Someone else's kill, a kernel-sent signal, init as the parent.
        assert_eq!(mpirun_ending(7, 42, env(&orte)), None);
        assert_eq!(mpirun_ending(0, 0, env(&orte)), None);
        assert_eq!(mpirun_ending(1, 1, env(&orte)), None);
        // srun's tasks: slurmstepd is the parent and sends scancel's SIGTERM.
        assert_eq!(mpirun_ending(42, 42, env(&[])), None);
        let set = [
            ("OMPI_MCA_orte_launch", "1"),
            ("OMPI_MCA_odls_base_sigkill_timeout", "35"),
        ];
        assert_eq!(mpirun_ending(42, 42, env(&set)), Some(Some(35)));
        assert!(mpirun_note(Some(35)).contains("35 s after"));
        assert!(!mpirun_note(Some(10)).contains("give"));
        assert!(mpirun_note(Some(5)).contains("ranks 5 s after"));
        assert!(mpirun_note(Some(5)).contains("timeout=10 "));
        assert!(mpirun_note(None).contains("ranks 1 s (Open MPI's default"));
    }
}
