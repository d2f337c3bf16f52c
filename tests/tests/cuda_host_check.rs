//! The CUDA kernels' per-format arithmetic (kernels-cuda/kernels/formats.cuh: dequant_<fmt>
//! and the dp4a dot_<fmt> of the matvec kernels) and the quantized matvec kernels' own steps
//! (matvec_lane.cuh: each thread's staging of x, each lane's loop over its units of each
//! row) compiled as host C++ and checked against golden data, so that a layout, indexing or
//! bit-twiddling mistake shows up on machines with no GPU. The device primitives are swapped
//! for exact host equivalents (host-check/host_shim.hpp); what this cannot check (launch
//! shapes, shared memory as the hardware does it, warp shuffles, the driver's JIT) is left
//! to cuda_kernels.rs on a GPU. Skipped where no C++ compiler is installed.
//!
//! The mixture-of-experts, MLA and attention kernels (moe.cu, matvec_experts.cu, mla.cu,
//! attention.cu) run whole on the host (kernels_check.cpp: each CTA's threads as host
//! threads, with their barriers, warp shuffles and shared memory) against kernels-cpu's
//! `route_ref`, `mla_attention_ref` and `attention_ref`, the exact product of each chosen
//! expert, and the sort and sums worked out here. The grouped matmul (tensor-core PTX) runs only on a GPU.

use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use strata_kernels_cpu::ops::{attention_ref, Gating, KvCache, KvType};
use strata_kernels_cpu::{dequantize, quantize, GgmlType};
use strata_kernels_cuda::MlaDims;
use strata_tests::cuda_check::{
    build_host_checker, check_route, f32s, le_bytes, offsets16, randn, random_expert_ids,
    random_q8_1_case, rng, route_cases, run_host_checker, same_bits, sort_ref, u32s,
    weighted_sum_ref, weights, AbsorbCase, KernelsChecker, MlaCase, MlaPrepCase, U,
};
use strata_tests::golden;

#[test]
fn format_arithmetic_matches_golden_on_the_host() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_host_check");
    let Some(exe) = build_host_checker(&dir, "formats_check", &[]) else {
        return;
    };

    for ty in GgmlType::WEIGHTS {
        // dequant_<fmt>: bit for bit with golden (as the CPU reference is).
        let case = golden::dequant_case(ty).unwrap_or_else(|e| panic!("{e}"));
        let n = case.values.len();
        let (deq, _) = run_host_checker(&exe, &dir, ty, 1, n, &case.blocks, &[]);
        for (i, (&got, &want)) in deq.iter().zip(&case.values).enumerate() {
            assert!(
                same_bits(got, want),
                "{ty} dequant element {i} (block {}): {got:e} vs golden {want:e}",
                case.label(i / ty.block_size()),
            );
        }
        assert_eq!(deq.len(), n);

        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            continue;
        }
        // The matvec kernel's steps over a row (its lanes' dot_<fmt> terms), on q8_1
        // activations.
        for case in golden::matvec_cases(ty).unwrap_or_else(|e| panic!("{e}")) {
            let (rows, cols) = (case.rows, case.cols);
            let mut xq = vec![0u8; cols / 32 * 36];
            quantize(GgmlType::Q8_1, &case.x, &mut xq).unwrap();
            let mut xhat = vec![0.0f32; cols];
            dequantize(GgmlType::Q8_1, &xq, &mut xhat).unwrap();
            let (wf, y) = run_host_checker(&exe, &dir, ty, rows, cols, &case.w, &xq);
            // Legacy formats: golden y_q (same activation blocks, Q4_1/Q5_1 with the f16
            // s). K-quants take Σxq exactly: the f64 product of dequantized W and x̂.
            let want = |r: usize, exact: f64| {
                if ty.is_k_quant() {
                    exact
                } else {
                    case.y_q[r]
                }
            };
            check_rows(ty, rows, cols, &case.w, &wf, &xhat, &y, want);
        }

        // Synthetic matrices, against the exact product (not Q4_1/Q5_1: their kernels take the
        // min times q8_1's f16-rounded s, as ggml pairs them, which the golden y_q covers):
        // rows wide enough that lanes take two or three units (the kernel's unrolled loop and
        // its remainder; 3 rows: a warp of two rows with one past the end), and for 2-byte
        // aligned blocks an odd number of them, so that the matrix ends 2 bytes past a 4-byte
        // boundary: the last block's reads must stop at its end (AddressSanitizer, where the
        // checker was built with it, fails the run on a read past the buffer).
        if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            let wide = if ty.block_size() == 32 { 71 } else { 9 } * ty.block_size();
            let mut shapes = vec![(3, wide)];
            if ty.type_size() % 4 == 2 {
                shapes.push((3, 3 * ty.block_size()));
            }
            let mut r = ChaCha8Rng::seed_from_u64(ty.id() as u64);
            for (rows, cols) in shapes {
                let (w, xq) = random_q8_1_case(&mut r, ty, rows, cols);
                let mut xhat = vec![0.0f32; cols];
                dequantize(GgmlType::Q8_1, &xq, &mut xhat).unwrap();
                let (wf, y) = run_host_checker(&exe, &dir, ty, rows, cols, &w, &xq);
                check_rows(ty, rows, cols, &w, &wf, &xhat, &y, |_, exact| exact);
            }
        }
    }
}

/// Each row's host dot product against `want(row, exact f64 product of W and x̂)`.
#[allow(clippy::too_many_arguments)]
fn check_rows(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    w: &[u8],
    wf: &[f32],
    xhat: &[f32],
    y: &[f32],
    want: impl Fn(usize, f64) -> f64,
) {
    for r in 0..rows {
        let wr = &wf[r * cols..(r + 1) * cols];
        let exact = wr
            .iter()
            .zip(xhat)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum::<f64>();
        let want = want(r, exact);
        // nsub terms summed in order, each ≤ 4 roundings over a scale part and an offset
        // part bounded by Σ(|w| + |b|)|x̂| and |b|·Σ|x̂| (b: the offset of each group of 16,
        // w = a·q + b): (nsub + 4)·u·Σ(|w| + 2|b|)|x̂|.
        let row_bytes = cols / ty.block_size() * ty.type_size();
        let mut mag = 0.0f64;
        for blk in 0..cols / ty.block_size() {
            let bytes = &w[r * row_bytes + blk * ty.type_size()..][..ty.type_size()];
            let b = offsets16(ty, bytes);
            for e in 0..ty.block_size() {
                let i = blk * ty.block_size() + e;
                mag += (f64::from(wr[i]).abs() + 2.0 * b[e / 16].abs()) * f64::from(xhat[i]).abs();
            }
        }
        let tol = ((cols / 32) as f64 + 4.0) * U * mag + U * want.abs() + f64::MIN_POSITIVE;
        let diff = (f64::from(y[r]) - want).abs();
        assert!(
            diff <= tol,
            "{ty} {rows}x{cols} row {r}: host dot {} vs {want} (|diff| {diff:e} > {tol:e})",
            y[r]
        );
    }
}

/// The kernels checker, built in a folder of the test's own (the tests run in parallel).
fn kernels_checker(test: &str) -> Option<KernelsChecker> {
    KernelsChecker::build(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test))
}

#[test]
fn moe_route_matches_route_ref_on_the_host() {
    let Some(k) = kernels_checker("host_moe_route") else {
        return;
    };
    for case in route_cases() {
        let r = &case.router;
        let (n_group, group_used) = r.groups.unwrap_or((0, 0));
        let args: Vec<String> = [
            "route".to_string(),
            r.n_expert.to_string(),
            r.n_used.to_string(),
            case.ntok.to_string(),
            u8::from(r.gating == Gating::Sigmoid).to_string(),
            u8::from(r.norm).to_string(),
            r.scale.to_string(),
            n_group.to_string(),
            group_used.to_string(),
            u8::from(case.bias.is_some()).to_string(),
        ]
        .into();
        let mut inputs = vec![("logits.bin", le_bytes(&case.logits))];
        if let Some(b) = &case.bias {
            inputs.push(("bias.bin", le_bytes(b)));
        }
        let out = k.run(&args, &inputs, &["ids.bin", "weights.bin"]);
        check_route(
            &case,
            &u32s(&out[0]),
            &f32s(&out[1]),
            true,
            "host moe_route",
        );
    }
}

#[test]
fn expert_matvec_is_each_slot_s_expert_on_the_host() {
    let Some(k) = kernels_checker("host_matvec_experts") else {
        return;
    };
    let mut r = rng(12);
    // 19 rows: a partial last CTA (16 rows a CTA for the legacy formats, 8 for the K-quants).
    let (n_expert, nrows, ncols) = (5, 19, 512);
    for ty in GgmlType::WEIGHTS {
        let stack = weights(&mut r, ty, n_expert * nrows, ncols);
        let expert_bytes = stack.len() / n_expert;
        let mut wf = vec![0.0f32; n_expert * nrows * ncols];
        dequantize(ty, &stack, &mut wf).unwrap();
        let quant = !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        // Two tokens' three choices sharing each token's x (the gate and up projections),
        // then six slots of their own x (the down projection), one with an id past the stack.
        for (ids, slots_per_x) in [
            (vec![4u32, 0, 2, 1, 4, 3], 3),
            (vec![4u32, 0, 2, 5, 4, 1], 1),
        ] {
            let n_slot = ids.len();
            let nx = n_slot / slots_per_x;
            let x = randn(&mut r, nx * ncols, 1.0);
            let (xbytes, xhat) = if quant {
                let mut xq = vec![0u8; nx * ncols / 32 * 36];
                quantize(GgmlType::Q8_1, &x, &mut xq).unwrap();
                let mut xhat = vec![0.0f32; nx * ncols];
                dequantize(GgmlType::Q8_1, &xq, &mut xhat).unwrap();
                (xq, xhat)
            } else {
                (le_bytes(&x), x.clone())
            };
            let args: Vec<String> = [
                "experts".to_string(),
                ty.name().to_ascii_lowercase(),
                n_expert.to_string(),
                nrows.to_string(),
                ncols.to_string(),
                n_slot.to_string(),
                slots_per_x.to_string(),
            ]
            .into();
            let inputs = [
                ("w.bin", stack.clone()),
                ("ids.bin", le_bytes(&ids)),
                ("x.bin", xbytes),
            ];
            let out = k.run(&args, &inputs, &["y.bin", "dense.bin"]);
            let (y, dense) = (f32s(&out[0]), f32s(&out[1]));
            for (s, &id) in ids.iter().enumerate() {
                let ys = &y[s * nrows..(s + 1) * nrows];
                if id as usize >= n_expert {
                    assert!(
                        ys.iter().all(|v| v.is_nan()),
                        "{ty} slot {s}: id {id} must give NaN rows"
                    );
                    continue;
                }
                // The dense kernel on the chosen expert's matrix: the same bits.
                for (i, (&g, &d)) in ys.iter().zip(&dense[s * nrows..]).enumerate() {
                    assert!(
                        same_bits(g, d),
                        "{ty} slot {s} (expert {id}) row {i}: {g:e} vs matvec {d:e}"
                    );
                }
                // And the exact product of the expert's weights and x̂ (Q4_1/Q5_1 take the min
                // times q8_1's f16 s, which golden covers: the dense kernel's test).
                let e = id as usize;
                let we = &stack[e * expert_bytes..(e + 1) * expert_bytes];
                let wfe = &wf[e * nrows * ncols..(e + 1) * nrows * ncols];
                let xs = &xhat[(s / slots_per_x) * ncols..][..ncols];
                if quant && !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    check_rows(ty, nrows, ncols, we, wfe, xs, ys, |_, exact| exact);
                } else if !quant {
                    for (i, &g) in ys.iter().enumerate() {
                        let terms = wfe[i * ncols..(i + 1) * ncols]
                            .iter()
                            .zip(xs)
                            .map(|(&a, &b)| f64::from(a) * f64::from(b));
                        let (want, mag) = terms.fold((0.0, 0.0), |(s, m), v| (s + v, m + v.abs()));
                        // ncols products and sums in any order, and the f32 result.
                        let tol = (ncols + 1) as f64 * U * mag + U * f64::abs(want);
                        assert!(
                            (f64::from(g) - want).abs() <= tol,
                            "{ty} slot {s} (expert {id}) row {i}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn moe_sort_gather_and_weighted_sum_on_the_host() {
    let Some(k) = kernels_checker("host_moe_sort") else {
        return;
    };
    let mut r = rng(13);
    // A small batch; and the most experts with more slots than one tile of the sort (2048),
    // some ids out of range.
    let mut big = random_expert_ids(&mut r, 600, 5, 256);
    big[7] = 300;
    big[2000] = 256;
    for (ids, n_expert, kk) in [(random_expert_ids(&mut r, 37, 4, 20), 20, 4), (big, 256, 5)] {
        let n = ids.len();
        let ntok = n / kk;
        let args = ["sort".to_string(), n.to_string(), n_expert.to_string()];
        let out = k.run(
            &args,
            &[("ids.bin", le_bytes(&ids))],
            &["offsets.bin", "perm.bin", "inv.bin"],
        );
        let (offsets, perm, inv) = sort_ref(&ids, n_expert);
        assert_eq!(u32s(&out[0]), offsets, "offsets ({n_expert} experts)");
        assert_eq!(u32s(&out[1]), perm, "perm ({n_expert} experts)");
        assert_eq!(u32s(&out[2]), inv, "inv ({n_expert} experts)");
        if n_expert == 256 {
            continue; // the rows' kernels on the small batch only (one CTA a row)
        }

        // Gather: the token rows in sorted order (200 columns: threads take two or one); a
        // permutation entry past the tokens gives a NaN row.
        let ncols = 200;
        let x = randn(&mut r, ntok * ncols, 1.0);
        let mut bad_perm = perm.clone();
        bad_perm[1] = (ntok * kk) as u32;
        let args: Vec<String> = [
            "gather",
            &ncols.to_string(),
            &ntok.to_string(),
            &n.to_string(),
            &kk.to_string(),
        ]
        .map(String::from)
        .into();
        let out = k.run(
            &args,
            &[("x.bin", le_bytes(&x)), ("perm.bin", le_bytes(&bad_perm))],
            &["xg.bin"],
        );
        let xg = f32s(&out[0]);
        for (p, &s) in perm.iter().enumerate() {
            let got = &xg[p * ncols..(p + 1) * ncols];
            if p == 1 {
                assert!(
                    got.iter().all(|v| v.is_nan()),
                    "gather: row past x must be NaN"
                );
                continue;
            }
            let want = &x[(s as usize / kk) * ncols..][..ncols];
            assert!(
                got.iter().zip(want).all(|(&a, &b)| same_bits(a, b)),
                "gather row {p}"
            );
        }

        // Weighted sums, through the inverse permutation (prefill) and of slots in order
        // (decode): the same products and sums in the same order as here, so the same bits;
        // a row past y gives NaN.
        let y = randn(&mut r, n * ncols, 2.0);
        let w = randn(&mut r, n, 1.0);
        let mut rows = inv.clone();
        rows[0] = n as u32;
        for with_rows in [true, false] {
            let args: Vec<String> = [
                "wsum",
                &ncols.to_string(),
                &kk.to_string(),
                &ntok.to_string(),
                &n.to_string(),
                if with_rows { "1" } else { "0" },
            ]
            .map(String::from)
            .into();
            let inputs = [
                ("y.bin", le_bytes(&y)),
                ("rows.bin", le_bytes(&rows)),
                ("weights.bin", le_bytes(&w)),
            ];
            let got = f32s(&k.run(&args, &inputs, &["out.bin"])[0]);
            let want = weighted_sum_ref(&y, with_rows.then_some(&inv[..]), &w, (ncols, kk, ntok));
            for (i, (&g, &h)) in got.iter().zip(&want).enumerate() {
                if with_rows && i < ncols {
                    assert!(g.is_nan(), "weighted sum: token 0 reads a row past y");
                } else {
                    assert!(
                        same_bits(g, h),
                        "weighted sum (rows: {with_rows}) {i}: {g:e} vs {h:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn mla_attention_matches_mla_attention_ref_on_the_host() {
    let Some(k) = kernels_checker("host_mla") else {
        return;
    };
    // DeepSeek's rows (64 + 512) with 6 heads (a partial CTA of heads) and two tokens; narrow
    // rows with 9 heads, positions clamped to the cache and the first position alone; a
    // width and value part that are not whole warps.
    let cases = [
        MlaCase::new(1, (6, 576, 64), 80, vec![40, 79]),
        MlaCase::new(2, (9, 48, 16), 50, vec![0, 100, 17]),
        MlaCase::new(3, (4, 100, 36), 10, vec![9]),
    ];
    // Each case's cache alone, and as the second of two sequences in one buffer (its rows
    // from row n_ctx, after another sequence's), as the GPU holds several sequences.
    for case in cases {
        let s = case.shape();
        let n_ctx = case.cache.n_ctx();
        let mine: Vec<u8> = case
            .cache_bits()
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect();
        let other: Vec<u8> = (0..mine.len())
            .map(|i| (i * 7 % 251) as u8 & 0x3b)
            .collect();
        for seq in 0..2 {
            let args: Vec<String> = [
                "mla".to_string(),
                s.n_tokens.to_string(),
                s.n_heads.to_string(),
                case.width.to_string(),
                s.v_off.to_string(),
                n_ctx.to_string(),
                ((seq + 1) * n_ctx).to_string(),
                s.scale.to_string(),
            ]
            .into();
            let cache = match seq {
                0 => mine.clone(),
                _ => [other.clone(), mine.clone()].concat(),
            };
            let base = vec![(seq * n_ctx) as i32; case.pos.len()];
            let inputs = [
                ("q.bin", le_bytes(&case.q)),
                ("cache.bin", cache),
                ("pos.bin", le_bytes(&case.pos)),
                ("base.bin", le_bytes(&base)),
            ];
            let got = f32s(&k.run(&args, &inputs, &["out.bin"])[0]);
            case.check(
                &got,
                &format!("host mla width {}, sequence {seq}", case.width),
            );
        }
    }
}

#[test]
fn mla_cache_rows_and_query_split_match_the_cpu_on_the_host() {
    let Some(k) = kernels_checker("host_mla_prep") else {
        return;
    };
    // DeepSeek's widths with 3 heads (the host grid is slow), and the narrow cases.
    for (what, case) in MlaPrepCase::cases(3) {
        let (dims, n_ctx) = (case.dims, case.n_ctx);
        let what = format!("host {what}");
        let ntok = case.pos.len().to_string();
        // Into a cache of one sequence, and into the second sequence of two (rows from
        // n_ctx on; the first sequence's rows untouched).
        let width = dims.pe + dims.kvr;
        for seq in 0..2 {
            let mut args = vec![
                "store".to_string(),
                ntok.clone(),
                dims.kvr.to_string(),
                dims.pe.to_string(),
                n_ctx.to_string(),
                ((seq + 1) * n_ctx).to_string(),
                case.eps.to_string(),
            ];
            args.extend(case.rope_args());
            let base = vec![(seq * n_ctx) as i32; case.pos.len()];
            let inputs = [
                ("kv.bin", le_bytes(&case.kv)),
                ("norm.bin", le_bytes(&case.norm)),
                ("pos.bin", le_bytes(&case.pos)),
                ("base.bin", le_bytes(&base)),
                ("cache0.bin", vec![0u8; 2 * (seq + 1) * n_ctx * width]),
            ];
            let cache = k.run(&args, &inputs, &["cache.bin"]).remove(0);
            let bits: Vec<u16> = cache
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            let (before, mine) = bits.split_at(seq * n_ctx * width);
            assert!(
                before.iter().all(|&b| b == 0),
                "{what}: another sequence's rows"
            );
            case.check_cache(mine, &format!("{what}, sequence {seq}"));
        }

        let mut args = vec![
            "splitq".to_string(),
            ntok,
            dims.n_heads.to_string(),
            dims.nope.to_string(),
            dims.pe.to_string(),
        ];
        args.extend(case.rope_args());
        let inputs = [
            ("q.bin", le_bytes(&case.q)),
            ("pos.bin", le_bytes(&case.pos)),
        ];
        let out = k.run(&args, &inputs, &["qn.bin", "q_pe.bin"]);
        case.check_split(&f32s(&out[0]), &f32s(&out[1]), &what);
    }
}

#[test]
fn mla_transposed_absorption_matches_the_formula_on_the_host() {
    let Some(k) = kernels_checker("host_mla_absorb") else {
        return;
    };
    // An older file's attn_kv_b k rows: F16 as the golden files store it, the legacy and
    // K-quant formats quantized files use; slots that are not whole tokens of heads.
    let dims = MlaDims {
        n_heads: 3,
        nope: 40,
        pe: 0,
        kvr: 512,
    };
    let types = [
        GgmlType::F16,
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    for (i, ty) in types.into_iter().enumerate() {
        let case = AbsorbCase::new(200 + i as u64, ty, dims, 7);
        let args: Vec<String> = [
            "absorb".to_string(),
            ty.name().to_ascii_lowercase(),
            case.n_slot.to_string(),
            dims.n_heads.to_string(),
            dims.nope.to_string(),
            dims.kvr.to_string(),
        ]
        .into();
        let inputs = [("w.bin", case.w.clone()), ("x.bin", le_bytes(&case.x))];
        let lat = f32s(&k.run(&args, &inputs, &["lat.bin"])[0]);
        case.check(&lat, "host mla_absorb_t");
    }
}

/// A batch of tokens of two sequences, interleaved, over one cache buffer holding both
/// (each sequence's rows from its base row, as the GPU holds several sequences): each
/// token's output is `attention_ref` over its own sequence's cache, within the GPU test's
/// bound (`cuda_kernels.rs`); a base outside the buffer attends to nothing.
#[test]
fn attention_over_two_sequences_in_one_cache_matches_the_cpu_on_the_host() {
    let Some(k) = kernels_checker("host_gqa") else {
        return;
    };
    let (nhead, nkv, head_dim, n_ctx) = (6, 2, 64, 40);
    let kv_dim = nkv * head_dim;
    let mut r = rng(12);
    let caches: Vec<KvCache> = (0..2)
        .map(|_| {
            let mut c = KvCache::new(KvType::F16, n_ctx, nkv, head_dim);
            let (ks, vs) = (
                randn(&mut r, n_ctx * kv_dim, 1.0),
                randn(&mut r, n_ctx * kv_dim, 1.0),
            );
            c.append(0, &ks, &vs).unwrap();
            c
        })
        .collect();
    // (sequence, position) of each token; the last one's base is past the buffer.
    let tokens = [(1, 39), (0, 0), (0, 17), (1, 5), (0, 39), (2, 3)];
    let ntok = tokens.len();
    let q = randn(&mut r, ntok * nhead * head_dim, 1.0);
    let cat = |f: fn(&KvCache) -> Vec<u8>| -> Vec<u8> { caches.iter().flat_map(f).collect() };
    let pos: Vec<i32> = tokens.iter().map(|&(_, p)| p as i32).collect();
    let base: Vec<i32> = tokens.iter().map(|&(s, _)| (s * n_ctx) as i32).collect();
    let scale = 1.0 / (head_dim as f32).sqrt();
    let args: Vec<String> = [
        "gqa".to_string(),
        ntok.to_string(),
        nhead.to_string(),
        nkv.to_string(),
        head_dim.to_string(),
        n_ctx.to_string(),
        (2 * n_ctx).to_string(),
        scale.to_string(),
    ]
    .into();
    let inputs = [
        ("q.bin", le_bytes(&q)),
        ("k.bin", cat(|c| c.keys().as_bytes().to_vec())),
        ("v.bin", cat(|c| c.values().as_bytes().to_vec())),
        ("pos.bin", le_bytes(&pos)),
        ("base.bin", le_bytes(&base)),
    ];
    let got = f32s(&k.run(&args, &inputs, &["out.bin"])[0]);
    let width = nhead * head_dim;
    for (t, &(seq, p)) in tokens.iter().enumerate() {
        let got = &got[t * width..(t + 1) * width];
        let Some(cache) = caches.get(seq) else {
            assert!(
                got.iter().all(|&x| x == 0.0),
                "token {t}: a base past the cache"
            );
            continue;
        };
        let mut want = vec![0.0f32; width];
        attention_ref(
            &q[t * width..(t + 1) * width],
            cache,
            p,
            1,
            nhead,
            &mut want,
        );
        // As the GPU test's bound: scores of head_dim products, weights, the output.
        let hd = head_dim as f64;
        let score = (hd + 2.0) * U * hd.sqrt();
        let tol = 2.0 * score + ((p + 1 + 8) as f64 + 4.0) * U;
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(g) - f64::from(w)).abs() <= tol,
                "token {t} (sequence {seq}, position {p}) value {i}: {g} vs {w} (tol {tol:e})"
            );
        }
    }
}
