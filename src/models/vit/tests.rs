//! Tests of the ViT: finite differences of its features (every position embedding, the frozen
//! projection, the conv stem, ViT-BN), its evaluation features, and its forward-only mode.

use super::*;
use crate::nn::gradcheck::{check_layer, Probe};

#[test]
fn finite_differences_of_features() {
    // The last case is ViT-BN over two views (groups) of two images each.
    for (pos, sg, conv, bn) in [
        (PosEmbedKind::Learned, false, false, false),
        (PosEmbedKind::Sincos, true, false, false),
        (PosEmbedKind::None, false, false, false),
        (PosEmbedKind::Sincos, false, true, false),
        (PosEmbedKind::Learned, false, false, true),
    ] {
        let cfg = VitConfig {
            img: 8,
            patch: 4,
            in_chans: 2,
            dim: 8,
            depth: 2,
            heads: 2,
            mlp_ratio: 2,
            pos,
            stop_grad_conv1: sg,
            conv_stem: conv,
            mlp_bn: bn,
        };
        let mut rng = Rng::new(2);
        let mut vit = Vit::new(&cfg, &mut rng);
        vit.cls_token.init_normal(&mut rng, 1.0);
        let (b, groups) = if bn { (4, 2) } else { (3, 1) };
        check_layer(
            &mut vit,
            b * 2 * 64,
            b * 8,
            |v, x| v.forward_groups(x, b, groups).to_vec(),
            |v, _, dy, _| v.backward(dy, b),
            // The conv stem's ReLUs have kinks.
            Probe { eps: 1e-3, check_input: false, max_per_param: 24, kinks: conv, ..Probe::default() },
        );
    }
}

#[test]
fn vit_bn_has_batchnorm_before_every_mlp_with_running_statistics_and_an_eval_mode() {
    let cfg = VitConfig {
        img: 8,
        patch: 4,
        in_chans: 1,
        dim: 8,
        depth: 2,
        heads: 2,
        mlp_ratio: 2,
        pos: PosEmbedKind::Sincos,
        stop_grad_conv1: true,
        conv_stem: false,
        mlp_bn: true,
    };
    let mut vit = Vit::new(&cfg, &mut Rng::new(4));
    assert!(vit.blocks.iter().all(|b| b.is_bn()));
    let mut names = Vec::new();
    vit.visit_buffers(&mut |b| names.push(b.name.to_string()));
    assert!(names.contains(&"blocks.1.norm2.running_var".to_string()), "{names:?}");
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..4 * 64).map(|_| rng.normal()).collect();
    let train = vit.forward(&x, 4).to_vec();
    // One image alone gives another feature in training mode (batch statistics), the same
    // as in the batch in evaluation mode (running statistics).
    let alone = vit.forward(&x[..64], 1).to_vec();
    assert!(train[..8].iter().zip(&alone).any(|(a, b)| (a - b).abs() > 1e-3));
    vit.set_training(false);
    let all = vit.forward(&x, 4).to_vec();
    let one = vit.forward(&x[..64], 1).to_vec();
    assert!(all[..8].iter().zip(&one).all(|(a, b)| (a - b).abs() < 1e-5));
}

/// LayerNorm of one row, written out (the reference for the evaluation features).
fn norm_row(x: &[f32], g: &[f32], b: &[f32]) -> Vec<f32> {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    x.iter().zip(g.iter().zip(b)).map(|(v, (g, b))| (v - mean) / (var + 1e-6).sqrt() * g + b).collect()
}

#[test]
fn evaluation_features_are_the_normalised_tokens_they_name() {
    let cfg = VitConfig {
        img: 8,
        patch: 4,
        in_chans: 1,
        dim: 8,
        depth: 3,
        heads: 2,
        mlp_ratio: 2,
        pos: PosEmbedKind::Sincos,
        stop_grad_conv1: false,
        conv_stem: false,
        mlp_bn: false,
    };
    let (d, t, b) = (8, 5, 3);
    let mut rng = Rng::new(4);
    let x: Vec<f32> = (0..b * 64).map(|_| rng.normal()).collect();
    let mut v = Vit::new(&cfg, &mut Rng::new(1));
    v.norm.g.init_normal(&mut rng, 1.0);
    v.norm.b.init_normal(&mut rng, 1.0);
    let (g, beta) = (v.norm.g.w.clone(), v.norm.b.w.clone());
    let close = |a: &[f32], e: &[f32], what: &str| {
        assert_eq!(a.len(), e.len(), "{what}");
        for (p, q) in a.iter().zip(e) {
            assert!((p - q).abs() < 1e-4, "{what}: {a:?} against {e:?}");
        }
    };
    let cls = v.forward(&x, b).to_vec();
    assert_eq!(v.features(&x, b, VitFeature::Cls), cls);
    assert_eq!(v.features(&x, b, VitFeature::LastCls(1)), cls);
    // cls + mean of the normalised patch tokens of the last block (which ran on all tokens).
    let f = v.features(&x, b, VitFeature::ClsAvg);
    let out = v.blocks[2].out[..b * t * d].to_vec();
    for i in 0..b {
        close(&f[i * 2 * d..i * 2 * d + d], &cls[i * d..(i + 1) * d], "cls half");
        let mut mean = vec![0.0f32; d];
        for tok in 1..t {
            let y = norm_row(&out[(i * t + tok) * d..(i * t + tok + 1) * d], &g, &beta);
            mean.iter_mut().zip(&y).for_each(|(m, y)| *m += y / (t - 1) as f32);
        }
        close(&f[i * 2 * d + d..(i + 1) * 2 * d], &mean, "mean half");
    }
    // The cls rows of blocks 0, 1 and 2, each normalised.
    let f = v.features(&x, b, VitFeature::LastCls(3));
    for i in 0..b {
        for blk in 0..2 {
            let y = norm_row(&v.blocks[blk].out[i * t * d..i * t * d + d], &g, &beta);
            close(&f[i * 3 * d + blk * d..i * 3 * d + (blk + 1) * d], &y, "intermediate cls");
        }
        close(&f[i * 3 * d + 2 * d..(i + 1) * 3 * d], &cls[i * d..(i + 1) * d], "last cls");
    }
    // The same without kept activations (the buffers handed between blocks), twice over.
    let mut w = Vit::new(&cfg, &mut Rng::new(1));
    w.norm.g.w = g.clone();
    w.norm.b.w = beta.clone();
    w.keep_activations = false;
    for kind in [VitFeature::ClsAvg, VitFeature::LastCls(2), VitFeature::Cls, VitFeature::LastCls(3)] {
        for _ in 0..2 {
            assert_eq!(w.features(&x, b, kind), v.features(&x, b, kind), "{kind}");
        }
    }
    assert_eq!(w.forward(&x, b), &cls[..]);
    for s in ["cls", "cls+avg", "last4"] {
        assert_eq!(s.parse::<VitFeature>().unwrap().to_string(), s);
    }
    assert_eq!(VitFeature::LastCls(4).dim(8), 32);
    assert!("last0".parse::<VitFeature>().is_err() && "avg".parse::<VitFeature>().is_err());
}

#[test]
fn forward_without_kept_activations_is_identical() {
    for depth in [1, 2, 5, 6] {
        let cfg = VitConfig {
            img: 8,
            patch: 4,
            in_chans: 1,
            dim: 8,
            depth,
            heads: 2,
            mlp_ratio: 2,
            pos: PosEmbedKind::Sincos,
            stop_grad_conv1: false,
            conv_stem: false,
            mlp_bn: false,
        };
        let mut a = Vit::new(&cfg, &mut Rng::new(1));
        let mut b = Vit::new(&cfg, &mut Rng::new(1));
        b.keep_activations = false;
        let mut rng = Rng::new(3);
        for _ in 0..3 {
            let x: Vec<f32> = (0..2 * 64).map(|_| rng.normal()).collect();
            assert_eq!(a.forward(&x, 2).to_vec(), b.forward(&x, 2).to_vec(), "depth {depth}");
        }
        // Only two blocks hold buffers between calls.
        assert!(b.blocks.iter().skip(2).all(|blk| blk.out.is_empty() && blk.fc1.y.is_empty()));
    }
}
