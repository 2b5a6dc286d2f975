//! Pooling on NHWC activations (kernels/pool.cu; engine/ops/pool.rs): max pooling (padding never
//! wins, the first maximum kept) and the global average pool. One thread per written element.

use super::{fits_i32, flat, int, need, DevBuf, Gpu};

/// Output height and width of a `k`×`k` pool with stride `s` and padding `p`.
fn out_hw(h: usize, w: usize, k: usize, s: usize, p: usize) -> Result<(usize, usize), String> {
    if s == 0 || k == 0 || h + 2 * p < k || w + 2 * p < k {
        return Err(format!("maxpool: kernel {k}, stride {s}, padding {p} do not fit {h}×{w}"));
    }
    Ok(((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1))
}

/// Max pool of `inp` `[images, h, w, c]`: `out` `[images, oh, ow, c]` and the input index of
/// each maximum, `argmax`, written.
#[allow(clippy::too_many_arguments)]
pub fn maxpool_forward(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    argmax: &mut DevBuf<u32>,
    inp: &DevBuf<f32>,
    (images, h, w, c): (usize, usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
) -> Result<(), String> {
    let (oh, ow) = out_hw(h, w, k, s, p)?;
    let no = images * oh * ow * c;
    need(out, no, "maxpool_forward: out")?;
    need(argmax, no, "maxpool_forward: argmax")?;
    need(inp, images * h * w * c, "maxpool_forward: inp")?;
    fits_i32(&[images * h * w * c], "maxpool_forward")?;
    let mut args = vec![out.arg_mut(gpu), argmax.arg_mut(gpu), inp.arg(gpu)];
    args.extend([images, h, w, c, k, s, p, oh, ow].map(int));
    // SAFETY: (float*, u32*, const float*, int ×9), sizes checked.
    unsafe { gpu.launch("maxpool_forward", flat(gpu, no), 0, &args) }
}

/// Backward of [`maxpool_forward`]: `dinp` `[images, h, w, c]` written, each input the sum of
/// the output gradients whose maximum it was.
#[allow(clippy::too_many_arguments)]
pub fn maxpool_backward(
    gpu: &Gpu,
    dinp: &mut DevBuf<f32>,
    dout: &DevBuf<f32>,
    argmax: &DevBuf<u32>,
    (images, h, w, c): (usize, usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
) -> Result<(), String> {
    let (oh, ow) = out_hw(h, w, k, s, p)?;
    let (ni, no) = (images * h * w * c, images * oh * ow * c);
    need(dinp, ni, "maxpool_backward: dinp")?;
    need(dout, no, "maxpool_backward: dout")?;
    need(argmax, no, "maxpool_backward: argmax")?;
    fits_i32(&[ni], "maxpool_backward")?;
    let mut args = vec![dinp.arg_mut(gpu), dout.arg(gpu), argmax.arg(gpu)];
    args.extend([images, h, w, c, k, s, p, oh, ow].map(int));
    // SAFETY: (float*, const float*, const u32*, int ×9), sizes checked.
    unsafe { gpu.launch("maxpool_backward", flat(gpu, ni), 0, &args) }
}

/// Mean over the spatial positions: `inp` `[images, hw, c]` → `out` `[images, c]`.
pub fn global_avg_forward(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    images: usize,
    hw: usize,
    c: usize,
) -> Result<(), String> {
    need(out, images * c, "global_avg_forward: out")?;
    need(inp, images * hw * c, "global_avg_forward: inp")?;
    fits_i32(&[images * hw * c], "global_avg_forward")?;
    let args = [out.arg_mut(gpu), inp.arg(gpu), int(images), int(hw), int(c)];
    // SAFETY: (float*, const float*, int ×3), sizes checked.
    unsafe { gpu.launch("global_avg_forward", flat(gpu, images * c), 0, &args) }
}

/// Backward of [`global_avg_forward`]: `dinp` `[images, hw, c]` = dout / hw.
pub fn global_avg_backward(
    gpu: &Gpu,
    dinp: &mut DevBuf<f32>,
    dout: &DevBuf<f32>,
    images: usize,
    hw: usize,
    c: usize,
) -> Result<(), String> {
    need(dinp, images * hw * c, "global_avg_backward: dinp")?;
    need(dout, images * c, "global_avg_backward: dout")?;
    fits_i32(&[images * hw * c], "global_avg_backward")?;
    let args = [dinp.arg_mut(gpu), dout.arg(gpu), int(images), int(hw), int(c)];
    // SAFETY: (float*, const float*, int ×3), sizes checked.
    unsafe { gpu.launch("global_avg_backward", flat(gpu, images * hw * c), 0, &args) }
}
