//! The CPU thread pool a command runs its work in.

/// Stack of each pool thread: a command's whole run happens on one of them, so it gets
/// what a main thread gets on Linux (rayon's default is 2 MiB).
const STACK_BYTES: usize = 8 << 20;

/// Builds the global rayon pool with `threads` workers (rayon's default, one per core,
/// when `None`) and runs `op` on one of its workers, returning its result.
///
/// A parallel op started from outside the pool hands its work to a worker and sleeps until
/// it is done: two futex wake-ups and two context switches per op, and a transformer token
/// runs hundreds of ops (attention's per-head loop, the matvecs' row split). Started on a
/// worker it runs in place, sharing the work with the other workers. `generate` on
/// SmolLM2 Q4_1, from the main thread → on a worker (3 interleaved runs): decode, 1
/// thread 164–171 → 187–201 tokens/s, 2 threads 258–271 → 331–344; prefill of 128 tokens
/// 828–850 → 949–1011 and 1159–1172 → 1279–1330; the same text.
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
