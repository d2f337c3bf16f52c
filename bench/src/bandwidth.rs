//! The machine's read bandwidth, STREAM-like: the rate at which the cores sum a buffer far
//! larger than the last-level cache. The yardstick for `bench kernels` (beside each matvec)
//! and for `bench split`'s bandwidth model (what a token's weights should take to read).

use std::time::Instant;

use strata_engine::huge::HugeBytes;

/// The buffer the reference reads. On huge pages, as the weights and the engine's buffers:
/// on this VM one core reads 18-20 GB/s from 2 MiB pages and only 12-14 from 4 KiB ones
/// (two-level page walks), so a 4 KiB reference would understate what the engine's memory
/// gives. Every word different: identical pages may be merged by the host under a VM, and
/// then the reads hit one physical page in cache.
pub struct Stream(HugeBytes);

impl Stream {
    /// `mib` MiB, or an error naming `flag` if the size overflows or the system refuses it.
    pub fn new(mib: usize, flag: &str) -> Result<Stream, String> {
        let mut buf = mib
            .checked_mul(1 << 20)
            .and_then(HugeBytes::try_zeroed)
            .ok_or_else(|| format!("{flag} {mib}: cannot allocate {mib} MiB"))?;
        for (i, w) in buf.bytes_mut().chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&splitmix(i as u64).to_le_bytes());
        }
        Ok(Stream(buf))
    }

    pub fn words(&self) -> &[u64] {
        bytemuck::cast_slice(self.0.bytes())
    }
}

/// The read bandwidth (bytes/s) of one pass over `stream` on the current rayon pool's
/// threads, plain or prefetched, whichever was faster.
pub fn read_once(stream: &Stream) -> f64 {
    let [plain, prefetched] = read_pass(stream.words());
    plain.max(prefetched)
}

/// Bytes per second read by summing `buf` (split over the pool's threads) in one pass,
/// plainly and then with software prefetch (the matvec kernels prefetch; a reference that
/// did not would understate what the memory gives them): `[plain, prefetched]`.
pub fn read_pass(buf: &[u64]) -> [f64; 2] {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let chunk = buf.len().div_ceil(threads);
    [false, true].map(|prefetch| {
        let start = Instant::now();
        let sum: u64 = buf.par_chunks(chunk).map(|c| sum_words(c, prefetch)).sum();
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        std::mem::size_of_val(buf) as f64 / secs
    })
}

/// Sum of the words: with AVX2, four 32-byte loads per step into independent
/// accumulators (as fast as the core can issue loads, so the loop is bound by memory),
/// optionally prefetching 3 KiB ahead as the kernels do; otherwise eight scalar lanes.
fn sum_words(c: &[u64], prefetch: bool) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        return unsafe { sum_words_avx2(c, prefetch) };
    }
    let _ = prefetch;
    let mut acc = [0u64; 8];
    let mut it = c.chunks_exact(8);
    for w in &mut it {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(w[k]);
        }
    }
    acc.iter()
        .chain(it.remainder())
        .fold(0u64, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_words_avx2(c: &[u64], prefetch: bool) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut chunks = c.chunks_exact(16);
    for w in &mut chunks {
        let p = w.as_ptr().cast::<__m256i>();
        if prefetch {
            // A prefetch never faults: reaching past the buffer is harmless.
            let ahead = w.as_ptr().cast::<i8>().wrapping_add(3072);
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
        }
        acc[0] = _mm256_add_epi64(acc[0], _mm256_loadu_si256(p));
        acc[1] = _mm256_add_epi64(acc[1], _mm256_loadu_si256(p.add(1)));
        acc[2] = _mm256_add_epi64(acc[2], _mm256_loadu_si256(p.add(2)));
        acc[3] = _mm256_add_epi64(acc[3], _mm256_loadu_si256(p.add(3)));
    }
    let mut lanes = [0u64; 4];
    let total = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), total);
    lanes
        .iter()
        .chain(chunks.remainder())
        .fold(0u64, |a, &b| a.wrapping_add(b))
}

/// SplitMix64's output function: distinct inputs give well-mixed distinct words.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
