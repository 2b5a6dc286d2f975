//! `mocov3 step`: exactly one MoCo v3 training step from an official checkpoint on given views,
//! with explicit hyper-parameters (no schedule, no augmentation, no randomness), the optimiser
//! state carried (AdamW for a ViT, LARS for a ResNet), and the result written in the official
//! layout: the tool to check parity with the official code on any checkpoint.

use super::official;
use crate::moco::{MoCo, MocoConfig};
use crate::models::backbone::{BackboneConfig, ResNetConfig};
use crate::models::vit::VitConfig;
use crate::nn::posembed::PosEmbedKind;
use crate::optim::{Optimizer, OptimizerKind};
use anyhow::{bail, Context, Result};
use safetensors::SafeTensors;
use std::path::Path;

pub struct StepArgs {
    pub heads: usize,
    pub pos: PosEmbedKind,
    pub stop_grad_conv1: bool,
    pub lr: f64,
    pub wd: f64,
    pub m: f64,
    pub t: f32,
}

/// Read views `x1` and `x2` (f32, `[N, C, H, W]`) and stack them as [x1; x2].
pub fn read_views(path: &Path, chans: usize, img: usize) -> Result<(Vec<f32>, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut x = Vec::new();
    let mut n = None;
    for name in ["x1", "x2"] {
        let t = st.tensor(name).map_err(|_| anyhow::anyhow!("{}: no tensor named {name}", path.display()))?;
        let s = t.shape();
        if t.dtype() != safetensors::Dtype::F32 || s.len() != 4 || s[1] != chans || s[2] != img || s[3] != img {
            bail!(
                "{}: {name} has shape {s:?} ({:?}); the model expects f32 [N, {chans}, {img}, {img}]",
                path.display(),
                t.dtype()
            );
        }
        if *n.get_or_insert(s[0]) != s[0] {
            bail!("{}: x1 and x2 have different batch sizes", path.display());
        }
        x.extend(t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap_or([0; 4]))));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!("{}: the views hold {} at index {i}: images must be finite numbers", path.display(), x[i]);
    }
    Ok((x, n.unwrap()))
}

/// The model a checkpoint holds: a ResNet (depth, stem, heads from the weights; the image size
/// from the views) or a ViT (the weights plus `a`'s heads, position embedding and freezing).
fn model_config(input: &Path, views: &Path, a: &StepArgs) -> Result<MocoConfig> {
    if let Some(r) = official::infer_resnet(input)? {
        let img = views_side(views)?;
        let rn = ResNetConfig { depth: r.depth, cifar: r.cifar, img, in_chans: r.in_chans };
        rn.validate().map_err(|e| anyhow::anyhow!("{}: {e}", views.display()))?;
        let backbone = BackboneConfig::ResNet(rn);
        return Ok(MocoConfig { backbone, mlp_dim: r.mlp_dim, out_dim: r.out_dim, t: a.t });
    }
    let s = official::infer_shape(input)?;
    let vit = VitConfig {
        img: s.img,
        patch: s.patch,
        in_chans: s.in_chans,
        dim: s.dim,
        depth: s.depth,
        heads: a.heads,
        mlp_ratio: 4,
        pos: a.pos,
        // As the official code: the fixed patch projection does not apply to the conv stem.
        stop_grad_conv1: a.stop_grad_conv1 && !s.conv_stem,
        conv_stem: s.conv_stem,
        mlp_bn: false,
    };
    vit.validate().map_err(|e| anyhow::anyhow!("{}: {e} (check --heads)", input.display()))?;
    Ok(MocoConfig { backbone: BackboneConfig::Vit(vit), mlp_dim: s.mlp_dim, out_dim: s.out_dim, t: a.t })
}

/// The side of the square views `x1` in a views file (a ResNet takes any size).
fn views_side(path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let t = st.tensor("x1").map_err(|_| anyhow::anyhow!("{}: no tensor named x1", path.display()))?;
    match t.shape() {
        [_, _, h, w] if h == w => Ok(*h),
        s => bail!("{}: x1 has shape {s:?}; the model expects square images [N, C, H, H]", path.display()),
    }
}

/// Run the step; writes `out` and returns the loss. The optimiser is the recipe's: LARS for a
/// ResNet, AdamW for a ViT (as `main_moco.py` chooses them).
pub fn run(input: &Path, views: &Path, out: &Path, a: &StepArgs) -> Result<f32> {
    let cfg = model_config(input, views, a)?;
    let mut model = MoCo::new(&cfg, 0);
    let kind = match cfg.backbone {
        BackboneConfig::ResNet(_) => OptimizerKind::Lars,
        BackboneConfig::Vit(_) => OptimizerKind::Adamw,
    };
    let mut opt = Optimizer::new(kind, a.wd, false);
    let info = official::load_into(input, &mut model, &mut opt)?;
    let (x, n) = read_views(views, cfg.backbone.in_chans(), cfg.backbone.img())?;
    if n < 2 {
        bail!("{}: at least 2 images per view are needed (BatchNorm)", views.display());
    }
    let loss = model.forward_backward(&x, n, a.m);
    if !loss.is_finite() {
        bail!("{}: the step's loss is {loss}: the checkpoint or the views hold values out of range", input.display());
    }
    opt.update(&mut model.trainable_params(), a.lr);
    let arch = info.arch.unwrap_or_else(|| if kind == OptimizerKind::Lars { "resnet".into() } else { "vit".into() });
    let obj = official::to_official_with(&mut model, info.epoch, &arch, Some((&opt, a.lr)));
    super::writer::save(out, &obj)?;
    Ok(loss)
}
