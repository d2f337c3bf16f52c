use cudarc::driver::{LaunchConfig, PushKernelArg};
use strata_kernels_cpu::GgmlType;

use super::{as_i32, grid_1d, grid_yz, kernel_suffix, need, weight_bytes};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

impl Gpu {
    /// `n` elements of `ty` (whole blocks) in `src` to f32 in `dst`: bit-exact with
    /// `strata_kernels_cpu::dequantize`.
    pub fn dequantize(
        &self,
        ty: GgmlType,
        src: &DeviceBuffer<u8>,
        dst: &mut DeviceBuffer<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "dequantize";
        let name = format!("dequantize_{}", kernel_suffix(OP, ty)?);
        let len = dst.len();
        self.launch_dequantize(OP, ty, &name, src, dst.slice_mut(), len, n)
    }

    /// As [`Gpu::dequantize`], rounded to f16 (bits in `u16`), e.g. for an f16 GEMM.
    pub fn dequantize_to_f16(
        &self,
        ty: GgmlType,
        src: &DeviceBuffer<u8>,
        dst: &mut DeviceBuffer<u16>,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "dequantize_to_f16";
        let name = format!("dequantize_{}_to_f16", kernel_suffix(OP, ty)?);
        let len = dst.len();
        self.launch_dequantize(OP, ty, &name, src, dst.slice_mut(), len, n)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_dequantize<T>(
        &self,
        op: &'static str,
        ty: GgmlType,
        name: &str,
        src: &DeviceBuffer<u8>,
        dst: &mut cudarc::driver::CudaSlice<T>,
        dst_len: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        need(op, "src (bytes)", src.len(), weight_bytes(op, ty, n, 1)?)?;
        need(op, "dst", dst_len, n)?;
        let n64 = n as i64;
        let f = self.function("dequantize", name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(src.slice()).arg(dst).arg(&n64);
        // SAFETY: matches dequantize.cu's (src, dst, n); sizes checked above.
        unsafe { b.launch(grid_1d(n, 256)) }.during(op)?;
        Ok(())
    }

    /// dst[i] = row `ids[i]` of W (`nrows_w × ncols` of `ty`) as f32: the embedding lookup.
    /// Every id is checked against `nrows_w` here; a bad one is an error naming it.
    pub fn get_rows(
        &self,
        ty: GgmlType,
        w: &DeviceBuffer<u8>,
        ids: &[u32],
        dst: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows_w: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "get_rows";
        let name = format!("get_rows_{}", kernel_suffix(OP, ty)?);
        need(
            OP,
            "w (bytes)",
            w.len(),
            weight_bytes(OP, ty, ncols, nrows_w)?,
        )?;
        need(OP, "dst", dst.len(), ncols * ids.len())?;
        if let Some((i, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= nrows_w)
        {
            return Err(CudaError::shape(
                OP,
                format!("ids[{i}] = {id} is not below {nrows_w} rows"),
            ));
        }
        let ids_dev: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
        let ids_dev = self.upload(&ids_dev)?;
        let (nc, nr) = (as_i32(OP, "ncols", ncols)?, as_i32(OP, "nrows", nrows_w)?);
        let cfg = LaunchConfig {
            grid_dim: (
                ncols.div_ceil(256) as u32,
                grid_yz(OP, "number of ids", ids.len())?,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("dequantize", &name)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(w.slice())
            .arg(ids_dev.slice())
            .arg(dst.slice_mut())
            .arg(&nc)
            .arg(&nr);
        // SAFETY: matches get_rows_*(w, ids, dst, ncols, nrows_w); sizes and ids checked above.
        unsafe { b.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
