//! Zeroed byte buffers on transparent huge pages: where the weights a device computes from
//! live (`backend::host`), and what `bench kernels` measures in, so that both see the
//! same pages.

use bytemuck::{Pod, Zeroable};

/// 32 bytes, 16-aligned: the unit of a buffer. Every tensor offset is a multiple of the
/// file's alignment (32), so each tensor is at least 16-aligned, more than any kernel needs
/// (they take any alignment; f32 vectors need 4). Not 32: the allocator zeroes an
/// over-aligned (> 16) allocation by writing it, which faults its pages in as 4 KiB pages
/// before [`HugeBytes::try_zeroed`] can ask for huge ones.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(16))]
struct Chunk([u8; 32]);

/// Zeroed bytes, allocated zeroed (fresh pages, not written here) and, on Linux, marked
/// for transparent huge pages before anything touches them: weights copied into such a
/// buffer are streamed through at every token, and 2 MiB pages spare the page walks of
/// 4 KiB ones (decode and read-bandwidth gains in docs/engine-speed.md).
pub struct HugeBytes {
    chunks: Vec<Chunk>,
    len: usize,
}

impl HugeBytes {
    /// `len` zeroed bytes, or `None` if the allocator refuses them (the caller says so: a
    /// refused allocation is a message, never an abort).
    pub fn try_zeroed(len: usize) -> Option<HugeBytes> {
        let n = len.div_ceil(32);
        let chunks: Vec<Chunk> = bytemuck::try_zeroed_vec(n).ok()?;
        #[cfg(target_os = "linux")]
        {
            let (start, bytes) = (chunks.as_ptr() as usize, n * 32);
            let page = 4096;
            let (lo, hi) = (start.next_multiple_of(page), (start + bytes) / page * page);
            if hi > lo {
                // SAFETY: advice on pages of this live allocation; MADV_HUGEPAGE changes how
                // they are backed, never their contents. Best effort: an error leaves 4 KiB
                // pages.
                unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
            }
        }
        Some(HugeBytes { chunks, len })
    }

    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.chunks)[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.chunks)[..self.len]
    }
}
