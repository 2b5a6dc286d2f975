//! Multi-head self-attention's core and the row softmax (kernels/attention.cu;
//! engine/ops/attention.rs), on the packed qkv `[B·T, 3, H, C/H]` (timm's layout).

use super::{ensure, fits_i32, int, need, per_row, DevBuf, Gpu};
use crate::engine::cuda::gpu::Arg;
use crate::engine::ops::attention_scale;

/// The shape arguments every attention kernel ends with: batch, t, d, h, scale.
fn shape(batch: usize, t: usize, d: usize, h: usize) -> Result<[Arg; 5], String> {
    if h == 0 || !d.is_multiple_of(h) {
        return Err(format!("attention: {d} channels do not split into {h} heads"));
    }
    fits_i32(&[batch * t * 3 * d, batch * h * t * t], "attention")?;
    Ok([int(batch), int(t), int(d), int(h), attention_scale(d, h).into()])
}

/// Dynamic shared memory of `floats` f32 values.
fn shared(floats: usize) -> u32 {
    (floats * 4) as u32
}

/// softmax(Q Kᵀ · scale) V per (image, head): `out` `[B·T, C]` and `probs` `[B, H, T, T]`
/// written from `qkv` `[B·T, 3C]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    probs: &mut DevBuf<f32>,
    qkv: &DevBuf<f32>,
    batch: usize,
    t: usize,
    d: usize,
    h: usize,
) -> Result<(), String> {
    let s = shape(batch, t, d, h)?;
    need(out, batch * t * d, "attention_forward: out")?;
    need(probs, batch * h * t * t, "attention_forward: probs")?;
    need(qkv, batch * t * 3 * d, "attention_forward: qkv")?;
    let mut args = vec![out.arg_mut(gpu), probs.arg_mut(gpu), qkv.arg(gpu)];
    args.extend(s);
    // SAFETY: (float*, float*, const float*, int ×4, float) with the sizes checked; grid (t, B·H)
    // with (t + hd) floats of shared memory, as kernels/attention.cu states.
    unsafe { gpu.launch("attention_forward", (t as u32, (batch * h) as u32), shared(t + d / h), &args) }
}

/// Attention for the cls query (token 0) of each image only: `out` `[B, C]` and `probs`
/// `[B, H, T]` written.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_cls(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    probs: &mut DevBuf<f32>,
    qkv: &DevBuf<f32>,
    batch: usize,
    t: usize,
    d: usize,
    h: usize,
) -> Result<(), String> {
    let s = shape(batch, t, d, h)?;
    need(out, batch * d, "attention_forward_cls: out")?;
    need(probs, batch * h * t, "attention_forward_cls: probs")?;
    need(qkv, batch * t * 3 * d, "attention_forward_cls: qkv")?;
    let mut args = vec![out.arg_mut(gpu), probs.arg_mut(gpu), qkv.arg(gpu)];
    args.extend(s);
    // SAFETY: as attention_forward; grid B·H, (t + hd) floats of shared memory.
    unsafe { gpu.launch("attention_forward_cls", per_row(batch * h), shared(t + d / h), &args) }
}

/// Backward of [`attention_forward`]: `dqkv` `[B·T, 3C]` written from `dout` `[B·T, C]`;
/// `scratch` is workspace (grown to `B·H·T²`).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    dqkv: &mut DevBuf<f32>,
    scratch: &mut DevBuf<f32>,
    dout: &DevBuf<f32>,
    qkv: &DevBuf<f32>,
    probs: &DevBuf<f32>,
    batch: usize,
    t: usize,
    d: usize,
    h: usize,
) -> Result<(), String> {
    let s = shape(batch, t, d, h)?;
    need(dqkv, batch * t * 3 * d, "attention_backward: dqkv")?;
    need(dout, batch * t * d, "attention_backward: dout")?;
    need(qkv, batch * t * 3 * d, "attention_backward: qkv")?;
    need(probs, batch * h * t * t, "attention_backward: probs")?;
    ensure(gpu, scratch, batch * h * t * t)?;
    let grid = (t as u32, (batch * h) as u32);
    let mut args = vec![dqkv.arg_mut(gpu), scratch.arg_mut(gpu), dout.arg(gpu), qkv.arg(gpu), probs.arg(gpu)];
    args.extend(s);
    // SAFETY: (float*, float*, const float* ×3, int ×4, float), sizes checked; the first kernel
    // writes dQ and dS (scratch), the second reads dS and writes dK, dV: stream-ordered.
    unsafe {
        gpu.launch("attention_backward_dq", grid, shared(t + d / h), &args)?;
        gpu.launch("attention_backward_dkv", grid, 0, &args)
    }
}

/// Backward of [`attention_forward_cls`] from `dout` `[B, C]`: the whole `dqkv` written (zero
/// for the other tokens' queries).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_cls(
    gpu: &Gpu,
    dqkv: &mut DevBuf<f32>,
    dout: &DevBuf<f32>,
    qkv: &DevBuf<f32>,
    probs: &DevBuf<f32>,
    batch: usize,
    t: usize,
    d: usize,
    h: usize,
) -> Result<(), String> {
    let s = shape(batch, t, d, h)?;
    need(dqkv, batch * t * 3 * d, "attention_backward_cls: dqkv")?;
    need(dout, batch * d, "attention_backward_cls: dout")?;
    need(qkv, batch * t * 3 * d, "attention_backward_cls: qkv")?;
    need(probs, batch * h * t, "attention_backward_cls: probs")?;
    let mut args = vec![dqkv.arg_mut(gpu), dout.arg(gpu), qkv.arg(gpu), probs.arg(gpu)];
    args.extend(s);
    // SAFETY: (float*, const float* ×3, int ×4, float), sizes checked; grid B·H with (2t + 2hd)
    // floats of shared memory.
    unsafe { gpu.launch("attention_backward_cls", per_row(batch * h), shared(2 * t + 2 * (d / h)), &args) }
}

/// Softmax of each row of `x` `[rows, n]`, in place.
pub fn softmax_forward_inplace(gpu: &Gpu, x: &mut DevBuf<f32>, rows: usize, n: usize) -> Result<(), String> {
    need(x, rows * n, "softmax_forward_inplace")?;
    fits_i32(&[rows * n], "softmax_forward_inplace")?;
    let args = [x.arg_mut(gpu), int(rows), int(n)];
    // SAFETY: (float* [rows·n], int, int).
    unsafe { gpu.launch("softmax_forward_inplace", per_row(rows), 0, &args) }
}
