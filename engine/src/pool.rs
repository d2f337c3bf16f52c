//! The CPU thread pool a command runs its work in.

/// Stack of each pool thread: a command's whole run happens on one of them, so it gets
/// what a main thread gets on Linux (rayon's default is 2 MiB).
const STACK_BYTES: usize = 8 << 20;

/// The worker count for `-t`: all cores by default; 0 is an error; more than the cores is
/// cut to them with a note (more threads than CPUs only take turns spinning, hundreds of
/// times slower).
pub fn thread_count(requested: Option<usize>) -> Result<usize, String> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    match requested {
        Some(0) => Err("--threads must be at least 1".into()),
        Some(t) if t > cores => {
            eprintln!("note: -t {t} is more than the {cores} CPUs here; using {cores}");
            Ok(cores)
        }
        Some(t) => Ok(t),
        None => Ok(cores),
    }
}

/// Builds the global rayon pool with `threads` workers (rayon's default, one per core,
/// when `None`) and runs `op` on one of its workers, returning its result.
///
/// A parallel op started from outside the pool hands its work over and sleeps (two futex
/// wake-ups a time; a token runs hundreds of ops); started on a worker it runs in place.
/// The decode and prefill gains are in docs/engine-speed.md ("What changed").
pub fn on_pool<R: Send>(
    threads: Option<usize>,
    op: impl FnOnce() -> Result<R, String> + Send,
) -> Result<R, String> {
    let mut builder = rayon::ThreadPoolBuilder::new().stack_size(STACK_BYTES);
    if let Some(t) = threads {
        builder = builder.num_threads(t);
    }
    builder.build_global().map_err(|e| match threads {
        Some(t) => format!("cannot start {t} threads: {e}"),
        None => format!("cannot start the thread pool: {e}"),
    })?;
    rayon::scope(|_| op())
}
