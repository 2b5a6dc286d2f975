//! The cls token's attention in each head of a ViT's last block over the patches of given
//! images (DINO's visualisation of what a self-supervised ViT attends to).

use crate::models::backbone::Backbone;
use anyhow::{bail, Result};

/// Attention maps of `n` images: per image and head, the cls token's attention over the patch
/// grid (`grid` × `grid`, row-major), scaled to a maximum of 1.
pub struct AttentionMaps {
    pub images: usize,
    pub heads: usize,
    pub grid: usize,
    /// `[images, heads, grid * grid]`.
    pub maps: Vec<f32>,
}

/// The maps of the `n` images `x` (`[n, chans, img, img]`, normalised as for evaluation), with
/// the backbone in evaluation mode.
pub fn cls_attention(net: &mut Backbone, x: &[f32], n: usize) -> Result<AttentionMaps> {
    let Backbone::Vit(v) = net else {
        bail!("attention maps need a ViT checkpoint (this one is a ResNet)");
    };
    v.keep_activations = true;
    v.set_training(false);
    v.forward(x, n);
    v.set_training(true);
    let (t, heads) = (v.cfg.tokens(), v.cfg.heads);
    let grid = ((t - 1) as f64).sqrt().round() as usize;
    if grid * grid != t - 1 {
        bail!("the ViT's {} patch tokens do not form a square grid", t - 1);
    }
    let p = v.last_cls_attention(n);
    let mut maps = Vec::with_capacity(n * heads * grid * grid);
    for row in p.chunks(t) {
        // Token 0 is the cls token itself; the patches follow in row-major order.
        let patches = &row[1..];
        let max = patches.iter().copied().fold(0.0f32, f32::max).max(1e-12);
        maps.extend(patches.iter().map(|v| v / max));
    }
    Ok(AttentionMaps { images: n, heads, grid, maps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::Rng;
    use crate::models::vit::{Vit, VitConfig};
    use crate::nn::posembed::PosEmbedKind;

    fn vit(mlp_bn: bool) -> Backbone {
        let cfg = VitConfig {
            img: 8,
            patch: 2,
            in_chans: 1,
            dim: 8,
            depth: 2,
            heads: 2,
            mlp_ratio: 2,
            pos: PosEmbedKind::Sincos,
            stop_grad_conv1: false,
            conv_stem: false,
            mlp_bn,
        };
        Backbone::Vit(Vit::new(&cfg, &mut Rng::new(3)))
    }

    #[test]
    fn maps_are_the_cls_rows_of_the_last_attention_on_the_patch_grid() {
        let mut rng = Rng::new(1);
        let x: Vec<f32> = (0..3 * 64).map(|_| rng.normal()).collect();
        for bn in [false, true] {
            let mut net = vit(bn);
            let m = cls_attention(&mut net, &x, 3).unwrap();
            assert_eq!((m.images, m.heads, m.grid, m.maps.len()), (3, 2, 4, 3 * 2 * 16));
            // Each map's maximum is 1; the raw rows it came from are probabilities.
            for map in m.maps.chunks(16) {
                assert_eq!(map.iter().copied().fold(0.0f32, f32::max), 1.0);
            }
            let Backbone::Vit(v) = &net else { unreachable!() };
            for row in v.last_cls_attention(3).chunks(17) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
        // ViT-BN's last block computes every query: the maps are its cls rows, the same as the
        // cls-only kernel gives on that block's own q, k, v.
        let mut net = vit(true);
        cls_attention(&mut net, &x, 3).unwrap();
        let Backbone::Vit(v) = &net else { unreachable!() };
        let (t, d, h) = (17, 8, 2);
        let qkv = &v.blocks[1].qkv.output()[..3 * t * 3 * d];
        let (mut o, mut p) = (vec![0.0f32; 3 * d], vec![0.0f32; 3 * h * t]);
        crate::engine::ops::attention_forward_cls(&mut o, &mut p, qkv, 3, t, d, h);
        let got = v.last_cls_attention(3);
        assert!(got.iter().zip(&p).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} vs {p:?}");
    }

    #[test]
    fn a_resnet_is_refused_clearly() {
        use crate::models::backbone::{BackboneConfig, ResNetConfig};
        let cfg = BackboneConfig::ResNet(ResNetConfig { depth: 18, cifar: true, img: 8, in_chans: 1 });
        let mut net = Backbone::new(&cfg, &mut Rng::new(1));
        let e = cls_attention(&mut net, &[0.0; 64], 1).err().unwrap().to_string();
        assert!(e.contains("need a ViT"), "{e}");
    }
}
