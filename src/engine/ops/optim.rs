//! Parameter updates: AdamW (PyTorch's single-tensor path), LARS (the official
//! `moco/optimizer.py`) and the momentum encoder's EMA.

use rayon::prelude::*;

/// Scalars of one AdamW step (already bias-corrected and rounded to f32 as PyTorch does).
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// lr / (1 − β1^t).
    pub step_size: f32,
    /// 1 − β1 and β2, 1 − β2.
    pub w1: f32,
    pub b2: f32,
    pub w2: f32,
    pub eps: f32,
    /// √(1 − β2^t).
    pub bc2_sqrt: f32,
    /// 1 − lr·wd, or 1 when the parameter is not decayed.
    pub decay: f32,
}

/// One AdamW step on `w` `[n]` with gradient `g`, moments `m` and `v` (all updated in place):
/// decoupled decay `w ← w·decay`, `m ← lerp(m, g, 1 − β1)`, `v ← β2·v + (1 − β2)·g²`,
/// `w ← w − step_size · m / (√v / bc2_sqrt + eps)`.
pub fn adamw_update(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWStep) {
    const CH: usize = 8192;
    let AdamWStep { step_size, w1, b2, w2, eps, bc2_sqrt: bc2s, decay } = s;
    w.par_chunks_mut(CH).zip(g.par_chunks(CH)).zip(m.par_chunks_mut(CH)).zip(v.par_chunks_mut(CH)).for_each(
        |(((w, g), m), v)| {
            for i in 0..w.len() {
                let gi = g[i];
                w[i] *= decay;
                // lerp(m, g, 1-β1) with PyTorch's formula for weights below 0.5
                m[i] += w1 * (gi - m[i]);
                v[i] = v[i] * b2 + w2 * gi * gi;
                let denom = v[i].sqrt() / bc2s + eps;
                w[i] += -step_size * (m[i] / denom);
            }
        },
    );
}

/// LARS's trust ratio for a matrix parameter: `η·‖w‖ / ‖g + wd·w‖` (1 when either norm is 0),
/// norms accumulated in f64 in index order.
pub fn lars_trust_ratio(w: &[f32], g: &[f32], wd: f32, eta: f64) -> f32 {
    let pn = w.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
    let un = g.iter().zip(w).map(|(&g, &w)| ((g + wd * w) as f64).powi(2)).sum::<f64>().sqrt();
    if pn > 0.0 && un > 0.0 {
        (eta * pn / un) as f32
    } else {
        1.0
    }
}

/// One LARS step on `w` with gradient `g` and momentum buffer `mu` (updated in place):
/// `mu ← momentum·mu + (g + wd·w)·ratio; w ← w − lr·mu`.
pub fn lars_update(w: &mut [f32], g: &[f32], mu: &mut [f32], lr: f32, momentum: f32, wd: f32, ratio: f32) {
    for ((w, u), &g) in w.iter_mut().zip(mu.iter_mut()).zip(g.iter()) {
        *u = momentum * *u + (g + wd * *w) * ratio;
        *w -= lr * *u;
    }
}

/// The momentum encoder's EMA: `k ← k·a + q·b` (a = m, b = 1 − m, rounded to f32 as PyTorch).
pub fn ema_update(k: &mut [f32], q: &[f32], a: f32, b: f32) {
    k.par_chunks_mut(16384).zip(q.par_chunks(16384)).for_each(|(k, q)| {
        for (k, q) in k.iter_mut().zip(q) {
            *k = *k * a + *q * b;
        }
    });
}
