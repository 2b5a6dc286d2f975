//! Row L2 normalisation and softmax cross-entropy (kernels/loss.cu; engine/ops/loss.rs): one
//! block per row.

use super::{ensure, fits_i32, int, need, per_row, DevBuf, Gpu};

/// `out` `[rows, d]` = each row of `inp` divided by max(its L2 norm, 1e-12); the divisors to
/// `norms` `[rows]`.
pub fn l2norm_forward(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    norms: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    rows: usize,
    d: usize,
) -> Result<(), String> {
    need(out, rows * d, "l2norm_forward: out")?;
    need(norms, rows, "l2norm_forward: norms")?;
    need(inp, rows * d, "l2norm_forward: inp")?;
    fits_i32(&[rows * d], "l2norm_forward")?;
    let args = [out.arg_mut(gpu), norms.arg_mut(gpu), inp.arg(gpu), int(rows), int(d)];
    // SAFETY: (float*, float*, const float*, int, int), sizes checked.
    unsafe { gpu.launch("l2norm_forward", per_row(rows), 0, &args) }
}

/// [`l2norm_forward`] in place on `x` `[rows, d]`, without keeping the norms.
pub fn l2norm_inplace(gpu: &Gpu, x: &mut DevBuf<f32>, rows: usize, d: usize) -> Result<(), String> {
    need(x, rows * d, "l2norm_inplace")?;
    fits_i32(&[rows * d], "l2norm_inplace")?;
    let args = [x.arg_mut(gpu), int(rows), int(d)];
    // SAFETY: (float* [rows·d], int, int).
    unsafe { gpu.launch("l2norm_inplace", per_row(rows), 0, &args) }
}

/// Backward of [`l2norm_forward`]: `dinp = (dout − out·(out·dout)) / norm` per row, written.
pub fn l2norm_backward(
    gpu: &Gpu,
    dinp: &mut DevBuf<f32>,
    dout: &DevBuf<f32>,
    out: &DevBuf<f32>,
    norms: &DevBuf<f32>,
    rows: usize,
    d: usize,
) -> Result<(), String> {
    for (b, what) in [(&*dinp, "dinp"), (dout, "dout"), (out, "out")] {
        need(b, rows * d, &format!("l2norm_backward: {what}"))?;
    }
    need(norms, rows, "l2norm_backward: norms")?;
    fits_i32(&[rows * d], "l2norm_backward")?;
    let args = [dinp.arg_mut(gpu), dout.arg(gpu), out.arg(gpu), norms.arg(gpu), int(rows), int(d)];
    // SAFETY: (float*, const float* ×3, int, int), sizes checked.
    unsafe { gpu.launch("l2norm_backward", per_row(rows), 0, &args) }
}

/// Softmax cross-entropy of `logits` `[rows, c]` against `labels` `[rows]` (each below c),
/// forward and backward in one pass: returns Σ_r (logsumexp(row r) − logit[r, label r]) in f64
/// (read back to the host), and replaces the logits by `grad_scale · (softmax − onehot(label))`.
/// `row_loss` is workspace.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_softmax_inplace(
    gpu: &Gpu,
    logits: &mut DevBuf<f32>,
    row_loss: &mut DevBuf<f64>,
    labels: &DevBuf<u32>,
    rows: usize,
    c: usize,
    grad_scale: f32,
) -> Result<f64, String> {
    need(logits, rows * c, "crossentropy_softmax_inplace: logits")?;
    need(labels, rows, "crossentropy_softmax_inplace: labels")?;
    fits_i32(&[rows * c], "crossentropy_softmax_inplace")?;
    ensure(gpu, row_loss, rows.max(1))?;
    let args = [logits.arg_mut(gpu), row_loss.arg_mut(gpu), labels.arg(gpu), int(rows), int(c), grad_scale.into()];
    // SAFETY: (float* [rows·c], double* [rows], const u32* [rows], int, int, float), sizes
    // checked; the labels are the caller's, each below c.
    unsafe { gpu.launch("crossentropy_softmax_inplace", per_row(rows), 0, &args)? };
    super::sum_f64(gpu, row_loss, rows)
}
