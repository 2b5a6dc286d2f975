//! The two backbone families behind one interface: the ViT (`vits.py`) and the ResNet
//! (torchvision). MoCo, the optimisers, checkpoints and the evaluation tools see only this.

use super::resnet::ResNet;
use super::vit::{Vit, VitConfig, VitFeature};
use crate::engine::rng::Rng;
use crate::nn::{Buffer, Module, Param};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// 18 (basic blocks) or 50 (bottlenecks).
    pub depth: usize,
    /// The CIFAR stem: 3×3 stride-1 first convolution and no max-pool.
    pub cifar: bool,
    pub img: usize,
    pub in_chans: usize,
}

impl ResNetConfig {
    pub fn validate(&self) -> Result<(), String> {
        if ![18, 50].contains(&self.depth) {
            return Err(format!("ResNet depth {} is not supported (18 or 50)", self.depth));
        }
        // The stem and four stages halve the size 5 times (3 with the CIFAR stem).
        let min = if self.cifar { 8 } else { 32 };
        if self.img < min {
            return Err(format!("image size {} is too small for this ResNet (at least {min})", self.img));
        }
        if self.in_chans == 0 {
            return Err("in_chans must be at least 1".into());
        }
        Ok(())
    }

    pub fn dim(&self) -> usize {
        if self.depth == 50 {
            2048
        } else {
            512
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BackboneConfig {
    Vit(VitConfig),
    ResNet(ResNetConfig),
}

impl BackboneConfig {
    pub fn img(&self) -> usize {
        match self {
            BackboneConfig::Vit(v) => v.img,
            BackboneConfig::ResNet(r) => r.img,
        }
    }

    pub fn in_chans(&self) -> usize {
        match self {
            BackboneConfig::Vit(v) => v.in_chans,
            BackboneConfig::ResNet(r) => r.in_chans,
        }
    }

    /// Width of the feature the projector reads (cls token or pooled channels).
    pub fn dim(&self) -> usize {
        match self {
            BackboneConfig::Vit(v) => v.dim,
            BackboneConfig::ResNet(r) => r.dim(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        match self {
            BackboneConfig::Vit(v) => v.validate(),
            BackboneConfig::ResNet(r) => r.validate(),
        }
    }

    pub fn vit(&self) -> Option<&VitConfig> {
        match self {
            BackboneConfig::Vit(v) => Some(v),
            BackboneConfig::ResNet(_) => None,
        }
    }

    /// Official key of the projector that replaces the classifier: `head` (ViT) or `fc` (ResNet).
    pub fn head_name(&self) -> &'static str {
        match self {
            BackboneConfig::Vit(_) => "head",
            BackboneConfig::ResNet(_) => "fc",
        }
    }
}

pub enum Backbone {
    Vit(Vit),
    ResNet(ResNet),
}

impl Backbone {
    pub fn new(cfg: &BackboneConfig, rng: &mut Rng) -> Backbone {
        match cfg {
            BackboneConfig::Vit(v) => Backbone::Vit(Vit::new(v, rng)),
            BackboneConfig::ResNet(r) => {
                let net = if r.depth == 50 {
                    ResNet::resnet50(r.in_chans, r.cifar, rng)
                } else {
                    ResNet::resnet18(r.in_chans, r.cifar, rng)
                };
                Backbone::ResNet(net)
            }
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Backbone::Vit(v) => v.cfg.dim,
            Backbone::ResNet(r) => r.dim,
        }
    }

    /// Images `[images, c, img, img]` → features `[images, dim]`; BatchNorms normalise `groups`
    /// equal groups of rows separately (the views of MoCo).
    pub fn forward(&mut self, x: &[f32], images: usize, groups: usize) -> &[f32] {
        match self {
            Backbone::Vit(v) => v.forward_groups(x, images, groups),
            Backbone::ResNet(r) => {
                let len = x.len() / images / r.in_chans();
                let side = (len as f64).sqrt() as usize;
                r.forward(x, images, side, side, groups)
            }
        }
    }

    /// Width of the evaluation feature `kind`, or why this backbone cannot give it.
    pub fn feature_dim(&self, kind: VitFeature) -> Result<usize, String> {
        match (self, kind) {
            (_, VitFeature::Cls) => Ok(self.dim()),
            (Backbone::ResNet(_), k) => Err(format!("feature '{k}' is for ViTs: a ResNet's feature is 'cls' (pooled)")),
            (Backbone::Vit(v), VitFeature::LastCls(n)) if n > v.blocks.len() => {
                Err(format!("feature 'last{n}': this ViT has {} blocks", v.blocks.len()))
            }
            (Backbone::Vit(v), k) => Ok(k.dim(v.cfg.dim)),
        }
    }

    /// Evaluation features `[images, feature_dim(kind)]` of images (`kind` checked by
    /// [`Backbone::feature_dim`]); `Cls` is [`Backbone::forward`]'s output.
    pub fn features(&mut self, x: &[f32], images: usize, kind: VitFeature) -> Vec<f32> {
        match (self, kind) {
            (Backbone::Vit(v), k) if k != VitFeature::Cls => v.features(x, images, k),
            (net, _) => net.forward(x, images, 1).to_vec(),
        }
    }

    /// The features of the last forward, `[images, dim]`.
    pub fn output(&self, images: usize) -> &[f32] {
        match self {
            Backbone::Vit(v) => &v.norm.output()[..images * v.cfg.dim],
            Backbone::ResNet(r) => &r.feat[..images * r.dim],
        }
    }

    pub fn backward(&mut self, dfeat: &[f32], images: usize) {
        match self {
            Backbone::Vit(v) => v.backward(dfeat, images),
            Backbone::ResNet(r) => r.backward(&dfeat[..images * r.dim]),
        }
    }

    /// A backbone that is never differentiated (the momentum encoder, frozen probes) can share its
    /// activation buffers between blocks.
    pub fn set_keep_activations(&mut self, keep: bool) {
        match self {
            Backbone::Vit(v) => v.keep_activations = keep,
            Backbone::ResNet(r) => r.keep_activations = keep,
        }
    }

    /// Training (batch statistics) or evaluation mode of the BatchNorms (a ViT has them only in
    /// its conv stem).
    pub fn set_training(&mut self, training: bool) {
        match self {
            Backbone::Vit(v) => v.set_training(training),
            Backbone::ResNet(r) => r.set_training(training),
        }
    }

    /// Name prefixes of the first layer (patch projection or stem), the first block and the last
    /// block: where the paper looks for gradient spikes.
    pub fn part_prefixes(&self) -> [String; 3] {
        match self {
            Backbone::Vit(v) => ["patch_embed.".into(), "blocks.0.".into(), format!("blocks.{}.", v.blocks.len() - 1)],
            Backbone::ResNet(r) => r.part_prefixes(),
        }
    }

    /// L2 norms of the gradients of the three parts of [`Backbone::part_prefixes`], read from
    /// the per-layer norms of [`Backbone::layer_grad_norms`] (each part is one layer there; 0
    /// for a part with no trainable parameters, such as a frozen patch projection).
    pub fn part_grad_norms(&self, layers: &[(String, f64)]) -> [f64; 3] {
        self.part_prefixes().map(|p| {
            let name = p.trim_end_matches('.');
            layers.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v)
        })
    }
}

/// The layer a parameter belongs to, for per-layer gradient norms: `blocks.N` / `layerS.N` (a
/// transformer or residual block), else its first name component (`patch_embed`, `conv1`,
/// `bn1`, `norm`, `cls_token`).
pub fn layer_of(param: &str) -> &str {
    let two = param.match_indices('.').nth(1).map(|(i, _)| &param[..i]);
    match two {
        Some(t) if param.starts_with("blocks.") || param.starts_with("layer") => t,
        _ => param.split('.').next().unwrap_or(param),
    }
}

impl Backbone {
    /// L2 norm of the gradient of every layer ([`layer_of`]) with trainable parameters, in the
    /// network's order: the per-layer view of where a gradient spike starts.
    pub fn layer_grad_norms(&mut self) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = Vec::new();
        self.visit(&mut |p: &mut Param| {
            if !p.trainable {
                return;
            }
            let layer = layer_of(&p.name);
            let sq = p.g.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>();
            match v.iter_mut().rev().find(|(n, _)| n == layer) {
                Some((_, s)) => *s += sq,
                None => v.push((layer.to_string(), sq)),
            }
        });
        v.into_iter().map(|(n, s)| (n, s.sqrt())).collect()
    }
}

impl Module for Backbone {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        match self {
            Backbone::Vit(v) => v.visit(f),
            Backbone::ResNet(r) => r.visit(f),
        }
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        match self {
            Backbone::Vit(v) => v.visit_buffers(f),
            Backbone::ResNet(r) => r.visit_buffers(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::posembed::PosEmbedKind;

    /// The three part norms read from the per-layer norms equal the direct sum over each part's
    /// name prefix, bit for bit, for a ViT (also with a frozen patch projection) and a ResNet.
    #[test]
    fn part_norms_come_from_the_layer_norms_exactly() {
        let vit = |frozen| {
            BackboneConfig::Vit(VitConfig {
                img: 8,
                patch: 4,
                in_chans: 1,
                dim: 8,
                depth: 11,
                heads: 2,
                mlp_ratio: 2,
                pos: PosEmbedKind::Sincos,
                stop_grad_conv1: frozen,
                conv_stem: false,
                mlp_bn: false,
            })
        };
        let rn = BackboneConfig::ResNet(ResNetConfig { depth: 18, cifar: true, img: 8, in_chans: 1 });
        for cfg in [vit(false), vit(true), rn] {
            let mut b = Backbone::new(&cfg, &mut Rng::new(0));
            let mut rng = Rng::new(5);
            b.visit(&mut |p: &mut Param| p.g.iter_mut().for_each(|g| *g = rng.uniform_f64() as f32 - 0.5));
            let prefixes = b.part_prefixes();
            let mut direct = [0.0f64; 3];
            b.visit(&mut |p: &mut Param| {
                for (acc, pre) in direct.iter_mut().zip(&prefixes) {
                    if p.trainable && p.name.starts_with(pre.as_str()) {
                        *acc += p.g.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>();
                    }
                }
            });
            let layers = b.layer_grad_norms();
            let got = b.part_grad_norms(&layers);
            assert_eq!(got.map(f64::to_bits), direct.map(|s| s.sqrt().to_bits()), "{prefixes:?}");
            assert!(got[1] > 0.0 && got[2] > 0.0);
        }
    }

    #[test]
    fn parameters_group_into_layers() {
        assert_eq!(layer_of("blocks.11.attn.qkv.weight"), "blocks.11");
        assert_eq!(layer_of("layer3.1.conv2.weight"), "layer3.1");
        assert_eq!(layer_of("patch_embed.proj.weight"), "patch_embed");
        assert_eq!(layer_of("cls_token"), "cls_token");
        assert_eq!(layer_of("norm.bias"), "norm");
    }

    #[test]
    fn feature_widths_and_the_features_a_backbone_cannot_give() {
        let vit = BackboneConfig::Vit(VitConfig {
            img: 8,
            patch: 4,
            in_chans: 1,
            dim: 8,
            depth: 2,
            heads: 2,
            mlp_ratio: 2,
            pos: PosEmbedKind::Sincos,
            stop_grad_conv1: false,
            conv_stem: false,
            mlp_bn: false,
        });
        let v = Backbone::new(&vit, &mut Rng::new(0));
        assert_eq!(v.feature_dim(VitFeature::Cls), Ok(8));
        assert_eq!(v.feature_dim(VitFeature::ClsAvg), Ok(16));
        assert_eq!(v.feature_dim(VitFeature::LastCls(2)), Ok(16));
        assert!(v.feature_dim(VitFeature::LastCls(3)).unwrap_err().contains("2 blocks"));
        let rn = BackboneConfig::ResNet(ResNetConfig { depth: 18, cifar: true, img: 8, in_chans: 1 });
        let r = Backbone::new(&rn, &mut Rng::new(0));
        assert_eq!(r.feature_dim(VitFeature::Cls), Ok(512));
        assert!(r.feature_dim(VitFeature::ClsAvg).unwrap_err().contains("ResNet"));
    }
}
