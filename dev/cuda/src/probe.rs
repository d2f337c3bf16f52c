//! kernels/probe.cu's reference kernels for `cuda-bench`: an empty launch, and a pure read of
//! a buffer at the best a kernel can do (coalesced 16-byte loads, each thread's issued
//! together). They put a matvec's time beside the floor of any launch and the time of reading
//! the same bytes with nothing else to do.

use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cuda::{CudaError, DeviceBuffer, Gpu};

const OP: &str = "probe";
/// probe.cu's PROBE_THREADS and PROBE_LOADS: a CTA reads 256 · 4 words of 16 bytes.
const THREADS: usize = 256;
const LOADS: usize = 4;
const WORD: usize = 16;

fn driver(err: cudarc::driver::DriverError) -> CudaError {
    CudaError::Driver { op: OP, err }
}

fn shape(what: String) -> CudaError {
    CudaError::Shape { op: OP, what }
}

/// Length of the sums buffer [`read_words`] needs for `bytes` bytes: one u32 per warp.
pub fn read_probe_sums(bytes: usize) -> usize {
    (bytes / WORD).div_ceil(THREADS * LOADS).max(1) * (THREADS / 32)
}

/// One launch of a kernel that does nothing (a single thread).
pub fn empty_kernel(gpu: &Gpu) -> Result<(), CudaError> {
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = gpu.kernel(crate::module("probe")?, "empty")?;
    // SAFETY: the kernel takes no arguments and touches no memory.
    unsafe { gpu.stream().launch_builder(&f).launch(cfg) }.map_err(driver)?;
    Ok(())
}

/// Reads all of `data` (its length a multiple of 16 bytes) once; `sums` (at least
/// [`read_probe_sums`] elements) gets, per warp, the wrapping sum of the little-endian u32
/// words that warp read, and those sums add up (wrapping) to the sum of every u32 of `data`.
pub fn read_words(
    gpu: &Gpu,
    data: &DeviceBuffer<u8>,
    sums: &mut DeviceBuffer<u32>,
) -> Result<(), CudaError> {
    let bytes = data.len();
    if bytes == 0 || !bytes.is_multiple_of(WORD) {
        return Err(shape(format!(
            "read_words takes a whole number of 16-byte words, not {bytes} bytes"
        )));
    }
    let need = read_probe_sums(bytes);
    if sums.len() < need {
        return Err(shape(format!(
            "sums holds {} elements, needs {need}",
            sums.len()
        )));
    }
    let words = (bytes / WORD) as i64;
    let ctas = u32::try_from((bytes / WORD).div_ceil(THREADS * LOADS))
        .map_err(|_| shape(format!("{bytes} bytes need too many CTAs")))?;
    let cfg = LaunchConfig {
        grid_dim: (ctas, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = gpu.kernel(crate::module("probe")?, "read_words")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(data.slice()).arg(&words).arg(sums.slice_mut());
    // SAFETY: (words, n, sums) as probe.cu takes them; the kernel reads only words < n (data
    // is a whole allocation, 256-byte aligned) and writes one sum per warp, which `sums`
    // holds (checked above).
    unsafe { b.launch(cfg) }.map_err(driver)?;
    Ok(())
}
