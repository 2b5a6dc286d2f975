//! LARS as the official `moco/optimizer.py` (for the ResNet recipes): for parameters with more
//! than one dimension, `dp = g + wd·p` scaled by the trust ratio `η·‖p‖/‖dp‖` (1 when either norm
//! is 0); parameters with one dimension or fewer (biases, norm weights) get neither weight decay
//! nor the ratio. Then heavy-ball momentum without Nesterov: `μ = momentum·μ + dp; p −= lr·μ`.

use crate::engine::ops;
use crate::nn::Param;

#[derive(Clone, Debug)]
pub struct Lars {
    pub weight_decay: f64,
    pub momentum: f64,
    pub trust_coefficient: f64,
    /// Steps taken.
    pub step: u64,
    /// One buffer per trainable parameter, in order.
    pub mu: Vec<Vec<f32>>,
}

impl Lars {
    pub fn new(weight_decay: f64) -> Lars {
        Lars { weight_decay, momentum: 0.9, trust_coefficient: 0.001, step: 0, mu: Vec::new() }
    }

    pub fn update(&mut self, params: &mut [&mut Param], lr: f64) {
        if self.mu.is_empty() {
            self.mu = params.iter().map(|p| vec![0.0; p.len()]).collect();
        }
        assert_eq!(self.mu.len(), params.len(), "optimiser state does not match the parameters");
        self.step += 1;
        for (p, mu) in params.iter_mut().zip(self.mu.iter_mut()) {
            let matrix = p.shape.len() > 1;
            let wd = if matrix { self.weight_decay as f32 } else { 0.0 };
            let q = if matrix { ops::lars_trust_ratio(&p.w, &p.g, wd, self.trust_coefficient) } else { 1.0 };
            let (m, lr) = (self.momentum as f32, lr as f32);
            let Param { w, g, .. } = &mut **p;
            ops::lars_update(w, g, mu, lr, m, wd, q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamKind;

    #[test]
    fn matches_hand_computed_values() {
        // Matrix [[3, 4]] (‖p‖ = 5), g = [1, 0], wd 0.5: dp = [2.5, 2], ‖dp‖ = √10.25,
        // ratio 0.001·5/√10.25; bias [1] with g [2]: no decay, no ratio.
        let mut w = Param::zeros("w", &[1, 2], ParamKind::Weight);
        w.w = vec![3.0, 4.0].into();
        w.g = vec![1.0, 0.0].into();
        let mut b = Param::zeros("b", &[1], ParamKind::Bias);
        b.w = vec![1.0].into();
        b.g = vec![2.0].into();
        let mut opt = Lars::new(0.5);
        opt.update(&mut [&mut w, &mut b], 0.1);
        let q = 0.001 * 5.0 / 10.25f64.sqrt();
        let want = [3.0 - 0.1 * 2.5 * q, 4.0 - 0.1 * 2.0 * q];
        for (a, e) in w.w.iter().zip(want) {
            assert!((*a as f64 - e).abs() < 1e-7, "{a} vs {e}");
        }
        assert!((b.w[0] - (1.0 - 0.1 * 2.0)).abs() < 1e-7);
        // Second step: the momentum buffer carries 0.9 of the first update.
        let mu0 = opt.mu[1][0];
        b.g = vec![0.0].into();
        opt.update(&mut [&mut w, &mut b], 0.1);
        assert!((opt.mu[1][0] - 0.9 * mu0).abs() < 1e-7);
        // Zero weights: the ratio falls back to 1.
        let mut z = Param::zeros("z", &[2, 1], ParamKind::Weight);
        z.g = vec![1.0, 1.0].into();
        Lars::new(0.0).update(&mut [&mut z], 1.0);
        assert_eq!(z.w, vec![-1.0, -1.0]);
    }
}
