//! Launchers: the CPU ops' signatures over [`CudaTensor`]s, each running its kernel of
//! `kernels/` on the device's stream with the launch geometry that kernel's comment states.
//! The first ones: GELU (element-wise), LayerNorm forward (one block per row, block-tree
//! reductions) and Σ x² (a fixed grid of f64 partials, added in block order).

use super::buffer::CudaTensor;
use super::CudaDevice;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Threads per block (kernels/common.cuh's BLOCK).
pub const BLOCK: u32 = 256;
/// Blocks of the grid-stride partial sums: fixed, so the partials depend on the length alone.
pub const PARTIAL_BLOCKS: u32 = 1024;

fn check(n: usize, t: &CudaTensor, what: &str) -> Result<(), String> {
    if t.len() < n {
        return Err(format!("{what}: {} elements, {n} needed", t.len()));
    }
    Ok(())
}

/// One thread per element, grid-stride beyond 2^16 blocks.
fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 65_536) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

fn launched<T>(r: Result<T, cudarc::driver::DriverError>, name: &str) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| format!("CUDA kernel {name}: {e}"))
}

/// out[n] = gelu(inp[n]) (the first `inp.len()` elements of `out`).
pub fn gelu_forward(dev: &CudaDevice, out: &mut CudaTensor, inp: &CudaTensor) -> Result<(), String> {
    let n = inp.len();
    check(n, out, "gelu_forward: out")?;
    let f = dev.function("gelu_forward")?;
    let n64 = n as u64;
    let mut b = dev.stream.launch_builder(f);
    b.arg(out.slice_mut()).arg(inp.slice()).arg(&n64);
    // SAFETY: the kernel's signature is (float*, const float*, u64), and both buffers hold n.
    launched(unsafe { b.launch(elementwise(n)) }, "gelu_forward")
}

/// d[n] holds dout on entry and dinp on return: dinp = dout · gelu'(inp).
pub fn gelu_backward_inplace(dev: &CudaDevice, d: &mut CudaTensor, inp: &CudaTensor) -> Result<(), String> {
    let n = inp.len();
    check(n, d, "gelu_backward_inplace: d")?;
    let f = dev.function("gelu_backward_inplace")?;
    let n64 = n as u64;
    let mut b = dev.stream.launch_builder(f);
    b.arg(d.slice_mut()).arg(inp.slice()).arg(&n64);
    // SAFETY: (float*, const float*, u64), both buffers hold n.
    launched(unsafe { b.launch(elementwise(n)) }, "gelu_backward_inplace")
}

/// LayerNorm of `inp` `[rows, c]` into `out` `[rows, out_stride]`, mean and 1/std to `stats`
/// `[rows, 2]` (as [`crate::engine::ops::layernorm_forward`]).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    dev: &CudaDevice,
    out: &mut CudaTensor,
    stats: &mut CudaTensor,
    inp: &CudaTensor,
    weight: &CudaTensor,
    bias: &CudaTensor,
    rows: usize,
    c: usize,
    out_stride: usize,
    eps: f32,
) -> Result<(), String> {
    check(rows * c, inp, "layernorm_forward: inp")?;
    check(rows * out_stride, out, "layernorm_forward: out")?;
    check(rows * 2, stats, "layernorm_forward: stats")?;
    check(c, weight, "layernorm_forward: weight")?;
    check(c, bias, "layernorm_forward: bias")?;
    if rows == 0 {
        return Ok(());
    }
    let f = dev.function("layernorm_forward")?;
    let (r, ci, s) = (rows as i32, c as i32, out_stride as i32);
    let mut b = dev.stream.launch_builder(f);
    b.arg(out.slice_mut()).arg(stats.slice_mut()).arg(inp.slice()).arg(weight.slice()).arg(bias.slice());
    b.arg(&r).arg(&ci).arg(&s).arg(&eps);
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: the signature of kernels/norm.cu's layernorm_forward; sizes checked above.
    launched(unsafe { b.launch(cfg) }, "layernorm_forward")
}

/// Σ x² in f64 (as [`crate::engine::ops::sum_sq_f64`], in a fixed tree order instead of index
/// order): PARTIAL_BLOCKS partials, then one block adds them; the result is copied to the host.
pub fn sum_sq_f64(dev: &CudaDevice, x: &CudaTensor) -> Result<f64, String> {
    let mut partials: CudaSlice<f64> =
        dev.stream.alloc_zeros(PARTIAL_BLOCKS as usize).map_err(|e| format!("CUDA alloc: {e}"))?;
    let mut total: CudaSlice<f64> = dev.stream.alloc_zeros(1).map_err(|e| format!("CUDA alloc: {e}"))?;
    let n64 = x.len() as u64;
    let mut b = dev.stream.launch_builder(dev.function("sum_sq_f64_partial")?);
    b.arg(&mut partials).arg(x.slice()).arg(&n64);
    let cfg = LaunchConfig { grid_dim: (PARTIAL_BLOCKS, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: (double* [gridDim], const float* [n], u64).
    launched(unsafe { b.launch(cfg) }, "sum_sq_f64_partial")?;
    let blocks = PARTIAL_BLOCKS as i32;
    let mut b = dev.stream.launch_builder(dev.function("sum_f64_finish")?);
    b.arg(&mut total).arg(&partials).arg(&blocks);
    let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: (double* [1], const double* [blocks], int).
    launched(unsafe { b.launch(one) }, "sum_f64_finish")?;
    let v = dev.stream.clone_dtoh(&total).map_err(|e| format!("CUDA copy to the host: {e}"))?;
    Ok(v[0])
}

/// `inp` as bf16 bits (kernels/cast.cu), in a new device buffer.
pub fn to_bf16(dev: &CudaDevice, inp: &CudaTensor) -> Result<CudaSlice<u16>, String> {
    let n = inp.len();
    let mut out: CudaSlice<u16> = dev.stream.alloc_zeros(n.max(1)).map_err(|e| format!("CUDA alloc: {e}"))?;
    let n64 = n as u64;
    let mut b = dev.stream.launch_builder(dev.function("cast_f32_to_bf16")?);
    b.arg(&mut out).arg(inp.slice()).arg(&n64);
    // SAFETY: (u16* [n], const float* [n], u64).
    launched(unsafe { b.launch(elementwise(n)) }, "cast_f32_to_bf16")?;
    Ok(out)
}

/// out `[rows, oc]` = inp `[rows, c]` · weightᵀ (+ bias `[oc]`), as
/// [`crate::engine::ops::matmul_forward`]: the operands cast to bf16, the product accumulated in
/// f32 by cuBLASLt (onto the bias rows, written first by `fill_rows`, when there is a bias). The
/// bf16 copies are allocated per call in this first version.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    dev: &CudaDevice,
    out: &mut CudaTensor,
    inp: &CudaTensor,
    weight: &CudaTensor,
    bias: Option<&CudaTensor>,
    rows: usize,
    c: usize,
    oc: usize,
) -> Result<(), String> {
    check(rows * c, inp, "matmul_forward: inp")?;
    check(oc * c, weight, "matmul_forward: weight")?;
    check(rows * oc, out, "matmul_forward: out")?;
    if let Some(bias) = bias {
        check(oc, bias, "matmul_forward: bias")?;
        let (r, o) = (rows as i32, oc as i32);
        let mut b = dev.stream.launch_builder(dev.function("fill_rows")?);
        b.arg(out.slice_mut()).arg(bias.slice()).arg(&r).arg(&o);
        // SAFETY: (float* [rows·oc], const float* [oc], int, int).
        launched(unsafe { b.launch(elementwise(rows * oc)) }, "fill_rows")?;
    }
    let (a16, w16) = (to_bf16(dev, inp)?, to_bf16(dev, weight)?);
    let g = super::gemm::Gemm {
        m: rows,
        n: oc,
        k: c,
        a_trans: false,
        b_trans: true,
        alpha: 1.0,
        beta: if bias.is_some() { 1.0 } else { 0.0 },
    };
    super::gemm::gemm_bf16(dev, g, &a16, &w16, out.slice_mut())
}
