use super::*;
use crate::models::backbone::BackboneConfig;
use crate::models::vit::VitConfig;
use crate::nn::posembed::PosEmbedKind;

pub fn tiny_config(pos: PosEmbedKind, stop_grad_conv1: bool) -> MocoConfig {
    MocoConfig {
        backbone: BackboneConfig::Vit(VitConfig {
            img: 8,
            patch: 4,
            in_chans: 3,
            dim: 16,
            depth: 2,
            heads: 2,
            mlp_ratio: 4,
            pos,
            stop_grad_conv1,
            conv_stem: false,
            mlp_bn: false,
        }),
        mlp_dim: 24,
        out_dim: 8,
        t: 0.2,
    }
}

fn images(n: usize, cfg: &MocoConfig, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..2 * n * cfg.backbone.in_chans() * cfg.backbone.img() * cfg.backbone.img()).map(|_| rng.normal()).collect()
}

/// Element `e` of trainable parameter `pi`: the analytic gradient `an` against central and
/// one-sided differences of the loss (m = 1); ReLU kinks make the loss piecewise smooth, so a
/// probe whose ±ε straddles a kink may match a one-sided difference instead (a wrong gradient
/// matches none).
#[allow(clippy::too_many_arguments)]
fn check_element(
    model: &mut MoCo,
    x: &[f32],
    n: usize,
    l0: f64,
    eps: f32,
    (pi, e): (usize, usize),
    name: &str,
    an: f32,
    tol: f64,
) {
    let mut probe = |delta: f32| -> f64 {
        model.trainable_params()[pi].w[e] += delta;
        model.forward_backward(x, n, 1.0) as f64
    };
    let lp = probe(eps);
    let lm = probe(-2.0 * eps);
    probe(eps);
    let (h, an) = (eps as f64, an as f64);
    let candidates = [(lp - lm) / (2.0 * h), (lp - l0) / h, (l0 - lm) / h];
    let ok = candidates.iter().any(|num| (num - an).abs() <= tol);
    assert!(ok, "{name}[{e}]: analytic {an:.6} vs numeric {candidates:?} (tolerance {tol})");
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
        grads.push((p.name.clone(), p.g.to_vec()));
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
            check_element(&mut model, &x, n, l0, eps, (pi, e), name, g[e], 0.02 * scale + 5e-4);
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
    let before: Vec<Vec<f32>> = model.momentum.params_mut().iter().map(|p| p.w.to_vec()).collect();
    let base: Vec<Vec<f32>> = model.base.params_mut().iter().map(|p| p.w.to_vec()).collect();
    let pred: Vec<Vec<f32>> = model.predictor.params_mut().iter().map(|p| p.w.to_vec()).collect();
    model.momentum_update(0.75);
    for ((p, b), q) in model.momentum.params_mut().iter().zip(&before).zip(&base) {
        for ((&v, &b), &q) in p.w.iter().zip(b).zip(q) {
            assert!((v - (0.75 * b + 0.25 * q)).abs() < 1e-6);
        }
    }
    let after: Vec<Vec<f32>> = model.predictor.params_mut().iter().map(|p| p.w.to_vec()).collect();
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

fn resnet_config() -> MocoConfig {
    use crate::models::backbone::ResNetConfig;
    MocoConfig {
        backbone: BackboneConfig::ResNet(ResNetConfig { depth: 18, cifar: true, img: 8, in_chans: 1 }),
        mlp_dim: 32,
        out_dim: 8,
        t: 1.0,
    }
}

#[test]
fn resnet_heads_follow_the_official_builder() {
    let mut model = MoCo::new(&resnet_config(), 1);
    // Projector `fc`: 512 → 32 → 8 with the last BN (no affine); predictor without the last BN.
    let fc = &model.base.head;
    assert_eq!(fc.layers.len(), 2);
    assert_eq!((fc.layers[0].linear.inp, fc.layers[1].linear.out), (512, 8));
    assert!(fc.layers[1].bn.as_ref().is_some_and(|b| b.gamma.is_none()));
    assert_eq!(model.predictor.layers.len(), 2);
    assert!(model.predictor.layers[1].bn.is_none());
    let keys = model.trainable_keys();
    for k in [
        "base_encoder.conv1.weight",
        "base_encoder.layer4.1.bn2.bias",
        "base_encoder.fc.0.weight",
        "predictor.3.weight",
    ] {
        assert!(keys.iter().any(|x| x == k), "missing {k}");
    }
    let mut buffers = Vec::new();
    model.visit_tensors(&mut |k, _, _| buffers.push(k));
    assert!(buffers.iter().any(|k| k == "momentum_encoder.layer1.0.bn1.running_var"));
}

/// The whole ResNet MoCo loss (backbone → fc → predictor, τ 1) against finite differences on a
/// few elements of parameters along the path: stem, a mid block, the last block, both heads.
#[test]
fn resnet_whole_loss_finite_differences() {
    let cfg = resnet_config();
    let n = 4;
    let x = images(n, &cfg, 2);
    let mut model = MoCo::new(&cfg, 4);
    let mut rng = Rng::new(9);
    for p in model.base.params_mut().into_iter().filter(|p| p.trainable) {
        // Non-zero residual gammas (zero_init_residual), as after some training.
        let s = if p.name.ends_with("weight") && p.shape.len() == 1 { 0.5 } else { 0.02 };
        for v in p.w.iter_mut() {
            *v += s * rng.normal();
        }
    }
    model.forward_backward(&x, n, 1.0);
    let names = [
        "conv1.weight",
        "layer2.0.conv1.weight",
        "layer4.1.bn2.weight",
        "fc.0.weight",
        "predictor.0.weight",
        "predictor.3.weight",
    ];
    let idx: Vec<usize> = model
        .trainable_params()
        .iter()
        .enumerate()
        .filter(|(_, p)| names.contains(&p.name.as_str()))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(idx.len(), names.len());
    let grads: Vec<Vec<f32>> = idx.iter().map(|&i| model.trainable_params()[i].g.to_vec()).collect();
    let l0 = model.forward_backward(&x, n, 1.0) as f64;
    let eps = 2e-3f32;
    for (&pi, g) in idx.iter().zip(&grads) {
        let scale = g.iter().fold(1e-3f32, |m, v| m.max(v.abs())) as f64;
        let name = model.trainable_params()[pi].name.clone();
        for _ in 0..4 {
            let e = rng.below(g.len());
            check_element(&mut model, &x, n, l0, eps, (pi, e), &name, g[e], 0.03 * scale + 1e-3);
        }
    }
}
