//! Element-wise sums, column reductions and norms, and the ViT's token assembly.

use crate::engine::par;
pub use crate::engine::par::col_sum;
pub use crate::engine::vec::{add, add_assign, add_assign_serial};

/// Σ x² in f64, in index order (gradient and weight norms for monitoring).
pub fn sum_sq_f64(x: &[f32]) -> f64 {
    x.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>()
}

/// ViT tokens `[batch, t, d]`: row 0 of each image the cls token `[d]`, rows 1.. the patch
/// embeddings `patches` `[batch·(t−1), d]`, plus the position embedding `pos` `[t, d]` when given.
pub fn tokens_forward(
    tokens: &mut [f32],
    patches: &[f32],
    cls: &[f32],
    pos: Option<&[f32]>,
    batch: usize,
    t: usize,
    d: usize,
) {
    par::for_rows(&mut tokens[..batch * t * d], d, |r, row| {
        let (b, ti) = (r / t, r % t);
        if ti == 0 {
            row.copy_from_slice(cls);
        } else {
            row.copy_from_slice(&patches[(b * (t - 1) + ti - 1) * d..(b * (t - 1) + ti) * d]);
        }
        if let Some(p) = pos {
            for (v, q) in row.iter_mut().zip(&p[ti * d..(ti + 1) * d]) {
                *v += q;
            }
        }
    });
}

/// Backward of [`tokens_forward`] from `dtokens` `[batch, t, d]`: `dcls` `[d]` and `dpos`
/// `[t, d]` written when given (sums over images), `dpatches` `[batch·(t−1), d]` written when
/// given.
#[allow(clippy::too_many_arguments)]
pub fn tokens_backward(
    dcls: Option<&mut [f32]>,
    dpos: Option<&mut [f32]>,
    dpatches: Option<&mut [f32]>,
    dtokens: &[f32],
    batch: usize,
    t: usize,
    d: usize,
) {
    let dt = dtokens;
    if let Some(g) = dcls {
        g.fill(0.0);
        for b in 0..batch {
            for (x, v) in g.iter_mut().zip(&dt[b * t * d..b * t * d + d]) {
                *x += v;
            }
        }
    }
    if let Some(g) = dpos {
        col_sum(g, &dt[..batch * t * d], batch, t * d, false);
    }
    if let Some(dp) = dpatches {
        let np = t - 1;
        for b in 0..batch {
            dp[b * np * d..(b + 1) * np * d].copy_from_slice(&dt[(b * t + 1) * d..(b + 1) * t * d]);
        }
    }
}

/// `x[b·stride .. b·stride + d] += y[b·d .. (b+1)·d]` for each of the `rows` rows of `y`
/// (`[rows, d]` added into strided rows of `x`, e.g. the cls rows of a token sequence).
pub fn add_rows_strided(x: &mut [f32], y: &[f32], rows: usize, stride: usize, d: usize) {
    par::for_rows(&mut x[..rows * stride], stride, |b, img| add_assign_serial(&mut img[..d], &y[b * d..(b + 1) * d]));
}
