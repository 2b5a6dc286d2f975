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
//!
//! The batch statistics and the two gradient sums go through the engine's communicator
//! ([`comm::world`]): summed over every process of a data-parallel job (SyncBN), the identity in
//! one process.

use super::param::{Buffer, Module, Param, ParamKind};
use crate::engine::tensor::Tensor;
use crate::engine::{comm, ensure, ops};

pub struct BatchNorm1d {
    pub gamma: Option<Param>,
    pub beta: Option<Param>,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
    pub c: usize,
    pub eps: f32,
    pub momentum: f32,
    pub training: bool,
    /// A ReLU follows in place (a ResNet stage): the forward writes max(0, BN(x)) in the same
    /// pass, and the backward takes the ReLU's mask from the output.
    pub relu: bool,
    pub y: Tensor,
    name: String,
    /// Per group and channel: mean, 1/std (training) of the last forward.
    mean: Tensor,
    rstd: Tensor,
    var_unbiased: Tensor,
    /// Per group and channel: the transform y = x·alpha + shift of the last forward.
    alpha: Tensor,
    shift: Tensor,
    partials: Tensor,
    groups: usize,
}

impl BatchNorm1d {
    /// The output of the last forward (read it through this, not the field).
    pub fn output(&self) -> &[f32] {
        &self.y
    }

    pub fn new(name: &str, c: usize, affine: bool) -> BatchNorm1d {
        BatchNorm1d {
            gamma: affine.then(|| Param::filled(&format!("{name}.weight"), &[c], ParamKind::Norm, 1.0)),
            beta: affine.then(|| Param::zeros(&format!("{name}.bias"), &[c], ParamKind::Norm)),
            running_mean: Tensor::zeros(c),
            running_var: Tensor::full(c, 1.0),
            num_batches_tracked: Tensor::zeros(1),
            c,
            eps: 1e-5,
            momentum: 0.1,
            training: true,
            relu: false,
            y: Tensor::new(),
            name: name.to_string(),
            mean: Tensor::new(),
            rstd: Tensor::new(),
            var_unbiased: Tensor::new(),
            alpha: Tensor::new(),
            shift: Tensor::new(),
            partials: Tensor::new(),
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
            ops::batchnorm_affine(&mut self.y, x, &self.alpha[..c], &self.shift[..c], rows, c, self.relu);
            return;
        }
        for v in [&mut self.mean, &mut self.rstd, &mut self.var_unbiased] {
            ensure(v, groups * c);
        }
        let world = comm::world();
        // Rows of this group over every process.
        let n_all = n * world.world();
        for gi in 0..groups {
            let r = gi * n..(gi + 1) * n;
            let mean = &mut self.mean[gi * c..(gi + 1) * c];
            ops::batchnorm_sum(&mut self.partials, mean, x, r.clone(), c);
            world.all_reduce_sum(mean);
            mean.iter_mut().for_each(|m| *m /= n_all as f32);
            let mean = &self.mean[gi * c..(gi + 1) * c];
            let q = &mut self.var_unbiased[gi * c..(gi + 1) * c];
            ops::batchnorm_sq_dev(&mut self.partials, q, x, mean, r, c);
            world.all_reduce_sum(q);
            for j in 0..c {
                let q = self.var_unbiased[gi * c + j];
                let rstd = 1.0 / (q / n_all as f32 + self.eps).sqrt();
                self.rstd[gi * c + j] = rstd;
                self.var_unbiased[gi * c + j] = if n_all > 1 { q / (n_all - 1) as f32 } else { q };
                let (g, b) = self.affine(j);
                self.alpha[gi * c + j] = g * rstd;
                self.shift[gi * c + j] = b - self.mean[gi * c + j] * g * rstd;
            }
            let (a, sh) = (&self.alpha[gi * c..(gi + 1) * c], &self.shift[gi * c..(gi + 1) * c]);
            ops::batchnorm_affine(
                &mut self.y[gi * n * c..(gi + 1) * n * c],
                &x[gi * n * c..(gi + 1) * n * c],
                a,
                sh,
                n,
                c,
                self.relu,
            );
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

    /// Exchange the output buffer with another BatchNorm (forward-only memory reuse).
    pub fn swap_activations(&mut self, o: &mut BatchNorm1d) {
        std::mem::swap(&mut self.y, &mut o.y);
    }

    /// Input gradient into `dx`; γ and β gradients (overwritten) when affine. `dy` is the
    /// gradient of the output (after the ReLU when one follows).
    pub fn backward(&mut self, x: &[f32], dy: &[f32], rows: usize, dx: &mut [f32]) {
        let c = self.c;
        let mask = self.relu.then(|| &self.y[..rows * c]);
        let (mut sdy, mut sdyx) = (vec![0.0f32; c], vec![0.0f32; c]);
        let (mut tg, mut tb) = (vec![0.0f32; c], vec![0.0f32; c]);
        if !self.training {
            // dx = dy·α; dγ = Σ dy·x̂, dβ = Σ dy with x̂ = (x − μ_run)/σ_run.
            let zero = vec![0.0f32; c];
            match mask {
                None => ops::batchnorm_affine(dx, &dy[..rows * c], &self.alpha[..c], &zero, rows, c, false),
                Some(_) => ops::batchnorm_backward_dx(dx, dy, x, &self.alpha[..c], &zero, &zero, rows, c, mask),
            }
            if self.gamma.is_some() {
                let (rm, eps) = (&self.running_mean, self.eps);
                let inv: Vec<f32> = self.running_var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
                ops::batchnorm_grad_sums(&mut self.partials, &mut tb, &mut tg, dy, x, rm, &inv, 0..rows, c, mask);
            }
            self.set_param_grads(&tg, &tb);
            return;
        }
        let groups = self.groups;
        let n = rows / groups;
        let world = comm::world();
        let inv_n = 1.0 / (n * world.world()) as f32;
        let (mut coef_a, mut coef_b, mut coef_c) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
        for gi in 0..groups {
            let (m, s) = (&self.mean[gi * c..(gi + 1) * c], &self.rstd[gi * c..(gi + 1) * c]);
            let r = gi * n..(gi + 1) * n;
            ops::batchnorm_grad_sums(&mut self.partials, &mut sdy, &mut sdyx, dy, x, m, s, r, c, mask);
            // dγ and dβ from this process's rows (the data-parallel trainer averages parameter
            // gradients over the processes afterwards, as for every other parameter); dx needs
            // the sums over every process.
            for j in 0..c {
                tg[j] += sdyx[j];
                tb[j] += sdy[j];
            }
            world.all_reduce_sum(&mut sdy);
            world.all_reduce_sum(&mut sdyx);
            // dx = γσ⁻¹(dy − Σdy/n − x̂·Σ(dy·x̂)/n) = dy·A + x·B + C per channel.
            for j in 0..c {
                let (g, _) = self.affine(j);
                let (mj, sj) = (m[j], s[j]);
                coef_a[j] = g * sj;
                coef_b[j] = -g * sj * sj * sdyx[j] * inv_n;
                coef_c[j] = g * sj * (mj * sj * sdyx[j] * inv_n - sdy[j] * inv_n);
            }
            let o = gi * n * c..(gi + 1) * n * c;
            let (xg, dyg, mg) = (&x[o.clone()], &dy[o.clone()], mask.map(|m| &m[o.clone()]));
            ops::batchnorm_backward_dx(&mut dx[o], dyg, xg, &coef_a, &coef_b, &coef_c, n, c, mg);
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

impl Module for BatchNorm1d {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
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
