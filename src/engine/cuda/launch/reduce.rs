//! Element-wise sums, column sums, norms and the ViT's token assembly (kernels/reduce.cu;
//! engine/ops/reduce.rs). Column sums: fixed chunks of CHUNK_ROWS rows, then the chunks added in
//! order; sums of squares: f64 block trees whose partials are added in block order.

use super::{chunks, columns, ensure, finish_columns, fits_i32, flat, int, need, partial_blocks, DevBuf, Gpu};
use crate::engine::cuda::gpu::Arg;

/// `out [c] (=|+=) Σ_r x[r]` over the rows of `x` `[rows, c]`; `partials` is workspace.
pub fn col_sum(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    partials: &mut DevBuf<f32>,
    x: &DevBuf<f32>,
    rows: usize,
    c: usize,
    accumulate: bool,
) -> Result<(), String> {
    need(x, rows * c, "col_sum: x")?;
    need(out, c, "col_sum: out")?;
    fits_i32(&[rows * c], "col_sum")?;
    let ch = chunks(rows);
    ensure(gpu, partials, ch * c)?;
    let args = [partials.arg_mut(gpu), x.arg(gpu), int(rows), int(c)];
    // SAFETY: (float* [chunks·c], const float* [rows·c], int, int), sizes checked.
    unsafe { gpu.launch("col_sum_partial", columns(gpu, c, ch), 0, &args)? };
    finish_columns(gpu, out, partials, ch, c, 0, c, accumulate)
}

/// out = a + b over the length of `a`.
pub fn add(gpu: &Gpu, out: &mut DevBuf<f32>, a: &DevBuf<f32>, b: &DevBuf<f32>) -> Result<(), String> {
    let n = a.len();
    need(b, n, "add: b")?;
    need(out, n, "add: out")?;
    let args = [out.arg_mut(gpu), a.arg(gpu), b.arg(gpu), (n as u64).into()];
    // SAFETY: (float*, const float*, const float*, u64), sizes checked.
    unsafe { gpu.launch("add", flat(gpu, n), 0, &args) }
}

/// x += y over the length of `y`.
pub fn add_assign(gpu: &Gpu, x: &mut DevBuf<f32>, y: &DevBuf<f32>) -> Result<(), String> {
    let n = y.len();
    need(x, n, "add_assign: x")?;
    let args = [x.arg_mut(gpu), y.arg(gpu), (n as u64).into()];
    // SAFETY: (float* [n], const float* [n], u64).
    unsafe { gpu.launch("add_assign", flat(gpu, n), 0, &args) }
}

/// `x[b·stride .. b·stride + d] += y[b·d .. (b+1)·d]` for the `rows` rows of `y` `[rows, d]`.
pub fn add_rows_strided(
    gpu: &Gpu,
    x: &mut DevBuf<f32>,
    y: &DevBuf<f32>,
    rows: usize,
    stride: usize,
    d: usize,
) -> Result<(), String> {
    if rows > 0 && stride < d {
        return Err(format!("add_rows_strided: stride {stride} < {d}"));
    }
    need(y, rows * d, "add_rows_strided: y")?;
    need(x, rows.saturating_sub(1) * stride + d, "add_rows_strided: x")?;
    fits_i32(&[rows * stride], "add_rows_strided")?;
    let args = [x.arg_mut(gpu), y.arg(gpu), int(rows), int(stride), int(d)];
    // SAFETY: (float*, const float*, int ×3), sizes checked.
    unsafe { gpu.launch("add_rows_strided", flat(gpu, rows * d), 0, &args) }
}

/// Σ of the first `n` values of `partials` in f64, one block, read back to the host.
pub fn sum_f64(gpu: &Gpu, partials: &DevBuf<f64>, n: usize) -> Result<f64, String> {
    need(partials, n, "sum_f64_finish: partials")?;
    let mut total: DevBuf<f64> = gpu.zeros(1)?;
    let args = [total.arg_mut(gpu), partials.arg(gpu), (n as i32).into()];
    // SAFETY: (double* [1], const double* [n], int).
    unsafe { gpu.launch("sum_f64_finish", (1, 1), 0, &args)? };
    Ok(gpu.download(&total)?[0])
}

/// Σ x² in f64 over the whole of `x`, read back to the host (a fixed tree order; the CPU op
/// adds in index order).
pub fn sum_sq_f64(gpu: &Gpu, x: &DevBuf<f32>) -> Result<f64, String> {
    let n = x.len();
    let blocks = partial_blocks(gpu, n);
    let mut partials: DevBuf<f64> = gpu.zeros(blocks as usize)?;
    let args = [partials.arg_mut(gpu), x.arg(gpu), (n as u64).into()];
    // SAFETY: (double* [blocks], const float* [n], u64).
    unsafe { gpu.launch("sum_sq_f64_partial", (blocks, 1), 0, &args)? };
    sum_f64(gpu, &partials, blocks as usize)
}

/// ViT tokens `[batch, t, d]`: row 0 of each image the cls token `[d]`, rows 1.. the patch
/// embeddings `patches` `[batch·(t−1), d]`, plus the position embedding `pos` `[t, d]` when given.
#[allow(clippy::too_many_arguments)]
pub fn tokens_forward(
    gpu: &Gpu,
    tokens: &mut DevBuf<f32>,
    patches: &DevBuf<f32>,
    cls: &DevBuf<f32>,
    pos: Option<&DevBuf<f32>>,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<(), String> {
    if t == 0 {
        return Err("tokens_forward: no tokens".into());
    }
    need(tokens, batch * t * d, "tokens_forward: tokens")?;
    need(patches, batch * (t - 1) * d, "tokens_forward: patches")?;
    need(cls, d, "tokens_forward: cls")?;
    if let Some(p) = pos {
        need(p, t * d, "tokens_forward: pos")?;
    }
    fits_i32(&[batch * t * d], "tokens_forward")?;
    let pos = pos.map_or(Arg::Ptr(0), |p| p.arg(gpu));
    let args = [tokens.arg_mut(gpu), patches.arg(gpu), cls.arg(gpu), pos, int(batch), int(t), int(d)];
    // SAFETY: (float*, const float* ×3 (pos may be null), int ×3), sizes checked.
    unsafe { gpu.launch("tokens_forward", flat(gpu, batch * t * d), 0, &args) }
}

/// Backward of [`tokens_forward`] from `dtokens` `[batch, t, d]`: `dcls` `[d]` and `dpos`
/// `[t, d]` (sums over images) and `dpatches` `[batch·(t−1), d]`, each written when given;
/// `partials` is workspace.
#[allow(clippy::too_many_arguments)]
pub fn tokens_backward(
    gpu: &Gpu,
    partials: &mut DevBuf<f32>,
    dcls: Option<&mut DevBuf<f32>>,
    dpos: Option<&mut DevBuf<f32>>,
    dpatches: Option<&mut DevBuf<f32>>,
    dtokens: &DevBuf<f32>,
    batch: usize,
    t: usize,
    d: usize,
) -> Result<(), String> {
    if t == 0 {
        return Err("tokens_backward: no tokens".into());
    }
    need(dtokens, batch * t * d, "tokens_backward: dtokens")?;
    fits_i32(&[batch * t * d], "tokens_backward")?;
    let shape = [int(batch), int(t), int(d)];
    if let Some(g) = dcls {
        need(g, d, "tokens_backward: dcls")?;
        let mut args = vec![g.arg_mut(gpu), dtokens.arg(gpu)];
        args.extend(shape);
        // SAFETY: (float* [d], const float* [batch·t·d], int ×3).
        unsafe { gpu.launch("tokens_backward_cls", flat(gpu, d), 0, &args)? };
    }
    if let Some(g) = dpos {
        need(g, t * d, "tokens_backward: dpos")?;
        col_sum(gpu, g, partials, dtokens, batch, t * d, false)?;
    }
    if let Some(g) = dpatches {
        need(g, batch * (t - 1) * d, "tokens_backward: dpatches")?;
        let mut args = vec![g.arg_mut(gpu), dtokens.arg(gpu)];
        args.extend(shape);
        // SAFETY: (float* [batch·(t−1)·d], const float*, int ×3).
        unsafe { gpu.launch("tokens_backward_patches", flat(gpu, batch * (t - 1) * d), 0, &args)? };
    }
    Ok(())
}
