//! AdamW with PyTorch's semantics (`torch.optim.AdamW`, single-tensor path): decoupled weight
//! decay `p ← p·(1 − lr·wd)`, bias-corrected moments, eps added after the square root. As the
//! official code, weight decay applies to every trainable parameter; `exclude_norm_bias` is an
//! option (biases, norm weights, cls token and position embedding undecayed).

use crate::engine::ops::{self, AdamWStep};
use crate::nn::{Param, ParamKind};

#[derive(Clone, Debug)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub exclude_norm_bias: bool,
    /// Steps taken (PyTorch keeps one per parameter; they are always equal here).
    pub step: u64,
    /// First and second moments, one pair per trainable parameter, in order.
    pub exp_avg: Vec<Vec<f32>>,
    pub exp_avg_sq: Vec<Vec<f32>>,
}

impl AdamW {
    pub fn new(weight_decay: f64) -> AdamW {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            exclude_norm_bias: false,
            step: 0,
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
        }
    }

    pub fn decays(&self, p: &Param) -> bool {
        !(self.exclude_norm_bias && p.kind != ParamKind::Weight)
    }

    pub fn update(&mut self, params: &mut [&mut Param], lr: f64) {
        if self.exp_avg.is_empty() {
            self.exp_avg = params.iter().map(|p| vec![0.0; p.len()]).collect();
            self.exp_avg_sq = params.iter().map(|p| vec![0.0; p.len()]).collect();
        }
        assert_eq!(self.exp_avg.len(), params.len(), "optimiser state does not match the parameters");
        self.step += 1;
        let t = self.step as f64;
        let bc1 = 1.0 - self.beta1.powf(t);
        let bc2_sqrt = (1.0 - self.beta2.powf(t)).sqrt();
        let step_size = (lr / bc1) as f32;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let (w1, w2) = ((1.0 - self.beta1) as f32, (1.0 - self.beta2) as f32);
        let (eps, bc2s) = (self.eps as f32, bc2_sqrt as f32);
        for ((p, m), v) in params.iter_mut().zip(self.exp_avg.iter_mut()).zip(self.exp_avg_sq.iter_mut()) {
            let decay = if self.weight_decay != 0.0 && !(self.exclude_norm_bias && p.kind != ParamKind::Weight) {
                (1.0 - lr * self.weight_decay) as f32
            } else {
                1.0
            };
            let Param { w, g, .. } = &mut **p;
            ops::adamw_update(w, g, m, v, AdamWStep { step_size, w1, b2, w2, eps, bc2_sqrt: bc2s, decay });
            let _ = b1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_steps() {
        // Two steps by hand for p = 1, g = 0.5 then g = -0.25, lr 0.1, wd 0.5.
        let mut p = Param::zeros("w", &[1], ParamKind::Weight);
        p.w[0] = 1.0;
        let mut opt = AdamW::new(0.5);
        let (lr, b1, b2, eps) = (0.1f64, 0.9f64, 0.999f64, 1e-8f64);
        let (mut w, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for (t, g) in [(1, 0.5f64), (2, -0.25)] {
            p.g[0] = g as f32;
            opt.update(&mut [&mut p], lr);
            w *= 1.0 - lr * 0.5;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let denom = (v / (1.0 - b2.powi(t))).sqrt() + eps;
            w -= lr / (1.0 - b1.powi(t)) * m / denom;
            assert!((p.w[0] as f64 - w).abs() < 1e-6, "step {t}: {} vs {w}", p.w[0]);
        }
    }

    #[test]
    fn excluded_kinds_get_no_decay() {
        let mut opt = AdamW::new(1.0);
        opt.exclude_norm_bias = true;
        let mut b = Param::filled("b", &[1], ParamKind::Bias, 2.0);
        opt.update(&mut [&mut b], 0.1); // zero gradient: only decay could move it
        assert_eq!(b.w[0], 2.0);
        let mut opt = AdamW::new(1.0);
        let mut b = Param::filled("b", &[1], ParamKind::Bias, 2.0);
        opt.update(&mut [&mut b], 0.1);
        assert!((b.w[0] - 1.8).abs() < 1e-6);
    }
}
