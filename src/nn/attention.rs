//! The core of multi-head self-attention, softmax(Q Kᵀ · scale) V, on the packed `qkv` output of
//! a Linear layer laid out as timm's (`[rows, 3, heads, head_dim]`). The Linear layers around it
//! (qkv, proj) live in the transformer block. Heads are processed in parallel, one task per
//! (image, head), reading Q, K and V in place through strides.

use crate::engine::gemm::{sgemm_raw, Mat};
use crate::engine::par::SendPtr;
use crate::engine::{ensure, vec};
use rayon::prelude::*;

pub struct Attention {
    pub dim: usize,
    pub heads: usize,
    pub scale: f32,
    /// Softmax probabilities, `[batch, heads, tokens, tokens]`.
    pub p: Vec<f32>,
    /// Output, `[batch * tokens, dim]` (heads side by side).
    pub o: Vec<f32>,
}

impl Attention {
    pub fn new(dim: usize, heads: usize) -> Attention {
        assert!(dim.is_multiple_of(heads), "dim {dim} not divisible by heads {heads}");
        let hd = dim / heads;
        Attention { dim, heads, scale: (hd as f32).powf(-0.5), p: Vec::new(), o: Vec::new() }
    }

    pub fn forward(&mut self, qkv: &[f32], batch: usize, t: usize) {
        let (d, h) = (self.dim, self.heads);
        let hd = d / h;
        assert_eq!(qkv.len(), batch * t * 3 * d, "attention: qkv shape");
        ensure(&mut self.p, batch * h * t * t);
        ensure(&mut self.o, batch * t * d);
        let pp = SendPtr(self.p.as_mut_ptr());
        let op = SendPtr(self.o.as_mut_ptr());
        let scale = self.scale;
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
                softmax_inplace(row);
            }
            unsafe {
                let o = op.ptr().add(b * t * d + hi * hd);
                sgemm_raw(t, hd, t, Mat::rows(p, t), Mat::raw(v, 3 * d, 1), o, d, 1, 1.0, false, false);
            }
        });
    }

    /// Attention for the cls query (token 0) of each image only: `o` becomes `[batch, dim]` and
    /// `p` `[batch, heads, tokens]`. Used by the last block, whose other outputs nobody reads.
    pub fn forward_cls(&mut self, qkv: &[f32], batch: usize, t: usize) {
        let (d, h) = (self.dim, self.heads);
        let hd = d / h;
        ensure(&mut self.p, batch * h * t);
        ensure(&mut self.o, batch * d);
        let scale = self.scale;
        let pp = SendPtr(self.p.as_mut_ptr());
        let op = SendPtr(self.o.as_mut_ptr());
        (0..batch * h).into_par_iter().for_each(|bh| {
            let (b, hi) = (bh / h, bh % h);
            let base = b * t * 3 * d;
            let q = &qkv[base + hi * hd..base + hi * hd + hd];
            let p = unsafe { pp.slice(bh * t, t) };
            for (j, pj) in p.iter_mut().enumerate() {
                let k = &qkv[base + j * 3 * d + d + hi * hd..][..hd];
                *pj = vec::dot(q, k) * scale;
            }
            softmax_inplace(p);
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

    /// Backward of [`Attention::forward_cls`]: `do_` is `[batch, dim]`; writes the whole `dqkv`
    /// (zero for the queries of the other tokens).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_cls(
        &self,
        qkv: &[f32],
        do_: &[f32],
        dqkv: &mut [f32],
        scratch: &mut Vec<f32>,
        batch: usize,
        t: usize,
    ) {
        let (d, h) = (self.dim, self.heads);
        let hd = d / h;
        let scale = self.scale;
        ensure(scratch, batch * h * t);
        let sp = SendPtr(scratch.as_mut_ptr());
        let dq = SendPtr(dqkv.as_mut_ptr());
        (0..batch * h).into_par_iter().for_each(|bh| {
            let (b, hi) = (bh / h, bh % h);
            let base = b * t * 3 * d;
            let p = &self.p[bh * t..(bh + 1) * t];
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

    pub fn swap_activations(&mut self, other: &mut Attention) {
        std::mem::swap(&mut self.p, &mut other.p);
        std::mem::swap(&mut self.o, &mut other.o);
    }

    /// `do_` is the gradient of `o`; writes the gradient of `qkv` into `dqkv`. `scratch` is
    /// workspace (grown to `batch·heads·tokens²` floats), shared by all blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(&self, qkv: &[f32], do_: &[f32], dqkv: &mut [f32], scratch: &mut Vec<f32>, batch: usize, t: usize) {
        let (d, h) = (self.dim, self.heads);
        let hd = d / h;
        ensure(scratch, batch * h * t * t);
        let dpp = SendPtr(scratch.as_mut_ptr());
        let dq = SendPtr(dqkv.as_mut_ptr());
        let (p, scale) = (&self.p, self.scale);
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
                sgemm_raw(
                    t,
                    t,
                    hd,
                    Mat::raw(dob, d, 1),
                    Mat::raw(v, 1, 3 * d),
                    ds.as_mut_ptr(),
                    t,
                    1,
                    1.0,
                    false,
                    false,
                );
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
}

/// Numerically stable softmax of one row, in place.
#[inline]
pub fn softmax_inplace(row: &mut [f32]) {
    let m = vec::max(row);
    let inv = 1.0 / crate::engine::fastmath::exp_shifted_sum(row, m);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

impl crate::nn::Module for Attention {
    fn visit(&mut self, _f: &mut dyn FnMut(&mut crate::nn::Param)) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn finite_differences() {
        let (b, t, d, h) = (2, 5, 8, 2);
        let mut a = Attention::new(d, h);
        check_layer(
            &mut a,
            b * t * 3 * d,
            b * t * d,
            |a, x| {
                a.forward(x, b, t);
                a.o[..b * t * d].to_vec()
            },
            |a, x, dy, dx| a.backward(x, dy, dx, &mut Vec::new(), b, t),
            Probe { eps: 1e-3, ..Probe::default() },
        );
    }

    #[test]
    fn cls_only_matches_full_attention() {
        let (b, t, d, h) = (2, 5, 8, 2);
        let mut rng = crate::engine::rng::Rng::new(6);
        let qkv: Vec<f32> = (0..b * t * 3 * d).map(|_| rng.normal()).collect();
        let mut full = Attention::new(d, h);
        full.forward(&qkv, b, t);
        let mut cls = Attention::new(d, h);
        cls.forward_cls(&qkv, b, t);
        for bi in 0..b {
            for c in 0..d {
                assert!((full.o[bi * t * d + c] - cls.o[bi * d + c]).abs() < 1e-5);
            }
        }
        // Gradients agree when only the cls rows of the output receive a gradient.
        let dcls: Vec<f32> = (0..b * d).map(|_| rng.normal()).collect();
        let mut dfull = vec![0.0f32; b * t * d];
        for bi in 0..b {
            dfull[bi * t * d..bi * t * d + d].copy_from_slice(&dcls[bi * d..(bi + 1) * d]);
        }
        let mut g1 = vec![0.0f32; b * t * 3 * d];
        let mut g2 = vec![1.0f32; b * t * 3 * d];
        full.backward(&qkv, &dfull, &mut g1, &mut Vec::new(), b, t);
        cls.backward_cls(&qkv, &dcls, &mut g2, &mut Vec::new(), b, t);
        for (x, y) in g1.iter().zip(&g2) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn uniform_attention_averages_values() {
        // Q = 0 makes every score equal: each output row is the mean of V over tokens.
        let (t, d) = (3, 2);
        let mut qkv = vec![0.0f32; t * 3 * d];
        for i in 0..t {
            qkv[i * 3 * d + 2 * d] = i as f32;
            qkv[i * 3 * d + 2 * d + 1] = 10.0 * i as f32;
            qkv[i * 3 * d + d] = 5.0 * i as f32; // keys are irrelevant when Q = 0
        }
        let mut a = Attention::new(d, 1);
        a.forward(&qkv, 1, t);
        for i in 0..t {
            assert!((a.o[i * d] - 1.0).abs() < 1e-6 && (a.o[i * d + 1] - 10.0).abs() < 1e-5);
        }
    }
}
