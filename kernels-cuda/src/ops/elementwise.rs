use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{as_i32, grid_1d, need, q8_1_grid};
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

    /// `a[offset..offset + n] += b[..n]`: a part's result added into rows further down a
    /// buffer (the other launchers read and write from a buffer's start).
    pub fn add_at(
        &self,
        a: &mut DeviceBuffer<f32>,
        offset: usize,
        b: &DeviceBuffer<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "add_at";
        need(OP, "b", b.len(), n)?;
        match offset.checked_add(n) {
            Some(end) if end <= a.len() => {}
            _ => {
                return Err(CudaError::shape(
                    OP,
                    format!("{n} values at {offset} in a buffer of {}", a.len()),
                ))
            }
        }
        let n64 = n as i64;
        let mut view = a.slice_mut().slice_mut(offset..offset + n);
        let f = self.function("elementwise", "add")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&mut view).arg(b.slice()).arg(&n64).arg(&n64);
        // SAFETY: matches add(a, b, n, period = n); the view holds n elements and b at least n.
        unsafe { l.launch(grid_1d(n, 256)) }.during(OP)?;
        Ok(())
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

    /// [`swiglu`](Gpu::swiglu) of `nrows` rows of `ncols` (a multiple of 32) and the q8_1
    /// quantization of its output (`outq`, [`q8_1_bytes`](crate::q8_1_bytes) bytes) in one
    /// launch: both bit for bit what the two separate kernels give.
    #[allow(clippy::too_many_arguments)]
    pub fn swiglu_q8_1(
        &self,
        gate: &DeviceBuffer<f32>,
        up: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
        outq: &mut DeviceBuffer<u8>,
        ncols: usize,
        nrows: usize,
    ) -> Result<(), CudaError> {
        const OP: &str = "swiglu_q8_1";
        let n = ncols * nrows;
        need(OP, "gate", gate.len(), n)?;
        need(OP, "up", up.len(), n)?;
        need(OP, "out", out.len(), n)?;
        let cfg = q8_1_grid(OP, outq, ncols, nrows)?;
        let (nc, nr) = (as_i32(OP, "ncols", ncols)?, as_i32(OP, "nrows", nrows)?);
        let f = self.function("elementwise", OP)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(gate.slice())
            .arg(up.slice())
            .arg(out.slice_mut())
            .arg(outq.slice_mut())
            .arg(&nc)
            .arg(&nr);
        // SAFETY: matches swiglu_q8_1(gate, up, out, outq, ncols, nrows); sizes checked.
        unsafe { l.launch(cfg) }.during(OP)?;
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
