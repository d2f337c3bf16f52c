//! The machine's int8 peak, measured: what the quantized matmuls could do at most. Every
//! quantized format's prefill product runs on int8 dot products (VNNI's `vpdpbusd` at this
//! ISA level: 64 multiply-adds of u8 × i8 into i32 per instruction), so the peak is a
//! tight loop of them on independent accumulators, one per thread of the pool.

use std::time::Instant;

/// Multiply-adds per thread per measurement (enough for a few milliseconds).
const ROUNDS: u64 = 1 << 22;
/// Independent accumulators: more than the instruction's latency × throughput, so the loop
/// is bound by issue, not by the dependency chain.
const CHAINS: usize = 12;

/// Integer operations per second (a multiply-add counted as two, as a matmul's FLOP/s
/// counts them) of `pool`'s threads running `vpdpbusd` at once; `None` where the CPU has
/// no AVX-512 VNNI.
pub fn int8_peak(pool: &rayon::ThreadPool) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
            return None;
        }
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            // SAFETY: the features the function needs were detected above.
            let sums = pool.broadcast(|_| unsafe { vnni_chains(ROUNDS) });
            best = best.min(start.elapsed().as_secs_f64());
            std::hint::black_box(sums);
        }
        let threads = pool.current_num_threads() as f64;
        Some(threads * (ROUNDS * CHAINS as u64 * 64 * 2) as f64 / best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = pool;
        None
    }
}

/// `rounds` × `CHAINS` `vpdpbusd` on registers only; returns a sum so none is optimised
/// away.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn vnni_chains(rounds: u64) -> i64 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_epi8(3);
    let b = std::hint::black_box(_mm512_set1_epi8(-2));
    let mut acc = [_mm512_setzero_si512(); CHAINS];
    for _ in 0..rounds {
        for c in acc.iter_mut() {
            *c = _mm512_dpbusd_epi32(*c, a, b);
        }
    }
    acc.iter().map(|c| _mm512_reduce_add_epi32(*c) as i64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_computes_what_it_counts() {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
            // Each instruction adds 64 × (3 × −2) = −384 over the 16 lanes of a chain.
            // SAFETY: the features were detected above.
            let sum = unsafe { vnni_chains(5) };
            assert_eq!(sum, 5 * CHAINS as i64 * -384);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            assert!(int8_peak(&pool).unwrap() > 1e9);
        }
    }
}
