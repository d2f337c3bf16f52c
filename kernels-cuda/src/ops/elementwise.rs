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

    /// `n` f32 from `src` to f16 bits at `dst[offset..offset + n]` (e.g. a token's keys into
    /// an f16 KV cache at its position).
    pub fn convert_f32_to_f16(
        &self,
        src: &DeviceBuffer<f32>,
        dst: &mut DeviceBuffer<u16>,
        offset: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "convert_f32_to_f16";
        need(OP, "src", src.len(), n)?;
        need(OP, "dst", dst.len(), offset + n)?;
        let n64 = n as i64;
        let mut view = dst.slice_mut().slice_mut(offset..offset + n);
        let f = self.function("elementwise", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(src.slice()).arg(&mut view).arg(&n64);
        // SAFETY: matches convert_f32_to_f16(src, dst, n); the view has exactly n elements.
        unsafe { l.launch(grid_1d(n, 256)) }.during(OP)?;
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
