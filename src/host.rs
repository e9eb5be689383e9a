//! Facts about the node a rank runs on: its name (for messages, the error
//! log prefix and the control bridge's worker name) and its CPU binding.

/// The host name, or "unknown" if the kernel will not say.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`, a live
    // local of exactly that length; it may leave no NUL when it truncates,
    // but the name is then read only up to the first NUL or the buffer's end.
    // Nothing else is read or written.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// CPUs this process may run on, and CPUs online.
fn cpus() -> Option<(usize, usize)> {
    // SAFETY: `cpu_set_t` is an array of integers; all zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most the size passed, which is exactly
    // size_of::<cpu_set_t>(), into `set`, a live, exclusively borrowed local;
    // pid 0 means this thread, which needs no privilege.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: CPU_COUNT only counts the bits of the `cpu_set_t` it is given by
    // reference, here an initialised local (zeroed, then filled above).
    let bound = unsafe { libc::CPU_COUNT(&set) } as usize;
    // SAFETY: sysconf takes an int and returns a long (-1 if unknown, which
    // `.max(1)` absorbs); it reads and writes no memory of ours.
    let sys = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(bound)
        .max(sys);
    Some((bound, online))
}

/// Launchers bind ranks to cores by default; then all I/O threads of a rank
/// share one core. Say so once, with the cure.
pub fn binding_note(threads: usize) -> Option<String> {
    let (bound, online) = cpus()?;
    (bound < online && bound < threads).then(|| {
        format!(
            "this rank is bound to {bound} of {online} CPUs for {threads} I/O threads; \
             start with `mpirun --bind-to none` or `srun --cpu-bind=none` to let them spread"
        )
    })
}

/// The default `max_threads_per_rank`: eight per core, at least 64, at most
/// `THREADS_LIMIT`. The threads mostly wait on metadata round trips (0.1-1 ms
/// on Lustre), so even a small node runs dozens well; beyond that they only
/// add memory and contention.
pub fn default_max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores
        .saturating_mul(8)
        .clamp(64, crate::engine::THREADS_LIMIT)
}
