//! Parameter updates (kernels/optim.cu; engine/ops/optim.rs): AdamW, the momentum encoder's EMA,
//! and LARS with its trust ratio computed on the device (f64 block partials added in block order),
//! so an update never waits for the host.

use super::{flat, need, partial_blocks, DevBuf, Gpu};
use crate::engine::ops::AdamWStep;

/// One AdamW step on `w` `[n]` with gradient `g` and moments `m`, `v` (all in place), n the
/// length of `w`.
pub fn adamw_update(
    gpu: &Gpu,
    w: &mut DevBuf<f32>,
    g: &DevBuf<f32>,
    m: &mut DevBuf<f32>,
    v: &mut DevBuf<f32>,
    s: AdamWStep,
) -> Result<(), String> {
    let n = w.len();
    need(g, n, "adamw_update: g")?;
    need(m, n, "adamw_update: m")?;
    need(v, n, "adamw_update: v")?;
    let args = [
        w.arg_mut(gpu),
        g.arg(gpu),
        m.arg_mut(gpu),
        v.arg_mut(gpu),
        (n as u64).into(),
        s.step_size.into(),
        s.w1.into(),
        s.b2.into(),
        s.w2.into(),
        s.eps.into(),
        s.bc2_sqrt.into(),
        s.decay.into(),
    ];
    // SAFETY: (float*, const float*, float*, float*, u64, float ×7), sizes checked.
    unsafe { gpu.launch("adamw_update", flat(gpu, n), 0, &args) }
}

/// The momentum encoder's EMA: `k ← k·a + q·b` over the length of `k`.
pub fn ema_update(gpu: &Gpu, k: &mut DevBuf<f32>, q: &DevBuf<f32>, a: f32, b: f32) -> Result<(), String> {
    let n = k.len();
    need(q, n, "ema_update: q")?;
    let args = [k.arg_mut(gpu), q.arg(gpu), (n as u64).into(), a.into(), b.into()];
    // SAFETY: (float* [n], const float* [n], u64, float, float).
    unsafe { gpu.launch("ema_update", flat(gpu, n), 0, &args) }
}

/// LARS's trust ratio `eta·‖w‖ / ‖g + wd·w‖` (1 when either norm is 0) over the length of `w`,
/// written to `ratio[0]` on the device; `partials` is workspace.
pub fn lars_trust_ratio(
    gpu: &Gpu,
    ratio: &mut DevBuf<f32>,
    partials: &mut DevBuf<f64>,
    w: &DevBuf<f32>,
    g: &DevBuf<f32>,
    wd: f32,
    eta: f64,
) -> Result<(), String> {
    let n = w.len();
    need(g, n, "lars_trust_ratio: g")?;
    need(ratio, 1, "lars_trust_ratio: ratio")?;
    let blocks = partial_blocks(gpu, n);
    super::ensure(gpu, partials, 2 * blocks as usize)?;
    let args = [partials.arg_mut(gpu), w.arg(gpu), g.arg(gpu), (n as u64).into(), wd.into()];
    // SAFETY: (double* [2·blocks], const float* [n] ×2, u64, float), sizes checked.
    unsafe { gpu.launch("lars_norms_partial", (blocks, 1), 0, &args)? };
    let args = [ratio.arg_mut(gpu), partials.arg(gpu), (blocks as i32).into(), eta.into()];
    // SAFETY: (float* [1], const double* [2·blocks], int, double).
    unsafe { gpu.launch("lars_trust_ratio", (1, 1), 0, &args) }
}

/// One LARS step on `w` with gradient `g` and momentum `mu` (in place), the trust ratio read
/// from `ratio[0]` on the device: `mu ← momentum·mu + (g + wd·w)·ratio; w ← w − lr·mu`.
#[allow(clippy::too_many_arguments)]
pub fn lars_update(
    gpu: &Gpu,
    w: &mut DevBuf<f32>,
    g: &DevBuf<f32>,
    mu: &mut DevBuf<f32>,
    ratio: &DevBuf<f32>,
    lr: f32,
    momentum: f32,
    wd: f32,
) -> Result<(), String> {
    let n = w.len();
    need(g, n, "lars_update: g")?;
    need(mu, n, "lars_update: mu")?;
    need(ratio, 1, "lars_update: ratio")?;
    let args = [
        w.arg_mut(gpu),
        g.arg(gpu),
        mu.arg_mut(gpu),
        ratio.arg(gpu),
        (n as u64).into(),
        lr.into(),
        momentum.into(),
        wd.into(),
    ];
    // SAFETY: (float*, const float*, float*, const float* [1], u64, float ×3), sizes checked.
    unsafe { gpu.launch("lars_update", flat(gpu, n), 0, &args) }
}
