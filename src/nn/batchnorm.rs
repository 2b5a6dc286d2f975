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
use crate::engine::par::SendPtr;
use rayon::prelude::*;

const BLOCK: usize = 32;

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
            groups: 1,
        }
    }

    pub fn forward(&mut self, x: &[f32], rows: usize, groups: usize) {
        let c = self.c;
        assert_eq!(x.len(), rows * c, "batchnorm {}: input shape", self.name);
        assert!(groups > 0 && rows % groups == 0, "batchnorm: rows not divisible into groups");
        ensure(&mut self.y, rows * c);
        let n = rows / groups;
        self.groups = groups;
        let ones = vec![1.0f32; 0];
        let g = self.gamma.as_ref().map(|p| &p.w[..]).unwrap_or(&ones);
        let b = self.beta.as_ref().map(|p| &p.w[..]).unwrap_or(&ones);
        let yp = SendPtr(self.y.as_mut_ptr());
        let eps = self.eps;
        if !self.training {
            let (rm, rv) = (&self.running_mean, &self.running_var);
            (0..rows).into_par_iter().with_min_len(64).for_each(|r| {
                let y = unsafe { yp.slice(r * c, c) };
                for j in 0..c {
                    let v = (x[r * c + j] - rm[j]) / (rv[j] + eps).sqrt();
                    y[j] = if g.is_empty() { v } else { v * g[j] + b[j] };
                }
            });
            return;
        }
        ensure(&mut self.mean, groups * c);
        ensure(&mut self.rstd, groups * c);
        ensure(&mut self.var_unbiased, groups * c);
        let mp = SendPtr(self.mean.as_mut_ptr());
        let sp = SendPtr(self.rstd.as_mut_ptr());
        let up = SendPtr(self.var_unbiased.as_mut_ptr());
        let nblocks = c.div_ceil(BLOCK);
        (0..nblocks * groups).into_par_iter().for_each(|task| {
            let (gi, bi) = (task / nblocks, task % nblocks);
            let c0 = bi * BLOCK;
            let w = BLOCK.min(c - c0);
            let mut s = [0.0f32; BLOCK];
            for r in gi * n..(gi + 1) * n {
                for k in 0..w {
                    s[k] += x[r * c + c0 + k];
                }
            }
            let mut mean = [0.0f32; BLOCK];
            for k in 0..w {
                mean[k] = s[k] / n as f32;
            }
            let mut q = [0.0f32; BLOCK];
            for r in gi * n..(gi + 1) * n {
                for k in 0..w {
                    let dv = x[r * c + c0 + k] - mean[k];
                    q[k] += dv * dv;
                }
            }
            let mut rstd = [0.0f32; BLOCK];
            unsafe {
                let (ms, ss, us) = (mp.slice(gi * c + c0, w), sp.slice(gi * c + c0, w), up.slice(gi * c + c0, w));
                for k in 0..w {
                    rstd[k] = 1.0 / (q[k] / n as f32 + eps).sqrt();
                    ms[k] = mean[k];
                    ss[k] = rstd[k];
                    us[k] = if n > 1 { q[k] / (n - 1) as f32 } else { q[k] };
                }
            }
            for r in gi * n..(gi + 1) * n {
                let y = unsafe { yp.slice(r * c + c0, w) };
                for k in 0..w {
                    let v = (x[r * c + c0 + k] - mean[k]) * rstd[k];
                    y[k] = if g.is_empty() { v } else { v * g[c0 + k] + b[c0 + k] };
                }
            }
        });
        let mom = self.momentum;
        for gi in 0..groups {
            for j in 0..c {
                self.running_mean[j] = mom * self.mean[gi * c + j] + (1.0 - mom) * self.running_mean[j];
                self.running_var[j] = mom * self.var_unbiased[gi * c + j] + (1.0 - mom) * self.running_var[j];
            }
            self.num_batches_tracked[0] += 1.0;
        }
    }

    pub fn backward(&mut self, x: &[f32], dy: &[f32], rows: usize, dx: &mut [f32]) {
        let c = self.c;
        let ones = vec![1.0f32; 0];
        let g = self.gamma.as_ref().map(|p| &p.w[..]).unwrap_or(&ones);
        let dxp = SendPtr(dx.as_mut_ptr());
        if !self.training {
            let rv = &self.running_var;
            let eps = self.eps;
            (0..rows).into_par_iter().with_min_len(64).for_each(|r| {
                let out = unsafe { dxp.slice(r * c, c) };
                for j in 0..c {
                    let gj = if g.is_empty() { 1.0 } else { g[j] };
                    out[j] = dy[r * c + j] * gj / (rv[j] + eps).sqrt();
                }
            });
            let rm = &self.running_mean;
            if let (Some(gm), Some(bt)) = (&mut self.gamma, &mut self.beta) {
                param_grads(&mut gm.g, &mut bt.g, dy, rows, c, |r, j| (x[r * c + j] - rm[j]) / (rv[j] + eps).sqrt());
            }
            return;
        }
        let groups = self.groups;
        let n = rows / groups;
        let (mean, rstd) = (&self.mean, &self.rstd);
        let nblocks = c.div_ceil(BLOCK);
        (0..nblocks * groups).into_par_iter().for_each(|task| {
            let (gi, bi) = (task / nblocks, task % nblocks);
            let c0 = bi * BLOCK;
            let w = BLOCK.min(c - c0);
            let (m, s) = (&mean[gi * c + c0..], &rstd[gi * c + c0..]);
            let mut sdy = [0.0f32; BLOCK];
            let mut sdyx = [0.0f32; BLOCK];
            for r in gi * n..(gi + 1) * n {
                for k in 0..w {
                    let i = r * c + c0 + k;
                    sdy[k] += dy[i];
                    sdyx[k] += dy[i] * (x[i] - m[k]) * s[k];
                }
            }
            let inv_n = 1.0 / n as f32;
            for r in gi * n..(gi + 1) * n {
                let out = unsafe { dxp.slice(r * c + c0, w) };
                for k in 0..w {
                    let i = r * c + c0 + k;
                    let gk = if g.is_empty() { 1.0 } else { g[c0 + k] };
                    let xh = (x[i] - m[k]) * s[k];
                    out[k] = gk * s[k] * (dy[i] - sdy[k] * inv_n - xh * sdyx[k] * inv_n);
                }
            }
        });
        if let (Some(gm), Some(bt)) = (&mut self.gamma, &mut self.beta) {
            param_grads(&mut gm.g, &mut bt.g, dy, rows, c, |r, j| {
                let gi = r / n;
                (x[r * c + j] - mean[gi * c + j]) * rstd[gi * c + j]
            });
        }
    }
}

/// dγ = Σ dy · x̂ and dβ = Σ dy over all rows, in row order per channel.
fn param_grads(
    gg: &mut [f32],
    bg: &mut [f32],
    dy: &[f32],
    rows: usize,
    c: usize,
    xhat: impl Fn(usize, usize) -> f32 + Sync,
) {
    gg.par_chunks_mut(BLOCK).zip(bg.par_chunks_mut(BLOCK)).enumerate().for_each(|(bi, (sg, sb))| {
        let c0 = bi * BLOCK;
        sg.fill(0.0);
        sb.fill(0.0);
        for r in 0..rows {
            for k in 0..sg.len() {
                let d = dy[r * c + c0 + k];
                sg[k] += d * xhat(r, c0 + k);
                sb[k] += d;
            }
        }
    });
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
