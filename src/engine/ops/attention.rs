//! Multi-head self-attention's core, softmax(Q Kᵀ · scale) V, on the packed `qkv` output of a
//! Linear layer laid out as timm's (`[rows, 3, heads, head_dim]`), and the row softmax it uses.

use crate::engine::gemm::{sgemm_raw, Mat};
use crate::engine::par::SendPtr;
use crate::engine::tensor::Tensor;
use crate::engine::{ensure, vec};
use rayon::prelude::*;

/// head_dim^-1/2, as timm.
pub fn attention_scale(d: usize, h: usize) -> f32 {
    ((d / h) as f32).powf(-0.5)
}

/// softmax(Q Kᵀ · scale) V per (image, head) on the packed `qkv` `[B·T, 3, H, C/H]` (timm's
/// layout): `out` `[B·T, C]` (heads side by side) and the probabilities `probs` `[B, H, T, T]`
/// written. One task per (image, head), reading Q, K and V in place through strides.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(out: &mut [f32], probs: &mut [f32], qkv: &[f32], batch: usize, t: usize, d: usize, h: usize) {
    let hd = d / h;
    assert_eq!(qkv.len(), batch * t * 3 * d, "attention: qkv shape");
    assert!(probs.len() >= batch * h * t * t && out.len() >= batch * t * d, "attention: output too small");
    let pp = SendPtr(probs.as_mut_ptr());
    let op = SendPtr(out.as_mut_ptr());
    let scale = attention_scale(d, h);
    (0..batch * h).into_par_iter().for_each(|bh| {
        let (b, hi) = (bh / h, bh % h);
        let base = b * t * 3 * d;
        let q = unsafe { qkv.as_ptr().add(base + hi * hd) };
        let k = unsafe { qkv.as_ptr().add(base + d + hi * hd) };
        let v = unsafe { qkv.as_ptr().add(base + 2 * d + hi * hd) };
        let p = unsafe { pp.slice(bh * t * t, t * t) };
        unsafe {
            sgemm_raw(
                t,
                t,
                hd,
                Mat::raw(q, 3 * d, 1),
                Mat::raw(k, 1, 3 * d),
                p.as_mut_ptr(),
                t,
                1,
                scale,
                false,
                false,
            );
        }
        for row in p.chunks_mut(t) {
            softmax_forward_inplace(row);
        }
        unsafe {
            let o = op.ptr().add(b * t * d + hi * hd);
            sgemm_raw(t, hd, t, Mat::rows(p, t), Mat::raw(v, 3 * d, 1), o, d, 1, 1.0, false, false);
        }
    });
}

/// Attention for the cls query (token 0) of each image only: `out` `[B, C]` and `probs`
/// `[B, H, T]` written. Used by the last block, whose other outputs nobody reads.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_cls(
    out: &mut [f32],
    probs: &mut [f32],
    qkv: &[f32],
    batch: usize,
    t: usize,
    d: usize,
    h: usize,
) {
    let hd = d / h;
    assert!(qkv.len() >= batch * t * 3 * d, "attention: qkv shape");
    assert!(probs.len() >= batch * h * t && out.len() >= batch * d, "attention: output too small");
    let scale = attention_scale(d, h);
    let pp = SendPtr(probs.as_mut_ptr());
    let op = SendPtr(out.as_mut_ptr());
    (0..batch * h).into_par_iter().for_each(|bh| {
        let (b, hi) = (bh / h, bh % h);
        let base = b * t * 3 * d;
        let q = &qkv[base + hi * hd..base + hi * hd + hd];
        let p = unsafe { pp.slice(bh * t, t) };
        for (j, pj) in p.iter_mut().enumerate() {
            let k = &qkv[base + j * 3 * d + d + hi * hd..][..hd];
            *pj = vec::dot(q, k) * scale;
        }
        softmax_forward_inplace(p);
        let o = unsafe { op.slice(b * d + hi * hd, hd) };
        o.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            let v = &qkv[base + j * 3 * d + 2 * d + hi * hd..][..hd];
            for (oo, &vv) in o.iter_mut().zip(v) {
                *oo += pj * vv;
            }
        }
    });
}

/// Backward of [`attention_forward_cls`]: `do_` is `[B, C]`; writes the whole `dqkv`
/// (zero for the queries of the other tokens).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_cls(
    dqkv: &mut [f32],
    scratch: &mut Tensor,
    do_: &[f32],
    qkv: &[f32],
    probs: &[f32],
    batch: usize,
    t: usize,
    d: usize,
    h: usize,
) {
    let hd = d / h;
    let scale = attention_scale(d, h);
    assert!(dqkv.len() >= batch * t * 3 * d, "attention: dqkv too small");
    ensure(scratch, batch * h * t);
    let sp = SendPtr(scratch.as_mut_ptr());
    let dq = SendPtr(dqkv.as_mut_ptr());
    (0..batch * h).into_par_iter().for_each(|bh| {
        let (b, hi) = (bh / h, bh % h);
        let base = b * t * 3 * d;
        let p = &probs[bh * t..(bh + 1) * t];
        let dob = &do_[b * d + hi * hd..b * d + hi * hd + hd];
        let q = &qkv[base + hi * hd..base + hi * hd + hd];
        // dS_j = p_j (dP_j − Σ p dP), dP_j = dO · v_j
        let dpv = unsafe { sp.slice(bh * t, t) };
        let mut s = 0.0f32;
        for j in 0..t {
            let v = &qkv[base + j * 3 * d + 2 * d + hi * hd..][..hd];
            dpv[j] = vec::dot(dob, v);
            s += dpv[j] * p[j];
        }
        let dq0 = unsafe { dq.slice(base + hi * hd, hd) };
        dq0.fill(0.0);
        for j in 0..t {
            let g = p[j] * (dpv[j] - s) * scale;
            let row = base + j * 3 * d;
            let k = &qkv[row + d + hi * hd..][..hd];
            for (a, &kk) in dq0.iter_mut().zip(k) {
                *a += g * kk;
            }
            let dk = unsafe { dq.slice(row + d + hi * hd, hd) };
            let dv = unsafe { dq.slice(row + 2 * d + hi * hd, hd) };
            for c in 0..hd {
                dk[c] = g * q[c];
                dv[c] = p[j] * dob[c];
            }
            if j > 0 {
                unsafe { dq.slice(row + hi * hd, hd) }.fill(0.0);
            }
        }
    });
}

/// Backward of [`attention_forward`]: `dqkv` `[B·T, 3C]` written from `do_` `[B·T, C]`;
/// `scratch` is workspace (grown to `B·H·T²` floats).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: &mut [f32],
    scratch: &mut Tensor,
    do_: &[f32],
    qkv: &[f32],
    probs: &[f32],
    batch: usize,
    t: usize,
    d: usize,
    h: usize,
) {
    let hd = d / h;
    assert!(dqkv.len() >= batch * t * 3 * d, "attention: dqkv too small");
    ensure(scratch, batch * h * t * t);
    let dpp = SendPtr(scratch.as_mut_ptr());
    let dq = SendPtr(dqkv.as_mut_ptr());
    let (p, scale) = (probs, attention_scale(d, h));
    (0..batch * h).into_par_iter().for_each(|bh| {
        let (b, hi) = (bh / h, bh % h);
        let base = b * t * 3 * d;
        let q = unsafe { qkv.as_ptr().add(base + hi * hd) };
        let k = unsafe { qkv.as_ptr().add(base + d + hi * hd) };
        let v = unsafe { qkv.as_ptr().add(base + 2 * d + hi * hd) };
        let dob = unsafe { do_.as_ptr().add(b * t * d + hi * hd) };
        let pb = &p[bh * t * t..(bh + 1) * t * t];
        let ds = unsafe { dpp.slice(bh * t * t, t * t) };
        unsafe {
            // dP = dO Vᵀ
            sgemm_raw(t, t, hd, Mat::raw(dob, d, 1), Mat::raw(v, 1, 3 * d), ds.as_mut_ptr(), t, 1, 1.0, false, false);
        }
        // dS = P ⊙ (dP − Σ_j dP⊙P)
        for (dr, pr) in ds.chunks_mut(t).zip(pb.chunks(t)) {
            let s = vec::dot(dr, pr);
            for (x, &pv) in dr.iter_mut().zip(pr) {
                *x = pv * (*x - s);
            }
        }
        unsafe {
            let out = dq.ptr().add(base);
            // dQ = scale · dS K
            sgemm_raw(
                t,
                hd,
                t,
                Mat::rows(ds, t),
                Mat::raw(k, 3 * d, 1),
                out.add(hi * hd),
                3 * d,
                1,
                scale,
                false,
                false,
            );
            // dK = scale · dSᵀ Q
            sgemm_raw(
                t,
                hd,
                t,
                Mat::trans(ds, t),
                Mat::raw(q, 3 * d, 1),
                out.add(d + hi * hd),
                3 * d,
                1,
                scale,
                false,
                false,
            );
            // dV = Pᵀ dO
            sgemm_raw(
                t,
                hd,
                t,
                Mat::trans(pb, t),
                Mat::raw(dob, d, 1),
                out.add(2 * d + hi * hd),
                3 * d,
                1,
                1.0,
                false,
                false,
            );
        }
    });
}

/// Numerically stable softmax of one row `[n]`, in place (the vectorised exp of `fastmath`).
#[inline]
pub fn softmax_forward_inplace(row: &mut [f32]) {
    let m = vec::max(row);
    let inv = 1.0 / crate::engine::fastmath::exp_shifted_sum(row, m);
    for x in row.iter_mut() {
        *x *= inv;
    }
}
