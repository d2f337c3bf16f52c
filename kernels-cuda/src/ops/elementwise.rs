use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, grid_1d, need};
use crate::error::{CudaError, DriverContext};
use crate::{DeviceBuffer, Gpu};

impl Gpu {
    /// `a[..n] += b[..n]`.
    pub fn add(
        &self,
        a: &mut DeviceBuffer<f32>,
        b: &DeviceBuffer<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("add", "b", b.len(), n)?;
        self.launch_add("add", a, b, n, n)
    }

    /// Adds `bias` to each of the `n / bias.len()` rows at the start of `a` (a bias after a
    /// matrix product).
    pub fn add_rows(
        &self,
        a: &mut DeviceBuffer<f32>,
        bias: &DeviceBuffer<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "add_rows";
        if bias.is_empty() || !n.is_multiple_of(bias.len()) {
            return Err(CudaError::shape(
                OP,
                format!("{n} values are not whole rows of {}", bias.len()),
            ));
        }
        self.launch_add(OP, a, bias, n, bias.len())
    }

    fn launch_add(
        &self,
        op: &'static str,
        a: &mut DeviceBuffer<f32>,
        b: &DeviceBuffer<f32>,
        n: usize,
        period: usize,
    ) -> Result<(), CudaError> {
        need(op, "a", a.len(), n)?;
        let (n64, p64) = (n as i64, period.max(1) as i64);
        let f = self.function("elementwise", "add")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(a.slice_mut()).arg(b.slice()).arg(&n64).arg(&p64);
        // SAFETY: matches add(a, b, n, period); a holds n and b at least period elements.
        unsafe { l.launch(grid_1d(n, 256)) }.during(op)?;
        Ok(())
    }

    /// `out[..n] = silu(gate[..n]) · up[..n]`.
    pub fn swiglu(
        &self,
        gate: &DeviceBuffer<f32>,
        up: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "swiglu";
        need(OP, "gate", gate.len(), n)?;
        need(OP, "up", up.len(), n)?;
        need(OP, "out", out.len(), n)?;
        let n64 = n as i64;
        let f = self.function("elementwise", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(gate.slice())
            .arg(up.slice())
            .arg(out.slice_mut())
            .arg(&n64);
        // SAFETY: matches swiglu(gate, up, out, n); every buffer holds n elements.
        unsafe { l.launch(grid_1d(n, 256)) }.during(OP)?;
        Ok(())
    }

    /// Rows `t` of `src` (`ntok` rows of `row_len` f32) to f16 bits at row `pos[t]` of
    /// `dst` (whole rows of `row_len`): keys or values into an f16 KV cache at their
    /// positions. A position past `dst`'s rows writes nothing (the kernel checks).
    pub fn store_rows_f16(
        &self,
        src: &DeviceBuffer<f32>,
        dst: &mut DeviceBuffer<u16>,
        pos: &DeviceBuffer<i32>,
        row_len: usize,
        ntok: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "store_rows_f16";
        if row_len == 0 || !dst.len().is_multiple_of(row_len) {
            return Err(CudaError::shape(
                OP,
                format!("dst of {} is not whole rows of {row_len}", dst.len()),
            ));
        }
        need(OP, "src", src.len(), row_len * ntok)?;
        need(OP, "pos", pos.len(), ntok)?;
        let (rl, nt, nr) = (
            row_len as i64,
            as_i32(OP, "ntok", ntok)?,
            as_i32(OP, "rows", dst.len() / row_len)?,
        );
        let f = self.function("elementwise", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(src.slice())
            .arg(dst.slice_mut())
            .arg(pos.slice())
            .arg(&rl)
            .arg(&nt)
            .arg(&nr);
        // SAFETY: matches store_rows_f16(src, dst, pos, row_len, ntok, n_ctx); src and pos
        // sizes checked above, dst rows bounded in the kernel.
        unsafe { l.launch(grid_1d(row_len * ntok, 256)) }.during(OP)?;
        Ok(())
    }

    /// Softmax of each of `nrows` rows of `ncols`, in place.
    pub fn softmax(
        &self,
        x: &mut DeviceBuffer<f32>,
        ncols: usize,
        nrows: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "softmax";
        need(OP, "x", x.len(), ncols * nrows)?;
        let nc = as_i32(OP, "ncols", ncols)?;
        let cfg = LaunchConfig {
            grid_dim: (as_i32(OP, "nrows", nrows)?.max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = self.function("softmax", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(x.slice_mut()).arg(&nc);
        // SAFETY: matches softmax(x, ncols); size checked above.
        unsafe { l.launch(cfg) }.during(OP)?;
        Ok(())
    }
}
