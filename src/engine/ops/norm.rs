//! Normalisation kernels: LayerNorm over the last dimension (PyTorch semantics, biased
//! variance) and the per-channel pieces of BatchNorm (sums over rows, the affine transform, the
//! input gradient).

use crate::engine::par::{self, SendPtr};
use crate::engine::tensor::Tensor;
use crate::engine::{ensure, vec};
use rayon::prelude::*;

/// LayerNorm of `inp` `[rows, c]` into `out` `[rows, out_stride]` (out_stride is `c`, or `c + 1`
/// with a last column of ones for a Linear that takes its bias inside the product), with per-row
/// mean and 1/std written to `stats` `[rows, 2]`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    stats: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    rows: usize,
    c: usize,
    out_stride: usize,
    eps: f32,
) {
    let sy = out_stride;
    par::for_rows2(&mut out[..rows * sy], sy, &mut stats[..rows * 2], 2, |r, y, st| {
        let xr = &inp[r * c..(r + 1) * c];
        let mean = vec::sum(xr) / c as f32;
        let var = vec::sq_dev(xr, mean) / c as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        st[0] = mean;
        st[1] = rstd;
        for i in 0..c {
            y[i] = (xr[i] - mean) * rstd * weight[i] + bias[i];
        }
        if sy > c {
            y[c] = 1.0;
        }
    });
}

/// Backward of [`layernorm_forward`] (`out_stride` c): `dinp` `[rows, c]` written; `dweight`,
/// `dbias` `[c]` written when given.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    stats: &[f32],
    rows: usize,
    c: usize,
) {
    let d = c;
    let (g, x, dy) = (weight, inp, dout);
    let dxp = SendPtr(dinp.as_mut_ptr());
    assert!(dinp.len() >= rows * d, "layernorm_backward: dinp too small");
    (0..rows).into_par_iter().with_min_len(64).for_each(|r| {
        let xr = &x[r * d..(r + 1) * d];
        let dyr = &dy[r * d..(r + 1) * d];
        let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
        // dxhat = dy * g; mean(dxhat) and mean(dxhat * xhat)
        // Eight running sums each, so the loop vectorises (a single sum is a serial chain).
        let (mut a1, mut a2) = ([0.0f32; 8], [0.0f32; 8]);
        for ((dc, xc), gc) in dyr.chunks(8).zip(xr.chunks(8)).zip(g.chunks(8)) {
            for k in 0..dc.len() {
                let dxh = dc[k] * gc[k];
                a1[k] += dxh;
                a2[k] += dxh * (xc[k] - mean) * rstd;
            }
        }
        let (m1, m2) = (vec::fold8(a1) / d as f32, vec::fold8(a2) / d as f32);
        // Safe: row r of dinp, written by this task alone (checked length above).
        let out = unsafe { dxp.slice(r * d, d) };
        for i in 0..d {
            let xh = (xr[i] - mean) * rstd;
            out[i] = rstd * (dyr[i] * g[i] - m1 - xh * m2);
        }
    });
    if let Some(dg) = dweight {
        par::col_reduce(dg, rows, false, |r, cr, acc| {
            let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
            let base = r * d;
            for (k, c) in cr.enumerate() {
                acc[k] += dy[base + c] * (x[base + c] - mean) * rstd;
            }
        });
    }
    if let Some(db) = dbias {
        par::col_sum(db, dy, rows, d, false);
    }
}

/// `out[r] = inp[r]·alpha + shift` per channel, `[rows, c]` (BatchNorm's transform, and its
/// eval-mode input gradient with a zero shift); with `relu`, max(0, ·) of it (a ReLU in place
/// after the BatchNorm, in the same pass).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_affine(out: &mut [f32], inp: &[f32], alpha: &[f32], shift: &[f32], rows: usize, c: usize, relu: bool) {
    par::for_rows(&mut out[..rows * c], c, |r, o| {
        for ((o, v), (a, b)) in o.iter_mut().zip(&inp[r * c..(r + 1) * c]).zip(alpha.iter().zip(shift)) {
            *o = v * a + b;
        }
        if relu {
            o.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    });
}

/// The output gradient a BatchNorm sees when a ReLU follows it in place: `dout` where the ReLU's
/// output `mask` is positive, else 0 (`relu_backward_inplace`'s rule).
#[inline]
fn relu_masked(d: f32, mask: Option<&[f32]>, i: usize) -> f32 {
    match mask {
        Some(y) if y[i] <= 0.0 => 0.0,
        _ => d,
    }
}

/// Σ_r inp[r] per channel over the rows `range` of `inp` `[rows, c]`, written to `sum` `[c]`.
pub fn batchnorm_sum(partials: &mut Tensor, sum: &mut [f32], inp: &[f32], range: std::ops::Range<usize>, c: usize) {
    let mut unused = vec![0.0f32; c];
    channel_sums(partials, range, c, sum, &mut unused, |row, c0, a, _| {
        for (a, v) in a.iter_mut().zip(&inp[row * c + c0..]) {
            *a += v;
        }
    });
}

/// Σ_r (inp[r] − mean)² per channel over the rows `range`, written to `sq` `[c]`.
pub fn batchnorm_sq_dev(
    partials: &mut Tensor,
    sq: &mut [f32],
    inp: &[f32],
    mean: &[f32],
    range: std::ops::Range<usize>,
    c: usize,
) {
    let mut unused = vec![0.0f32; c];
    channel_sums(partials, range, c, sq, &mut unused, |row, c0, a, _| {
        for ((a, v), m) in a.iter_mut().zip(&inp[row * c + c0..]).zip(&mean[c0..]) {
            let d = v - m;
            *a += d * d;
        }
    });
}

/// The two sums of BatchNorm's backward over the rows `range`, per channel: `sdy = Σ dout` and
/// `sdyx = Σ dout·(inp − mean)·rstd`, written. With `mask` (the output of a ReLU that followed
/// in place, `[rows, c]`), `dout` is taken as 0 where the mask is not positive.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_grad_sums(
    partials: &mut Tensor,
    sdy: &mut [f32],
    sdyx: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    mean: &[f32],
    rstd: &[f32],
    range: std::ops::Range<usize>,
    c: usize,
    mask: Option<&[f32]>,
) {
    channel_sums(partials, range, c, sdyx, sdy, |r, c0, a, b| {
        let (d, xr) = (&dout[r * c + c0..][..a.len()], &inp[r * c + c0..]);
        let m = mask.map(|m| &m[r * c + c0..][..a.len()]);
        for k in 0..a.len() {
            let d = relu_masked(d[k], m, k);
            a[k] += d * (xr[k] - mean[c0 + k]) * rstd[c0 + k];
            b[k] += d;
        }
    });
}

/// BatchNorm's training-mode input gradient, per channel `dinp = dout·A + inp·B + C`, `[rows, c]`;
/// with `mask`, `dout` masked as in [`batchnorm_grad_sums`].
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_dx(
    dinp: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    ca: &[f32],
    cb: &[f32],
    cc: &[f32],
    rows: usize,
    c: usize,
    mask: Option<&[f32]>,
) {
    par::for_rows(&mut dinp[..rows * c], c, |r, out| {
        let (d, xr) = (&dout[r * c..(r + 1) * c], &inp[r * c..(r + 1) * c]);
        let m = mask.map(|m| &m[r * c..(r + 1) * c]);
        for k in 0..c {
            out[k] = relu_masked(d[k], m, k) * ca[k] + xr[k] * cb[k] + cc[k];
        }
    });
}

/// Two per-channel sums over the rows `range`: `term(row, c0, a, b)` adds the row's values for
/// channels `c0..c0 + a.len()` into `a` and `b`. Rows are cut into fixed chunks and channels into
/// fixed blocks (parallel tasks); the chunks' partial sums are then added in chunk order, so the
/// result does not depend on the number of threads.
fn channel_sums(
    partials: &mut Tensor,
    range: std::ops::Range<usize>,
    c: usize,
    out_a: &mut [f32],
    out_b: &mut [f32],
    term: impl Fn(usize, usize, &mut [f32], &mut [f32]) + Sync,
) {
    const CB: usize = 256;
    let per = (16384 / c).clamp(8, 1024);
    let chunks = range.len().div_ceil(per);
    let blocks = c.div_ceil(CB);
    ensure(partials, chunks * 2 * c);
    let pp = SendPtr(partials.as_mut_ptr());
    (0..chunks * blocks).into_par_iter().for_each(|t| {
        let (ch, bi) = (t / blocks, t % blocks);
        let c0 = bi * CB;
        let w = CB.min(c - c0);
        // Disjoint: chunk `ch`, channels c0..c0+w of both halves.
        let (a, b) = unsafe { (pp.slice(ch * 2 * c + c0, w), pp.slice(ch * 2 * c + c + c0, w)) };
        a.fill(0.0);
        b.fill(0.0);
        for r in range.start + ch * per..(range.start + (ch + 1) * per).min(range.end) {
            term(r, c0, a, b);
        }
    });
    out_a.fill(0.0);
    out_b.fill(0.0);
    for ch in partials[..chunks * 2 * c].chunks(2 * c) {
        for (o, v) in out_a.iter_mut().zip(&ch[..c]) {
            *o += v;
        }
        for (o, v) in out_b.iter_mut().zip(&ch[c..]) {
            *o += v;
        }
    }
}
