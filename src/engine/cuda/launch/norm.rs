//! LayerNorm and BatchNorm's pieces (kernels/norm.cu; engine/ops/norm.rs). Per-row work is one
//! block per row; per-channel sums are column partials over chunks of CHUNK_ROWS rows, added in
//! chunk order (`finish_columns`), so every result depends on the shape alone.

use super::{chunks, columns, ensure, finish_columns, fits_i32, flat, int, need, per_row, DevBuf, Gpu};
use std::ops::Range;

/// LayerNorm of `inp` `[rows, c]` into `out` `[rows, out_stride]` (c, or c + 1 with a last
/// column of ones), mean and 1/std to `stats` `[rows, 2]`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    stats: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    weight: &DevBuf<f32>,
    bias: &DevBuf<f32>,
    rows: usize,
    c: usize,
    out_stride: usize,
    eps: f32,
) -> Result<(), String> {
    if out_stride < c {
        return Err(format!("layernorm_forward: out_stride {out_stride} < {c} channels"));
    }
    need(inp, rows * c, "layernorm_forward: inp")?;
    need(out, rows * out_stride, "layernorm_forward: out")?;
    need(stats, rows * 2, "layernorm_forward: stats")?;
    need(weight, c, "layernorm_forward: weight")?;
    need(bias, c, "layernorm_forward: bias")?;
    fits_i32(&[rows * out_stride], "layernorm_forward")?;
    let args = [
        out.arg_mut(gpu),
        stats.arg_mut(gpu),
        inp.arg(gpu),
        weight.arg(gpu),
        bias.arg(gpu),
        int(rows),
        int(c),
        int(out_stride),
        eps.into(),
    ];
    // SAFETY: (float*, float*, const float* ×3, int ×3, float), sizes checked.
    unsafe { gpu.launch("layernorm_forward", per_row(rows), 0, &args) }
}

/// Backward of [`layernorm_forward`] (`out_stride` c): `dinp` `[rows, c]` written; `dweight`,
/// `dbias` `[c]` written when given. `partials` is workspace.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    gpu: &Gpu,
    partials: &mut DevBuf<f32>,
    dinp: &mut DevBuf<f32>,
    dweight: Option<&mut DevBuf<f32>>,
    dbias: Option<&mut DevBuf<f32>>,
    dout: &DevBuf<f32>,
    inp: &DevBuf<f32>,
    weight: &DevBuf<f32>,
    stats: &DevBuf<f32>,
    rows: usize,
    c: usize,
) -> Result<(), String> {
    for (b, what) in [(&*dinp, "dinp"), (dout, "dout"), (inp, "inp")] {
        need(b, rows * c, &format!("layernorm_backward: {what}"))?;
    }
    need(weight, c, "layernorm_backward: weight")?;
    need(stats, rows * 2, "layernorm_backward: stats")?;
    fits_i32(&[rows * c], "layernorm_backward")?;
    let args = [dinp.arg_mut(gpu), dout.arg(gpu), inp.arg(gpu), weight.arg(gpu), stats.arg(gpu), int(rows), int(c)];
    // SAFETY: (float*, const float* ×4, int, int), sizes checked.
    unsafe { gpu.launch("layernorm_backward", per_row(rows), 0, &args)? };
    let ch = chunks(rows);
    if let Some(dw) = dweight {
        need(dw, c, "layernorm_backward: dweight")?;
        ensure(gpu, partials, ch * c)?;
        let args = [partials.arg_mut(gpu), dout.arg(gpu), inp.arg(gpu), stats.arg(gpu), int(rows), int(c)];
        // SAFETY: (float* [chunks·c], const float* ×3, int, int), sizes checked.
        unsafe { gpu.launch("layernorm_dweight_partial", columns(gpu, c, ch), 0, &args)? };
        finish_columns(gpu, dw, partials, ch, c, 0, c, false)?;
    }
    if let Some(db) = dbias {
        super::col_sum(gpu, db, partials, dout, rows, c, false)?;
    }
    Ok(())
}

/// `out[r] = inp[r]·alpha + shift` per channel, `[rows, c]`; max(0, ·) of it with `relu`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_affine(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    alpha: &DevBuf<f32>,
    shift: &DevBuf<f32>,
    rows: usize,
    c: usize,
    relu: bool,
) -> Result<(), String> {
    need(out, rows * c, "batchnorm_affine: out")?;
    need(inp, rows * c, "batchnorm_affine: inp")?;
    need(alpha, c, "batchnorm_affine: alpha")?;
    need(shift, c, "batchnorm_affine: shift")?;
    fits_i32(&[rows * c], "batchnorm_affine")?;
    let args = [out.arg_mut(gpu), inp.arg(gpu), alpha.arg(gpu), shift.arg(gpu), int(rows), int(c), int(relu as usize)];
    // SAFETY: (float*, const float* ×3, int ×3), sizes checked.
    unsafe { gpu.launch("batchnorm_affine", flat(gpu, rows * c), 0, &args) }
}

/// Checks shared by the per-channel sums over `range` of `inp` `[rows ≥ range.end, c]`, and
/// the chunk count.
fn range_sums(inp: &DevBuf<f32>, range: &Range<usize>, c: usize, what: &str) -> Result<usize, String> {
    if range.start > range.end {
        return Err(format!("{what}: empty row range {range:?}"));
    }
    need(inp, range.end * c, what)?;
    fits_i32(&[range.end * c], what)?;
    Ok(chunks(range.len()))
}

/// Σ_r inp[r] per channel over the rows `range` of `inp` `[rows, c]`, written to `sum` `[c]`.
pub fn batchnorm_sum(
    gpu: &Gpu,
    partials: &mut DevBuf<f32>,
    sum: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    range: Range<usize>,
    c: usize,
) -> Result<(), String> {
    let ch = range_sums(inp, &range, c, "batchnorm_sum")?;
    need(sum, c, "batchnorm_sum: sum")?;
    ensure(gpu, partials, ch * c)?;
    let args = [partials.arg_mut(gpu), inp.arg(gpu), int(range.start), int(range.end), int(c)];
    // SAFETY: (float* [chunks·c], const float*, int ×3), sizes checked.
    unsafe { gpu.launch("batchnorm_sum_partial", columns(gpu, c, ch), 0, &args)? };
    finish_columns(gpu, sum, partials, ch, c, 0, c, false)
}

/// Σ_r (inp[r] − mean)² per channel over the rows `range`, written to `sq` `[c]`.
pub fn batchnorm_sq_dev(
    gpu: &Gpu,
    partials: &mut DevBuf<f32>,
    sq: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    mean: &DevBuf<f32>,
    range: Range<usize>,
    c: usize,
) -> Result<(), String> {
    let ch = range_sums(inp, &range, c, "batchnorm_sq_dev")?;
    need(sq, c, "batchnorm_sq_dev: sq")?;
    need(mean, c, "batchnorm_sq_dev: mean")?;
    ensure(gpu, partials, ch * c)?;
    let args = [partials.arg_mut(gpu), inp.arg(gpu), mean.arg(gpu), int(range.start), int(range.end), int(c)];
    // SAFETY: (float* [chunks·c], const float* ×2, int ×3), sizes checked.
    unsafe { gpu.launch("batchnorm_sq_dev_partial", columns(gpu, c, ch), 0, &args)? };
    finish_columns(gpu, sq, partials, ch, c, 0, c, false)
}

/// BatchNorm's two backward sums over the rows `range`, per channel: `sdy = Σ dout` and
/// `sdyx = Σ dout·(inp − mean)·rstd`, written; `dout` taken as 0 where `mask` (a following
/// ReLU's output) is not positive.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_grad_sums(
    gpu: &Gpu,
    partials: &mut DevBuf<f32>,
    sdy: &mut DevBuf<f32>,
    sdyx: &mut DevBuf<f32>,
    dout: &DevBuf<f32>,
    inp: &DevBuf<f32>,
    mean: &DevBuf<f32>,
    rstd: &DevBuf<f32>,
    range: Range<usize>,
    c: usize,
    mask: Option<&DevBuf<f32>>,
) -> Result<(), String> {
    let ch = range_sums(inp, &range, c, "batchnorm_grad_sums")?;
    need(dout, range.end * c, "batchnorm_grad_sums: dout")?;
    if let Some(m) = mask {
        need(m, range.end * c, "batchnorm_grad_sums: mask")?;
    }
    for (b, what) in [(&*sdy, "sdy"), (&*sdyx, "sdyx"), (mean, "mean"), (rstd, "rstd")] {
        need(b, c, &format!("batchnorm_grad_sums: {what}"))?;
    }
    ensure(gpu, partials, ch * 2 * c)?;
    let args = [
        partials.arg_mut(gpu),
        dout.arg(gpu),
        inp.arg(gpu),
        mean.arg(gpu),
        rstd.arg(gpu),
        int(range.start),
        int(range.end),
        int(c),
        mask.unwrap_or(dout).arg(gpu),
        int(mask.is_some() as usize),
    ];
    // SAFETY: (float* [chunks·2c], const float* ×4, int ×3, const float*, int), sizes checked
    // (the mask is read only when present; dout stands in for it otherwise).
    unsafe { gpu.launch("batchnorm_grad_sums_partial", columns(gpu, c, ch), 0, &args)? };
    finish_columns(gpu, sdyx, partials, ch, 2 * c, 0, c, false)?;
    finish_columns(gpu, sdy, partials, ch, 2 * c, c, c, false)
}

/// BatchNorm's training-mode input gradient, per channel `dinp = dout·A + inp·B + C`,
/// `[rows, c]`, with `dout` masked as in [`batchnorm_grad_sums`].
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_dx(
    gpu: &Gpu,
    dinp: &mut DevBuf<f32>,
    dout: &DevBuf<f32>,
    inp: &DevBuf<f32>,
    ca: &DevBuf<f32>,
    cb: &DevBuf<f32>,
    cc: &DevBuf<f32>,
    rows: usize,
    c: usize,
    mask: Option<&DevBuf<f32>>,
) -> Result<(), String> {
    for (b, what) in [(&*dinp, "dinp"), (dout, "dout"), (inp, "inp"), (mask.unwrap_or(dout), "mask")] {
        need(b, rows * c, &format!("batchnorm_backward_dx: {what}"))?;
    }
    for (b, what) in [(ca, "A"), (cb, "B"), (cc, "C")] {
        need(b, c, &format!("batchnorm_backward_dx: {what}"))?;
    }
    fits_i32(&[rows * c], "batchnorm_backward_dx")?;
    let args = [
        dinp.arg_mut(gpu),
        dout.arg(gpu),
        inp.arg(gpu),
        ca.arg(gpu),
        cb.arg(gpu),
        cc.arg(gpu),
        int(rows),
        int(c),
        mask.unwrap_or(dout).arg(gpu),
        int(mask.is_some() as usize),
    ];
    // SAFETY: (float*, const float* ×5, int, int, const float*, int), sizes checked (dout stands
    // in for an absent mask, which is then not read).
    unsafe { gpu.launch("batchnorm_backward_dx", flat(gpu, rows * c), 0, &args) }
}
