//! Convolution columns and layouts (kernels/conv.cu; engine/ops/conv.rs): NCHW → NHWC, im2col
//! and col2im on NHWC activations, the weight's axis swap, and the patch embedding's im2col. One thread per written
//! element.

use super::{ensure, fits_i32, flat, int, need, DevBuf, Gpu};
use crate::engine::cuda::gpu::Arg;
use crate::engine::ops::ConvShape;

/// Images `[n, c, hw]` (NCHW) into `out` as NHWC `[n, hw, c]` (grown as needed).
pub fn nchw_to_nhwc(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    n: usize,
    c: usize,
    hw: usize,
) -> Result<(), String> {
    let len = n * c * hw;
    need(inp, len, "nchw_to_nhwc: inp")?;
    fits_i32(&[n, c, hw], "nchw_to_nhwc")?;
    ensure(gpu, out, len)?;
    let args = [out.arg_mut(gpu), inp.arg(gpu), int(n), int(c), int(hw)];
    // SAFETY: (float* [len], const float* [len], int ×3).
    unsafe { gpu.launch("nchw_to_nhwc", flat(gpu, len), 0, &args) }
}

/// The geometry arguments of im2col and col2im: images, h, w, c, k, s, p, oh, ow.
fn geometry(g: ConvShape) -> Result<[Arg; 9], String> {
    let (oh, ow) = g.out_hw();
    fits_i32(&[g.images * oh * ow * g.c * g.k * g.k, g.images * g.h * g.w * g.c], "convolution")?;
    Ok([g.images, g.h, g.w, g.c, g.k, g.s, g.p, oh, ow].map(int))
}

/// The im2col columns of `inp` (NHWC, shape `g`) into `cols` `[images·oh·ow, k·k·c]`, ordered
/// (kh, kw, in) (grown as needed).
pub fn im2col(gpu: &Gpu, cols: &mut DevBuf<f32>, inp: &DevBuf<f32>, g: ConvShape) -> Result<(), String> {
    let (oh, ow) = g.out_hw();
    let n = g.images * oh * ow * g.c * g.k * g.k;
    need(inp, g.images * g.h * g.w * g.c, "im2col: inp")?;
    let geo = geometry(g)?;
    ensure(gpu, cols, n)?;
    let mut args = vec![cols.arg_mut(gpu), inp.arg(gpu)];
    args.extend(geo);
    // SAFETY: (float* [n], const float*, int ×9), sizes checked.
    unsafe { gpu.launch("im2col", flat(gpu, n), 0, &args) }
}

/// Backward of [`im2col`]: `dinp` `[images, h, w, c]` written from `dcols`.
pub fn col2im(gpu: &Gpu, dinp: &mut DevBuf<f32>, dcols: &DevBuf<f32>, g: ConvShape) -> Result<(), String> {
    let (oh, ow) = g.out_hw();
    let n = g.images * g.h * g.w * g.c;
    need(dinp, n, "col2im: dinp")?;
    need(dcols, g.images * oh * ow * g.c * g.k * g.k, "col2im: dcols")?;
    let mut args = vec![dinp.arg_mut(gpu), dcols.arg(gpu)];
    args.extend(geometry(g)?);
    // SAFETY: (float* [n], const float*, int ×9), sizes checked.
    unsafe { gpu.launch("col2im", flat(gpu, n), 0, &args) }
}

/// `out` `[batch, b, a]` = `inp` `[batch, a, b]` with the two inner axes swapped, written (grown
/// as needed).
pub fn swap_inner_axes(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    batch: usize,
    a: usize,
    b: usize,
) -> Result<(), String> {
    let n = batch * a * b;
    need(inp, n, "swap_inner_axes: inp")?;
    fits_i32(&[n], "swap_inner_axes")?;
    ensure(gpu, out, n)?;
    let args = [out.arg_mut(gpu), inp.arg(gpu), int(batch), int(a), int(b)];
    // SAFETY: (float* [n], const float* [n], int ×3).
    unsafe { gpu.launch("swap_inner_axes", flat(gpu, n), 0, &args) }
}

/// Patches of NCHW images `inp` `[batch, c, img, img]` into `cols` `[batch·g², c·p·p]` (g =
/// img / p), grown as needed.
pub fn patchify(
    gpu: &Gpu,
    cols: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    batch: usize,
    c: usize,
    img: usize,
    p: usize,
) -> Result<(), String> {
    if p == 0 || !img.is_multiple_of(p) {
        return Err(format!("patchify: image {img} is not a multiple of patch {p}"));
    }
    let n = batch * c * img * img;
    need(inp, n, "patchify: inp")?;
    fits_i32(&[n], "patchify")?;
    ensure(gpu, cols, n)?;
    let args = [cols.arg_mut(gpu), inp.arg(gpu), int(batch), int(c), int(img), int(p)];
    // SAFETY: (float* [n], const float* [n], int ×4).
    unsafe { gpu.launch("patchify", flat(gpu, n), 0, &args) }
}
