//! The slice kernels, written once over the vector primitives each level module defines:
//! `V`, `L` (lanes), `ld`, `ld_h` (f16 → f32), `st`, `splat`, `vadd`, `vsub`, `vmul`, `vdiv`,
//! `fma(a, b, c) = a·b + c`, `vmax`, `vmin`, `hsum`, `hmax`, `round` (to nearest),
//! `pow2i` (2ⁿ for an integral n in [-126, 127]), `swap_pairs` ([a, b, c, d] → [b, a, d, c])
//! and `hsum4` (the horizontal sums of four vectors).
//!
//! Tails shorter than a vector are done in scalar code with the same formulas.

/// Expands to the kernels, each with the attributes given (the level's target features).
macro_rules! slice_kernels {
    ($(#[$m:meta])*) => {
        use half::f16;

        /// e^x for every lane: Cody–Waite range reduction x = n·ln2 + r (|r| ≤ ln2/2) and
        /// Cephes' degree-7 polynomial for e^r, then a multiply by 2ⁿ. Relative error about
        /// 2 ulp in float arithmetic; inputs are clamped so that 2ⁿ stays a normal float
        /// (below -87.3 the result is 2⁻¹²⁶ instead of a subnormal or zero).
        $(#[$m])*
        #[inline]
        unsafe fn exp_v(x: V) -> V {
            const LOG2E: f32 = std::f32::consts::LOG2_E;
            // ln 2 split so that n·LN2_HI is exact for |n| ≤ 2⁹.
            const LN2_HI: f32 = 0.693_359_4;
            const LN2_LO: f32 = -2.121_944_4e-4;
            let x = vmin(vmax(x, splat(-87.336_54)), splat(88.376_26));
            let n = round(vmul(x, splat(LOG2E)));
            let r = fma(n, splat(-LN2_HI), x);
            let r = fma(n, splat(-LN2_LO), r);
            let mut p = splat(1.987_569_1e-4);
            p = fma(p, r, splat(1.398_199_9e-3));
            p = fma(p, r, splat(8.333_452e-3));
            p = fma(p, r, splat(4.166_579_6e-2));
            p = fma(p, r, splat(1.666_666_5e-1));
            p = fma(p, r, splat(0.5));
            let e = vadd(fma(p, vmul(r, r), r), splat(1.0));
            vmul(e, pow2i(n))
        }

        $(#[$m])*
        pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len();
            assert!(b.len() >= n);
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = [splat(0.0); 4];
            let mut i = 0;
            while i + 4 * L <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o = i + k * L;
                    *acc = fma(ld(pa.add(o)), ld(pb.add(o)), *acc);
                }
                i += 4 * L;
            }
            while i + L <= n {
                acc[0] = fma(ld(pa.add(i)), ld(pb.add(i)), acc[0]);
                i += L;
            }
            let mut s = hsum(vadd(vadd(acc[0], acc[1]), vadd(acc[2], acc[3])));
            for j in i..n {
                s += a[j] * b[j];
            }
            s
        }

        $(#[$m])*
        unsafe fn dot_h(a: &[f32], b: *const f16) -> f32 {
            let n = a.len();
            let pa = a.as_ptr();
            let mut acc = [splat(0.0); 4];
            let mut i = 0;
            while i + 4 * L <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o = i + k * L;
                    *acc = fma(ld(pa.add(o)), ld_h(b.add(o)), *acc);
                }
                i += 4 * L;
            }
            while i + L <= n {
                acc[0] = fma(ld(pa.add(i)), ld_h(b.add(i)), acc[0]);
                i += L;
            }
            let mut s = hsum(vadd(vadd(acc[0], acc[1]), vadd(acc[2], acc[3])));
            for j in i..n {
                s += a[j] * (*b.add(j)).to_f32();
            }
            s
        }

        $(#[$m])*
        pub(super) unsafe fn sum_sq(x: &[f32]) -> f32 {
            dot(x, x)
        }

        $(#[$m])*
        pub(super) unsafe fn max(x: &[f32]) -> f32 {
            let n = x.len();
            let p = x.as_ptr();
            let mut m = f32::NEG_INFINITY;
            let mut i = 0;
            if n >= L {
                let mut acc = ld(p);
                i = L;
                while i + L <= n {
                    acc = vmax(acc, ld(p.add(i)));
                    i += L;
                }
                m = hmax(acc);
            }
            for &v in &x[i..] {
                m = m.max(v);
            }
            m
        }

        $(#[$m])*
        pub(super) unsafe fn scale(y: &mut [f32], a: f32) {
            let n = y.len();
            let p = y.as_mut_ptr();
            let va = splat(a);
            let mut i = 0;
            while i + L <= n {
                st(p.add(i), vmul(ld(p.add(i)), va));
                i += L;
            }
            for v in &mut y[i..] {
                *v *= a;
            }
        }

        /// out = (x·s)·w, in that order, as ggml's RMSNorm rounds it.
        $(#[$m])*
        pub(super) unsafe fn mul_scale(x: &[f32], s: f32, w: &[f32], out: &mut [f32]) {
            let n = out.len();
            assert!(x.len() == n && w.len() == n);
            let (px, pw, po) = (x.as_ptr(), w.as_ptr(), out.as_mut_ptr());
            let vs = splat(s);
            let mut i = 0;
            while i + L <= n {
                st(po.add(i), vmul(vmul(ld(px.add(i)), vs), ld(pw.add(i))));
                i += L;
            }
            for j in i..n {
                out[j] = x[j] * s * w[j];
            }
        }

        $(#[$m])*
        pub(super) unsafe fn add(a: &mut [f32], b: &[f32]) {
            let n = a.len();
            assert!(b.len() == n);
            let (pa, pb) = (a.as_mut_ptr(), b.as_ptr());
            let mut i = 0;
            while i + L <= n {
                st(pa.add(i), vadd(ld(pa.add(i)), ld(pb.add(i))));
                i += L;
            }
            for j in i..n {
                a[j] += b[j];
            }
        }

        /// out = silu(gate)·up with silu(g) = g / (1 + e^(−g)), as ggml writes it.
        $(#[$m])*
        pub(super) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
            let n = out.len();
            assert!(gate.len() == n && up.len() == n);
            let (pg, pu, po) = (gate.as_ptr(), up.as_ptr(), out.as_mut_ptr());
            let one = splat(1.0);
            let mut i = 0;
            while i + L <= n {
                let g = ld(pg.add(i));
                let silu = vdiv(g, vadd(one, exp_v(vsub(splat(0.0), g))));
                st(po.add(i), vmul(silu, ld(pu.add(i))));
                i += L;
            }
            for j in i..n {
                out[j] = gate[j] / (1.0 + (-gate[j]).exp()) * up[j];
            }
        }

        /// x ← e^(x − m) for every element; returns the sum of the new values.
        $(#[$m])*
        pub(super) unsafe fn exp_shift_sum(x: &mut [f32], m: f32) -> f32 {
            let n = x.len();
            let p = x.as_mut_ptr();
            let vm = splat(m);
            let mut acc = splat(0.0);
            let mut i = 0;
            while i + L <= n {
                let e = exp_v(vsub(ld(p.add(i)), vm));
                st(p.add(i), e);
                acc = vadd(acc, e);
                i += L;
            }
            let mut s = hsum(acc);
            for v in &mut x[i..] {
                *v = (*v - m).exp();
                s += *v;
            }
            s
        }

        /// NeoX rotation: (x0, x1) ← (x0·c − x1·s, x0·s + x1·c), element by element.
        $(#[$m])*
        pub(super) unsafe fn rotate_halves(x0: &mut [f32], x1: &mut [f32], cos: &[f32], sin: &[f32]) {
            let n = x0.len();
            assert!(x1.len() == n && cos.len() == n && sin.len() == n);
            let (p0, p1, pc, ps) = (x0.as_mut_ptr(), x1.as_mut_ptr(), cos.as_ptr(), sin.as_ptr());
            let mut i = 0;
            while i + L <= n {
                let (a, b) = (ld(p0.add(i)), ld(p1.add(i)));
                let (c, s) = (ld(pc.add(i)), ld(ps.add(i)));
                st(p0.add(i), vsub(vmul(a, c), vmul(b, s)));
                st(p1.add(i), fma(a, s, vmul(b, c)));
                i += L;
            }
            for j in i..n {
                let (a, b) = (x0[j], x1[j]);
                x0[j] = a * cos[j] - b * sin[j];
                x1[j] = a * sin[j] + b * cos[j];
            }
        }

        /// Normal (adjacent pairs) rotation with tables cos2 = [c₀, c₀, c₁, c₁, …] and
        /// sin2 = [−s₀, s₀, −s₁, s₁, …]: x ← x·cos2 + swap_pairs(x)·sin2.
        $(#[$m])*
        pub(super) unsafe fn rotate_adjacent(x: &mut [f32], cos2: &[f32], sin2: &[f32]) {
            let n = x.len();
            assert!(n % 2 == 0 && cos2.len() == n && sin2.len() == n);
            let (p, pc, ps) = (x.as_mut_ptr(), cos2.as_ptr(), sin2.as_ptr());
            let mut i = 0;
            while i + L <= n {
                let v = ld(p.add(i));
                st(p.add(i), fma(swap_pairs(v), ld(ps.add(i)), vmul(v, ld(pc.add(i)))));
                i += L;
            }
            while i < n {
                let (a, b) = (x[i], x[i + 1]);
                x[i] = a * cos2[i] + b * sin2[i];
                x[i + 1] = b * cos2[i + 1] + a * sin2[i + 1];
                i += 2;
            }
        }

        /// dst (rows of d, contiguous) ← the f16 rows src[r·stride ..][.. d], as f32.
        $(#[$m])*
        pub(super) unsafe fn convert_f16_rows(src: &[f16], stride: usize, d: usize, dst: &mut [f32]) {
            assert!(d > 0 && dst.len() % d == 0);
            let rows = dst.len() / d;
            assert!(rows == 0 || src.len() >= (rows - 1) * stride + d);
            let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
            for r in 0..rows {
                let (s, o) = (ps.add(r * stride), pd.add(r * d));
                let mut c = 0;
                while c + L <= d {
                    st(o.add(c), ld_h(s.add(c)));
                    c += L;
                }
                for c in c..d {
                    *o.add(c) = (*s.add(c)).to_f32();
                }
            }
        }

        /// out[j] = scale · (q · keys[j·stride ..][.. q.len()]) for j < out.len().
        $(#[$m])*
        pub(super) unsafe fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
            let (n, d) = (out.len(), q.len());
            assert!(n == 0 || keys.len() >= (n - 1) * stride + d);
            let pk = keys.as_ptr();
            scores_by(q, out, scale, |j, c| ld(pk.add(j * stride + c)), |j| {
                dot(q, keys.get_unchecked(j * stride..j * stride + d))
            });
        }

        $(#[$m])*
        pub(super) unsafe fn scores_f16(q: &[f32], keys: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
            let (n, d) = (out.len(), q.len());
            assert!(n == 0 || keys.len() >= (n - 1) * stride + d);
            let pk = keys.as_ptr();
            scores_by(q, out, scale, |j, c| ld_h(pk.add(j * stride + c)), |j| dot_h(q, pk.add(j * stride)));
        }

        /// Four keys at a time when head_dim is whole vectors: one accumulator per key, and
        /// one reduction (`hsum4`) for all four instead of four horizontal sums.
        $(#[$m])*
        #[inline]
        unsafe fn scores_by(
            q: &[f32],
            out: &mut [f32],
            scale: f32,
            load: impl Fn(usize, usize) -> V,
            dot1: impl Fn(usize) -> f32,
        ) {
            let (n, d) = (out.len(), q.len());
            let pq = q.as_ptr();
            let mut j = 0;
            if d % L == 0 {
                while j + 4 <= n {
                    let mut acc = [splat(0.0); 4];
                    let mut c = 0;
                    while c < d {
                        let qv = ld(pq.add(c));
                        for (k, acc) in acc.iter_mut().enumerate() {
                            *acc = fma(qv, load(j + k, c), *acc);
                        }
                        c += L;
                    }
                    let s = hsum4(acc);
                    for k in 0..4 {
                        out[j + k] = scale * s[k];
                    }
                    j += 4;
                }
            }
            for j in j..n {
                out[j] = scale * dot1(j);
            }
        }

        /// out += Σⱼ p[j] · vals[j·stride ..][.. out.len()]. Columns are done in chunks of
        /// four vectors kept in registers across all j.
        $(#[$m])*
        pub(super) unsafe fn weighted_sum(p: &[f32], vals: &[f32], stride: usize, out: &mut [f32]) {
            let (n, d) = (p.len(), out.len());
            assert!(n == 0 || vals.len() >= (n - 1) * stride + d);
            let pv = vals.as_ptr();
            weighted_sum_by(p, d, out, |j, c| ld(pv.add(j * stride + c)), |j, c| vals[j * stride + c]);
        }

        $(#[$m])*
        pub(super) unsafe fn weighted_sum_f16(p: &[f32], vals: &[f16], stride: usize, out: &mut [f32]) {
            let (n, d) = (p.len(), out.len());
            assert!(n == 0 || vals.len() >= (n - 1) * stride + d);
            let pv = vals.as_ptr();
            weighted_sum_by(p, d, out, |j, c| ld_h(pv.add(j * stride + c)), |j, c| vals[j * stride + c].to_f32());
        }

        $(#[$m])*
        #[inline]
        unsafe fn weighted_sum_by(
            p: &[f32],
            d: usize,
            out: &mut [f32],
            load: impl Fn(usize, usize) -> V,
            load1: impl Fn(usize, usize) -> f32,
        ) {
            let po = out.as_mut_ptr();
            let mut c = 0;
            while c + 4 * L <= d {
                let mut acc = [0, 1, 2, 3].map(|k| ld(po.add(c + k * L)));
                for (j, &pj) in p.iter().enumerate() {
                    let w = splat(pj);
                    for (k, acc) in acc.iter_mut().enumerate() {
                        *acc = fma(w, load(j, c + k * L), *acc);
                    }
                }
                for (k, acc) in acc.iter().enumerate() {
                    st(po.add(c + k * L), *acc);
                }
                c += 4 * L;
            }
            while c + L <= d {
                let mut acc = ld(po.add(c));
                for (j, &pj) in p.iter().enumerate() {
                    acc = fma(splat(pj), load(j, c), acc);
                }
                st(po.add(c), acc);
                c += L;
            }
            for col in c..d {
                let mut s = out[col];
                for (j, &pj) in p.iter().enumerate() {
                    s += pj * load1(j, col);
                }
                out[col] = s;
            }
        }
    };
}
