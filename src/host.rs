//! Facts about the node a rank runs on: its name (for messages, the error
//! log prefix and the control bridge's worker name) and its CPU binding.

/// The host name, or "unknown" if the kernel will not say.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its full length; gethostname NUL-terminates
    // within it or truncates, and we stop at the first NUL or the end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// CPUs this process may run on, and CPUs online.
fn cpus() -> Option<(usize, usize)> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set for sched_getaffinity to fill.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `set` was filled by the kernel above.
    let bound = unsafe { libc::CPU_COUNT(&set) } as usize;
    // SAFETY: sysconf has no memory effects.
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
