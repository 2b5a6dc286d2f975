use super::*;
use crate::nn::posembed::PosEmbedKind;

pub fn tiny_config(pos: PosEmbedKind, stop_grad_conv1: bool) -> MocoConfig {
    MocoConfig {
        vit: VitConfig {
            img: 8,
            patch: 4,
            in_chans: 3,
            dim: 16,
            depth: 2,
            heads: 2,
            mlp_ratio: 4,
            pos,
            stop_grad_conv1,
        },
        mlp_dim: 24,
        out_dim: 8,
        t: 0.2,
    }
}

fn images(n: usize, cfg: &MocoConfig, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..2 * n * cfg.vit.in_chans * cfg.vit.img * cfg.vit.img).map(|_| rng.normal()).collect()
}

/// The gradient of the whole MoCo loss w.r.t. sampled elements of every trainable parameter of
/// the base encoder and predictor, against central finite differences (m = 1 keeps the momentum
/// encoder fixed while probing).
fn check_whole_loss(pos: PosEmbedKind, stop_grad: bool) {
    let cfg = tiny_config(pos, stop_grad);
    let n = 6;
    let x = images(n, &cfg, 5);
    let mut model = MoCo::new(&cfg, 3);
    // Give the momentum encoder different weights from the base one, as after training.
    // The cls token starts at N(0, 1e-6), where its LayerNorm is dominated by eps and far too
    // curved for finite differences: probe it at a typical trained scale instead.
    let mut rng = Rng::new(8);
    for p in model.base.params_mut().into_iter().filter(|p| p.trainable) {
        let s = if p.name == "cls_token" { 1.0 } else { 0.05 };
        for v in p.w.iter_mut() {
            *v += s * rng.normal();
        }
    }
    model.forward_backward(&x, n, 1.0);
    let mut grads: Vec<(String, Vec<f32>)> = Vec::new();
    for p in model.trainable_params() {
        grads.push((p.name.clone(), p.g.clone()));
    }
    // ReLU kinks in the heads make the loss piecewise smooth: a probe whose ±ε straddles a kink
    // is compared with its two one-sided differences too (a wrong gradient matches none).
    let eps = 1e-3f32;
    let mut checked = 0;
    let l0 = model.forward_backward(&x, n, 1.0) as f64;
    for (pi, (name, g)) in grads.iter().enumerate() {
        let idx: Vec<usize> =
            if g.len() <= 6 { (0..g.len()).collect() } else { (0..6).map(|_| rng.below(g.len())).collect() };
        let scale = g.iter().fold(1e-3f32, |m, v| m.max(v.abs())) as f64;
        for e in idx {
            let mut probe = |delta: f32| -> f64 {
                model.trainable_params()[pi].w[e] += delta;
                model.forward_backward(&x, n, 1.0) as f64
            };
            let lp = probe(eps);
            let lm = probe(-2.0 * eps);
            probe(eps);
            let h = eps as f64;
            let an = g[e] as f64;
            let candidates = [(lp - lm) / (2.0 * h), (lp - l0) / h, (l0 - lm) / h];
            let ok = candidates.iter().any(|num| (num - an).abs() <= 0.02 * scale + 5e-4);
            assert!(ok, "{name}[{e}]: analytic {an:.6} vs numeric {candidates:?} (scale {scale})");
            checked += 1;
        }
    }
    assert!(checked > 40, "too few elements checked");
}

#[test]
fn whole_loss_finite_differences_sincos() {
    check_whole_loss(PosEmbedKind::Sincos, false);
}

#[test]
fn whole_loss_finite_differences_learned_pe_stop_grad() {
    check_whole_loss(PosEmbedKind::Learned, true);
}

#[test]
fn momentum_update_is_ema_of_parameters_only() {
    let cfg = tiny_config(PosEmbedKind::Sincos, false);
    let mut model = MoCo::new(&cfg, 1);
    for p in model.base.params_mut() {
        p.w.iter_mut().for_each(|v| *v += 1.0);
    }
    let before: Vec<Vec<f32>> = model.momentum.params_mut().iter().map(|p| p.w.clone()).collect();
    let base: Vec<Vec<f32>> = model.base.params_mut().iter().map(|p| p.w.clone()).collect();
    let pred: Vec<Vec<f32>> = model.predictor.params_mut().iter().map(|p| p.w.clone()).collect();
    model.momentum_update(0.75);
    for ((p, b), q) in model.momentum.params_mut().iter().zip(&before).zip(&base) {
        for ((&v, &b), &q) in p.w.iter().zip(b).zip(q) {
            assert!((v - (0.75 * b + 0.25 * q)).abs() < 1e-6);
        }
    }
    let after: Vec<Vec<f32>> = model.predictor.params_mut().iter().map(|p| p.w.clone()).collect();
    assert_eq!(pred, after, "the predictor is not averaged");
}

#[test]
fn contrastive_loss_known_value() {
    // Orthonormal q = k (n = 2): logits = I/τ, so CE = ln(1 + e^{-1/τ}) per row.
    let mut c = Contrastive::default();
    let q = [1.0f32, 0.0, 0.0, 2.0];
    let mut dq = [0.0f32; 4];
    let t = 0.5f32;
    let loss = c.forward_backward(&q, &q, 2, 2, t, &mut dq);
    let want = 2.0 * t as f64 * (1.0 + (-1.0f64 / t as f64).exp()).ln();
    assert!((loss as f64 - want).abs() < 1e-6, "{loss} vs {want}");
}
