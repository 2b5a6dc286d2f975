//! BatchNorm1d over `[rows, channels]`, PyTorch semantics (eps 1e-5, momentum 0.1, biased
//! variance for normalising, unbiased for the running estimate), with an optional affine part.
//!
//! On NHWC activations flattened to `[images × positions, channels]` this is exactly PyTorch's
//! BatchNorm2d (statistics over images and positions, unbiased factor from that count), which is
//! how the ResNet layers use it.
//!
//! `groups` splits the rows into equal consecutive groups normalised separately: MoCo v3 runs
//! each view through the model on its own, so each view has its own batch statistics. Running
//! statistics are updated group after group, exactly as two separate forward passes would.

use super::param::{Buffer, Module, Param, ParamKind};
use crate::engine::ensure;
use crate::engine::par::{self, SendPtr};
use rayon::prelude::*;

pub struct BatchNorm1d {
    pub gamma: Option<Param>,
    pub beta: Option<Param>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    pub num_batches_tracked: Vec<f32>,
    pub c: usize,
    pub eps: f32,
    pub momentum: f32,
    pub training: bool,
    pub y: Vec<f32>,
    name: String,
    /// Per group and channel: mean, 1/std (training) of the last forward.
    mean: Vec<f32>,
    rstd: Vec<f32>,
    var_unbiased: Vec<f32>,
    /// Per group and channel: the transform y = x·alpha + shift of the last forward.
    alpha: Vec<f32>,
    shift: Vec<f32>,
    partials: Vec<f32>,
    groups: usize,
}

impl BatchNorm1d {
    pub fn new(name: &str, c: usize, affine: bool) -> BatchNorm1d {
        BatchNorm1d {
            gamma: affine.then(|| Param::filled(&format!("{name}.weight"), &[c], ParamKind::Norm, 1.0)),
            beta: affine.then(|| Param::zeros(&format!("{name}.bias"), &[c], ParamKind::Norm)),
            running_mean: vec![0.0; c],
            running_var: vec![1.0; c],
            num_batches_tracked: vec![0.0],
            c,
            eps: 1e-5,
            momentum: 0.1,
            training: true,
            y: Vec::new(),
            name: name.to_string(),
            mean: Vec::new(),
            rstd: Vec::new(),
            var_unbiased: Vec::new(),
            alpha: Vec::new(),
            shift: Vec::new(),
            partials: Vec::new(),
            groups: 1,
        }
    }

    /// Per-channel scale and shift of the eval-mode transform `y = x·α + β` (PyTorch's form).
    fn eval_affine(&self, j: usize) -> (f32, f32) {
        let inv = 1.0 / (self.running_var[j] + self.eps).sqrt();
        let (g, b) = self.affine(j);
        (g * inv, b - self.running_mean[j] * g * inv)
    }

    fn affine(&self, j: usize) -> (f32, f32) {
        match (&self.gamma, &self.beta) {
            (Some(g), Some(b)) => (g.w[j], b.w[j]),
            _ => (1.0, 0.0),
        }
    }

    pub fn forward(&mut self, x: &[f32], rows: usize, groups: usize) {
        let c = self.c;
        assert_eq!(x.len(), rows * c, "batchnorm {}: input shape", self.name);
        assert!(groups > 0 && rows.is_multiple_of(groups), "batchnorm: rows not divisible into groups");
        ensure(&mut self.y, rows * c);
        let n = rows / groups;
        self.groups = groups;
        // Per group: y = x·α + β with α = γ/σ, β = b − μ·α (PyTorch's CPU kernel computes the same).
        ensure(&mut self.alpha, groups * c);
        ensure(&mut self.shift, groups * c);
        if !self.training {
            for j in 0..c {
                (self.alpha[j], self.shift[j]) = self.eval_affine(j);
            }
            affine_rows(&mut self.y[..rows * c], x, c, rows, &self.alpha[..c], &self.shift[..c]);
            return;
        }
        for v in [&mut self.mean, &mut self.rstd, &mut self.var_unbiased] {
            ensure(v, groups * c);
        }
        let mut tmp = vec![0.0f32; 0];
        ensure(&mut tmp, c);
        for gi in 0..groups {
            let r = gi * n..(gi + 1) * n;
            let mean = &mut self.mean[gi * c..(gi + 1) * c];
            row_sums(&mut self.partials, r.clone(), c, mean, &mut tmp, |row, c0, a, _| {
                for (a, v) in a.iter_mut().zip(&x[row * c + c0..]) {
                    *a += v;
                }
            });
            mean.iter_mut().for_each(|m| *m /= n as f32);
            let mean = &self.mean[gi * c..(gi + 1) * c];
            let q = &mut self.var_unbiased[gi * c..(gi + 1) * c];
            row_sums(&mut self.partials, r, c, q, &mut tmp, |row, c0, a, _| {
                for ((a, v), m) in a.iter_mut().zip(&x[row * c + c0..]).zip(&mean[c0..]) {
                    let d = v - m;
                    *a += d * d;
                }
            });
            for j in 0..c {
                let q = self.var_unbiased[gi * c + j];
                let rstd = 1.0 / (q / n as f32 + self.eps).sqrt();
                self.rstd[gi * c + j] = rstd;
                self.var_unbiased[gi * c + j] = if n > 1 { q / (n - 1) as f32 } else { q };
                let (g, b) = self.affine(j);
                self.alpha[gi * c + j] = g * rstd;
                self.shift[gi * c + j] = b - self.mean[gi * c + j] * g * rstd;
            }
            let (a, sh) = (&self.alpha[gi * c..(gi + 1) * c], &self.shift[gi * c..(gi + 1) * c]);
            affine_rows(&mut self.y[gi * n * c..(gi + 1) * n * c], &x[gi * n * c..(gi + 1) * n * c], c, n, a, sh);
        }
        let mom = self.momentum;
        for gi in 0..groups {
            for j in 0..c {
                self.running_mean[j] = mom * self.mean[gi * c + j] + (1.0 - mom) * self.running_mean[j];
                self.running_var[j] = mom * self.var_unbiased[gi * c + j] + (1.0 - mom) * self.running_var[j];
            }
            self.num_batches_tracked[0] += 1.0;
        }
    }

    /// Input gradient into `dx`; γ and β gradients (overwritten) when affine.
    pub fn backward(&mut self, x: &[f32], dy: &[f32], rows: usize, dx: &mut [f32]) {
        let c = self.c;
        let (mut sdy, mut sdyx) = (vec![0.0f32; c], vec![0.0f32; c]);
        let (mut tg, mut tb) = (vec![0.0f32; c], vec![0.0f32; c]);
        if !self.training {
            // dx = dy·α; dγ = Σ dy·x̂, dβ = Σ dy with x̂ = (x − μ_run)/σ_run.
            let zero = vec![0.0f32; c];
            affine_rows(&mut dx[..rows * c], &dy[..rows * c], c, rows, &self.alpha[..c], &zero);
            if self.gamma.is_some() {
                let (rm, eps) = (&self.running_mean, self.eps);
                let inv: Vec<f32> = self.running_var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
                row_sums(&mut self.partials, 0..rows, c, &mut tg, &mut tb, |r, c0, a, b| {
                    let (d, xr) = (&dy[r * c + c0..][..a.len()], &x[r * c + c0..]);
                    for k in 0..a.len() {
                        a[k] += d[k] * (xr[k] - rm[c0 + k]) * inv[c0 + k];
                        b[k] += d[k];
                    }
                });
            }
            self.set_param_grads(&tg, &tb);
            return;
        }
        let groups = self.groups;
        let n = rows / groups;
        let inv_n = 1.0 / n as f32;
        let (mut coef_a, mut coef_b, mut coef_c) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
        for gi in 0..groups {
            let (m, s) = (&self.mean[gi * c..(gi + 1) * c], &self.rstd[gi * c..(gi + 1) * c]);
            row_sums(&mut self.partials, gi * n..(gi + 1) * n, c, &mut sdy, &mut sdyx, |r, c0, a, b| {
                let (d, xr) = (&dy[r * c + c0..][..a.len()], &x[r * c + c0..]);
                for k in 0..a.len() {
                    a[k] += d[k];
                    b[k] += d[k] * (xr[k] - m[c0 + k]) * s[c0 + k];
                }
            });
            // dx = γσ⁻¹(dy − Σdy/n − x̂·Σ(dy·x̂)/n) = dy·A + x·B + C per channel.
            for j in 0..c {
                let (g, _) = self.affine(j);
                let (mj, sj) = (m[j], s[j]);
                coef_a[j] = g * sj;
                coef_b[j] = -g * sj * sj * sdyx[j] * inv_n;
                coef_c[j] = g * sj * (mj * sj * sdyx[j] * inv_n - sdy[j] * inv_n);
                tg[j] += sdyx[j];
                tb[j] += sdy[j];
            }
            let o = gi * n * c..(gi + 1) * n * c;
            let (xg, dyg) = (&x[o.clone()], &dy[o.clone()]);
            let (ca, cb, cc) = (&coef_a, &coef_b, &coef_c);
            par::for_rows(&mut dx[o], c, |r, out| {
                let (d, xr) = (&dyg[r * c..(r + 1) * c], &xg[r * c..(r + 1) * c]);
                for k in 0..c {
                    out[k] = d[k] * ca[k] + xr[k] * cb[k] + cc[k];
                }
            });
        }
        self.set_param_grads(&tg, &tb);
    }

    /// dγ and dβ (overwritten), when affine.
    fn set_param_grads(&mut self, tg: &[f32], tb: &[f32]) {
        if let (Some(gm), Some(bt)) = (&mut self.gamma, &mut self.beta) {
            gm.g.copy_from_slice(tg);
            bt.g.copy_from_slice(tb);
        }
    }
}

/// `y[r] = x[r]·α + β` per channel, rows in parallel.
fn affine_rows(y: &mut [f32], x: &[f32], c: usize, rows: usize, alpha: &[f32], shift: &[f32]) {
    par::for_rows(&mut y[..rows * c], c, |r, out| {
        for ((o, v), (a, b)) in out.iter_mut().zip(&x[r * c..(r + 1) * c]).zip(alpha.iter().zip(shift)) {
            *o = v * a + b;
        }
    });
}

/// Two per-channel sums over the rows `range`: `term(row, c0, a, b)` adds the row's values for
/// channels `c0..c0 + a.len()` into `a` and `b`. Rows are cut into fixed chunks and channels into
/// fixed blocks (parallel tasks); the chunks' partial sums are then added in chunk order, so the
/// result does not depend on the number of threads.
fn row_sums(
    partials: &mut Vec<f32>,
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

impl Module for BatchNorm1d {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Param)) {
        if let Some(p) = &mut self.gamma {
            f(p);
        }
        if let Some(p) = &mut self.beta {
            f(p);
        }
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        let c = self.c;
        f(Buffer { name: format!("{}.running_mean", self.name), shape: vec![c], data: &mut self.running_mean });
        f(Buffer { name: format!("{}.running_var", self.name), shape: vec![c], data: &mut self.running_var });
        f(Buffer {
            name: format!("{}.num_batches_tracked", self.name),
            shape: vec![],
            data: &mut self.num_batches_tracked,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    fn check(affine: bool, groups: usize, training: bool) {
        let (rows, c) = (8, 5);
        let mut bn = BatchNorm1d::new("bn", c, affine);
        bn.training = training;
        let mut rng = crate::engine::rng::Rng::new(9);
        if affine {
            bn.gamma.as_mut().unwrap().init_normal(&mut rng, 1.0);
            bn.beta.as_mut().unwrap().init_normal(&mut rng, 1.0);
        }
        for v in bn.running_var.iter_mut() {
            *v = 0.5 + rng.uniform_f64() as f32;
        }
        check_layer(
            &mut bn,
            rows * c,
            rows * c,
            |l, x| {
                l.forward(x, rows, groups);
                l.y[..rows * c].to_vec()
            },
            |l, x, dy, dx| l.backward(x, dy, rows, dx),
            Probe { eps: 3e-3, ..Probe::default() },
        );
    }

    #[test]
    fn finite_differences() {
        for affine in [true, false] {
            for groups in [1, 2] {
                check(affine, groups, true);
            }
            check(affine, 1, false);
        }
    }

    #[test]
    fn groups_equal_separate_passes() {
        let (n, c) = (6, 4);
        let mut rng = crate::engine::rng::Rng::new(2);
        let x: Vec<f32> = (0..2 * n * c).map(|_| rng.normal()).collect();
        let mut a = BatchNorm1d::new("a", c, true);
        a.forward(&x, 2 * n, 2);
        let mut b = BatchNorm1d::new("b", c, true);
        b.forward(&x[..n * c], n, 1);
        let first = b.y[..n * c].to_vec();
        b.forward(&x[n * c..], n, 1);
        assert_eq!(&a.y[..n * c], &first[..]);
        assert_eq!(&a.y[n * c..2 * n * c], &b.y[..n * c]);
        assert_eq!(a.running_mean, b.running_mean);
        assert_eq!(a.running_var, b.running_var);
        assert_eq!(a.num_batches_tracked, vec![2.0]);
    }
}
