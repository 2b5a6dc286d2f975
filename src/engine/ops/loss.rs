//! Row L2 normalisation (`F.normalize`) and softmax cross-entropy: one copy each, used by the
//! MoCo loss, the kNN monitor and the linear probe.

use crate::engine::{par, vec};

/// One row: `out = inp / max(‖inp‖, 1e-12)`; returns the divisor.
#[inline]
fn l2norm_row(out: &mut [f32], inp: &[f32]) -> f32 {
    let n = vec::dot(inp, inp).sqrt().max(1e-12);
    for (o, v) in out.iter_mut().zip(inp) {
        *o = v / n;
    }
    n
}

/// `out` `[rows, d]` = each row of `inp` divided by max(its L2 norm, 1e-12); the divisors to
/// `norms` `[rows]`.
pub fn l2norm_forward(out: &mut [f32], norms: &mut [f32], inp: &[f32], rows: usize, d: usize) {
    par::for_rows2(&mut out[..rows * d], d, &mut norms[..rows], 1, |r, o, n| {
        n[0] = l2norm_row(o, &inp[r * d..(r + 1) * d]);
    });
}

/// [`l2norm_forward`] in place, without keeping the norms: `x` `[rows, d]`.
pub fn l2norm_inplace(x: &mut [f32], d: usize) {
    par::for_rows(x, d, |_, r| {
        let n = vec::dot(r, r).sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v /= n);
    });
}

/// Backward of [`l2norm_forward`]: `dinp = (dout − out·(out·dout)) / norm` per row, written.
pub fn l2norm_backward(dinp: &mut [f32], dout: &[f32], out: &[f32], norms: &[f32], rows: usize, d: usize) {
    par::for_rows(&mut dinp[..rows * d], d, |r, o| {
        let (qr, gr) = (&out[r * d..(r + 1) * d], &dout[r * d..(r + 1) * d]);
        let s = vec::dot(qr, gr);
        let inv = 1.0 / norms[r];
        for ((o, &g), &qv) in o.iter_mut().zip(gr).zip(qr) {
            *o = (g - qv * s) * inv;
        }
    });
}

/// Softmax cross-entropy of `logits` `[rows, c]` against `labels` `[rows]`, forward and backward
/// in one pass: returns Σ_r (logsumexp(row r) − logit[r, label r]) in f64, and replaces the
/// logits by `grad_scale · (softmax − onehot(label))`, the gradient of `grad_scale ·` that sum
/// (e.g. 1/rows for the mean, 2τ/rows for MoCo's loss). PyTorch's `exp` (not the fast one):
/// this is the number the loss reports.
pub fn crossentropy_softmax_inplace(logits: &mut [f32], labels: &[u32], rows: usize, c: usize, grad_scale: f32) -> f64 {
    let mut total = 0.0f64;
    for (row, &l) in logits[..rows * c].chunks_mut(c).zip(&labels[..rows]) {
        let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0.0f32;
        for v in row.iter() {
            s += (v - mx).exp();
        }
        let lse = mx + s.ln();
        total += (lse - row[l as usize]) as f64;
        for v in row.iter_mut() {
            *v = (*v - lse).exp() * grad_scale;
        }
        row[l as usize] -= grad_scale;
    }
    total
}
