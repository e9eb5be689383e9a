//! SIGTERM/SIGINT (scancel, Ctrl-C, mpirun forwarding) ask for a graceful
//! stop; a watchdog makes sure a stop always stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);
/// A stop of any kind (signal or control command) has begun.
static STOPPING: AtomicBool = AtomicBool::new(false);
static GRACE_SECS: AtomicU64 = AtomicU64::new(30);
/// What the watchdog runs before it ends the process (see `on_hard_exit`).
type LastWords = Box<dyn Fn() + Send>;
static LAST_WORDS: Mutex<Vec<LastWords>> = Mutex::new(Vec::new());

/// Run `f` (on the watchdog's thread) just before a stop that overran its
/// grace ends the process: it must never block (try_lock, not lock).
pub fn on_hard_exit(f: LastWords) {
    LAST_WORDS.lock().unwrap_or_else(|p| p.into_inner()).push(f);
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
    STOPPING.store(true, Ordering::Relaxed);
}

pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
        // SAFETY: `libc::sigaction` is integers, a sigset and an optional fn
        // pointer, for all of which zero is valid (None restorer). Without
        // SA_SIGINFO the kernel calls `sa_sigaction` as a one-int handler,
        // which `on_signal` is (extern "C", 'static); it only stores to
        // lock-free atomics, which is async-signal-safe. sigemptyset and
        // sigaction get pointers to the live local `sa`; the old-action
        // pointer may be NULL.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
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
pub fn watchdog(grace: Duration) {
    GRACE_SECS.store(grace.as_secs().max(1), Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name("lmpi-watchdog".into())
        .spawn(watch);
    if let Err(e) = spawned {
        eprintln!("lmpi: warning: no stop watchdog ({e}): a hung call could delay a stop");
    }
}

fn watch() {
    while !STOPPING.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
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
