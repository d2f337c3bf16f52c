//! The key/value cache of one attention layer: `[n_ctx][n_kv_heads][head_dim]` for K and
//! the same for V, in f32 or f16.

use super::OpError;
use half::{f16, slice::HalfFloatSliceExt};

/// The element type of a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvType {
    F32,
    F16,
}

impl KvType {
    pub const fn bytes_per_element(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }
}

/// K or V of a cache, whole (`n_ctx × n_kv_heads × head_dim`; positions past
/// [`KvCache::len`] hold stale or zero values).
#[derive(Debug, Clone, Copy)]
pub enum KvView<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl KvView<'_> {
    /// The raw little-endian bytes (what a device copy takes).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            KvView::F32(s) => bytemuck::cast_slice(s),
            KvView::F16(s) => bytemuck::cast_slice(s),
        }
    }
}

#[derive(Debug, Clone)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Store {
    /// `n` zeroed elements, or `None` if the allocator refuses them.
    fn try_new(ty: KvType, n: usize) -> Option<Store> {
        Some(match ty {
            KvType::F32 => Store::F32(bytemuck::try_zeroed_vec(n).ok()?),
            KvType::F16 => Store::F16(bytemuck::try_zeroed_vec(n).ok()?),
        })
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F32(s) => s[at..at + src.len()].copy_from_slice(src),
            // Round to nearest even, as ggml's fp32→fp16 does.
            Store::F16(s) => s[at..at + src.len()].convert_from_f32_slice(src),
        }
    }

    fn view(&self) -> KvView<'_> {
        match self {
            Store::F32(s) => KvView::F32(s),
            Store::F16(s) => KvView::F16(s),
        }
    }

    /// The first `n` elements of `src`, a store of the same type, copied here.
    fn copy_prefix(&mut self, src: &Store, n: usize) {
        match (self, src) {
            (Store::F32(d), Store::F32(s)) => d[..n].copy_from_slice(&s[..n]),
            (Store::F16(d), Store::F16(s)) => d[..n].copy_from_slice(&s[..n]),
            _ => unreachable!("caches of one shape have stores of one type"),
        }
    }
}

/// The end of `count` positions written at `pos` into a cache of `n_ctx` that holds `len`:
/// they must fit, and start no later than the first unfilled position.
fn span(pos: usize, count: usize, len: usize, n_ctx: usize) -> Result<usize, OpError> {
    let end = pos + count;
    if end > n_ctx {
        return Err(OpError::ContextFull {
            start: pos,
            end,
            n_ctx,
        });
    }
    if pos > len {
        return Err(OpError::KvGap { pos, len });
    }
    Ok(end)
}

/// The end of a copy of `len` positions from a cache holding `src_len` into one of `n_ctx`.
fn copied(len: usize, src_len: usize, n_ctx: usize) -> Result<usize, OpError> {
    if len > src_len {
        return Err(OpError::KvGap {
            pos: len,
            len: src_len,
        });
    }
    span(0, len, 0, n_ctx)
}

/// One layer's KV cache. Positions `0..len()` hold the keys and values appended so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    ty: KvType,
    n_ctx: usize,
    n_kv_heads: usize,
    head_dim: usize,
    len: usize,
    k: Store,
    v: Store,
}

impl KvCache {
    /// A zeroed cache of `n_ctx` positions. Allocates exactly [`KvCache::bytes`] of K and V.
    /// Panics if the memory cannot be had; a loader uses [`KvCache::try_new`].
    pub fn new(ty: KvType, n_ctx: usize, n_kv_heads: usize, head_dim: usize) -> KvCache {
        KvCache::try_new(ty, n_ctx, n_kv_heads, head_dim).unwrap_or_else(|| {
            panic!("KvCache: cannot allocate {n_ctx} positions of {n_kv_heads} × {head_dim}")
        })
    }

    /// [`KvCache::new`], or `None` where the allocator refuses the memory (or its size does
    /// not fit the address space), so that the caller can say so instead of aborting.
    pub fn try_new(
        ty: KvType,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Option<KvCache> {
        assert!(
            n_kv_heads > 0 && head_dim > 0,
            "KvCache: n_kv_heads and head_dim must be > 0"
        );
        let n = n_ctx.checked_mul(n_kv_heads)?.checked_mul(head_dim)?;
        Some(KvCache {
            ty,
            n_ctx,
            n_kv_heads,
            head_dim,
            len: 0,
            k: Store::try_new(ty, n)?,
            v: Store::try_new(ty, n)?,
        })
    }

    /// Bytes of K plus V that [`KvCache::new`] allocates for these dimensions (the planner
    /// sizes memory with this same function).
    pub const fn bytes(ty: KvType, n_ctx: usize, n_kv_heads: usize, head_dim: usize) -> usize {
        2 * n_ctx * n_kv_heads * head_dim * ty.bytes_per_element()
    }

    pub fn ty(&self) -> KvType {
        self.ty
    }
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    /// Elements per position: n_kv_heads × head_dim.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the keys and values of `k.len() / kv_dim` tokens (each `n_kv_heads × head_dim`)
    /// at positions `pos..`; the cache then holds positions `0..pos + n_tokens` (anything
    /// after them is dropped, so a caller can rewind by appending at an earlier position).
    ///
    /// Errors if the positions do not fit `n_ctx` or would leave a gap after `len()`.
    pub fn append(&mut self, pos: usize, k: &[f32], v: &[f32]) -> Result<(), OpError> {
        let kv_dim = self.kv_dim();
        assert!(
            k.len() == v.len() && k.len().is_multiple_of(kv_dim),
            "KvCache::append: k has {} and v {} elements, expected whole tokens of {kv_dim}",
            k.len(),
            v.len()
        );
        let end = span(pos, k.len() / kv_dim, self.len, self.n_ctx)?;
        self.k.write(pos * kv_dim, k);
        self.v.write(pos * kv_dim, v);
        self.len = end;
        Ok(())
    }

    /// Forgets every position (the memory stays allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Becomes a copy of the first `len` positions of `src`, a cache of the same type and
    /// shape (another sequence's, sharing a prompt).
    pub fn copy_from(&mut self, src: &KvCache, len: usize) -> Result<(), OpError> {
        assert!(
            (self.ty, self.n_kv_heads, self.head_dim) == (src.ty, src.n_kv_heads, src.head_dim),
            "KvCache::copy_from: caches of different shapes"
        );
        let end = copied(len, src.len, self.n_ctx)?;
        self.k.copy_prefix(&src.k, end * self.kv_dim());
        self.v.copy_prefix(&src.v, end * self.kv_dim());
        self.len = end;
        Ok(())
    }

    pub fn keys(&self) -> KvView<'_> {
        self.k.view()
    }
    pub fn values(&self) -> KvView<'_> {
        self.v.view()
    }
}

/// One MLA layer's cache (DeepSeek's multi-head latent attention): per position one row of
/// `width` values, the rotary key first and then the compressed latent, which serves as
/// every head's key (the whole row) and value (the latent part). No per-head K or V.
#[derive(Debug, Clone)]
pub struct LatentCache {
    ty: KvType,
    n_ctx: usize,
    width: usize,
    len: usize,
    rows: Store,
}

impl LatentCache {
    /// A zeroed cache of `n_ctx` rows, or `None` where the allocator refuses the memory.
    pub fn try_new(ty: KvType, n_ctx: usize, width: usize) -> Option<LatentCache> {
        assert!(width > 0, "LatentCache: width must be > 0");
        Some(LatentCache {
            ty,
            n_ctx,
            width,
            len: 0,
            rows: Store::try_new(ty, n_ctx.checked_mul(width)?)?,
        })
    }

    /// Bytes [`LatentCache::try_new`] allocates (the planner sizes memory with this).
    pub const fn bytes(ty: KvType, n_ctx: usize, width: usize) -> usize {
        n_ctx * width * ty.bytes_per_element()
    }

    pub fn ty(&self) -> KvType {
        self.ty
    }
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    /// Values per position.
    pub fn width(&self) -> usize {
        self.width
    }
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `rows.len() / width` rows at positions `pos..`, as [`KvCache::append`] does.
    pub fn append(&mut self, pos: usize, rows: &[f32]) -> Result<(), OpError> {
        assert!(
            rows.len().is_multiple_of(self.width),
            "LatentCache::append: {} values are not whole rows of {}",
            rows.len(),
            self.width
        );
        let end = span(pos, rows.len() / self.width, self.len, self.n_ctx)?;
        self.rows.write(pos * self.width, rows);
        self.len = end;
        Ok(())
    }

    /// Forgets every position (the memory stays allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Becomes a copy of the first `len` rows of `src`, as [`KvCache::copy_from`].
    pub fn copy_from(&mut self, src: &LatentCache, len: usize) -> Result<(), OpError> {
        assert!(
            (self.ty, self.width) == (src.ty, src.width),
            "LatentCache::copy_from: caches of different shapes"
        );
        let end = copied(len, src.len, self.n_ctx)?;
        self.rows.copy_prefix(&src.rows, end * self.width);
        self.len = end;
        Ok(())
    }

    pub fn rows(&self) -> KvView<'_> {
        self.rows.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, salt: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + salt).sin()).collect()
    }

    fn f32s(v: KvView) -> Vec<f32> {
        match v {
            KvView::F32(s) => s.to_vec(),
            KvView::F16(s) => s.iter().map(|h| h.to_f32()).collect(),
        }
    }

    #[test]
    fn a_copied_prefix_holds_the_sources_positions_and_drops_its_own() {
        for ty in [KvType::F32, KvType::F16] {
            let (n_ctx, heads, hd) = (8, 2, 4);
            let kv_dim = heads * hd;
            let mut src = KvCache::new(ty, n_ctx, heads, hd);
            src.append(0, &values(5 * kv_dim, 0.0), &values(5 * kv_dim, 1.0))
                .unwrap();
            let mut dst = KvCache::new(ty, n_ctx, heads, hd);
            dst.append(0, &values(7 * kv_dim, 2.0), &values(7 * kv_dim, 3.0))
                .unwrap();
            dst.copy_from(&src, 3).unwrap();
            assert_eq!(dst.len(), 3, "{ty:?}");
            let n = 3 * kv_dim;
            assert_eq!(f32s(dst.keys())[..n], f32s(src.keys())[..n], "{ty:?}");
            assert_eq!(f32s(dst.values())[..n], f32s(src.values())[..n], "{ty:?}");
            // More positions than the source holds: an error naming them.
            let e = dst.copy_from(&src, 6).unwrap_err();
            assert!(matches!(e, OpError::KvGap { pos: 6, len: 5 }), "{e}");

            let mut lsrc = LatentCache::try_new(ty, n_ctx, 6).unwrap();
            lsrc.append(0, &values(4 * 6, 0.5)).unwrap();
            let mut ldst = LatentCache::try_new(ty, n_ctx, 6).unwrap();
            ldst.copy_from(&lsrc, 4).unwrap();
            assert_eq!(ldst.len(), 4);
            assert_eq!(f32s(ldst.rows())[..24], f32s(lsrc.rows())[..24]);
            assert!(ldst.copy_from(&lsrc, 5).is_err());
        }
    }
}
