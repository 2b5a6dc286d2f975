//! Checkpoint conversion: an official `main_moco.py` file to a native checkpoint (the model's
//! family and sizes read from the weights; what they cannot tell from flags or the file's
//! record), and a native checkpoint to the official, DeiT or timm layout.

use super::official;
use crate::train::config;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// What `mocov3 convert` asks for.
pub struct ConvertOptions {
    pub input: PathBuf,
    /// `safetensors` (official → native), `official`, `deit` or `timm` (native → torch.save).
    pub to: String,
    pub out: PathBuf,
    /// Attention heads; None: the file's record, else 12.
    pub heads: Option<usize>,
    pub stop_grad_conv1: bool,
    /// Image size of a ResNet (not in its weights).
    pub image: usize,
    pub dataset: String,
    /// `key=value` settings of the recipe the run was trained with.
    pub sets: Vec<String>,
}

/// Convert as `a` says; returns the line to print.
pub fn convert(a: &ConvertOptions) -> Result<String> {
    if a.to == "official" || a.to == "deit" || a.to == "timm" {
        let (mut model, _, state) = crate::train::checkpoint::load(&a.input)?;
        if a.to != "official" && model.cfg.backbone.vit().is_none() {
            bail!("--to {}: a ViT layout; this checkpoint holds a {} (use --to official)", a.to, state.config.arch);
        }
        let obj = match a.to.as_str() {
            "official" => official::to_official(&mut model, state.epoch as i64, &state.config.arch),
            "deit" => official::to_deit(&mut model),
            _ => official::to_timm(&mut model),
        };
        crate::interop::writer::save(&a.out, &obj)?;
        return Ok(format!(
            "convert: {} -> {} ({} layout, torch.save zip format)",
            a.input.display(),
            a.out.display(),
            a.to
        ));
    }
    if a.to != "safetensors" {
        bail!("--to {}: expected safetensors, official, deit or timm", a.to);
    }
    // The weights give the family and sizes; heads, stop_grad_conv1 and a ResNet's image size
    // are flags.
    let (arch, sets, in_chans, what) = match official::infer_resnet(&a.input)? {
        Some(r) => {
            let arch = format!("resnet{}", r.depth);
            let sets = vec![
                format!("arch = \"{arch}\""),
                format!("cifar_stem = {}", r.cifar),
                format!("img_size = {}", a.image),
                format!("moco_mlp_dim = {}", r.mlp_dim),
                format!("moco_dim = {}", r.out_dim),
                format!("dataset = \"{}\"", a.dataset),
            ];
            let what = format!("{arch}{}, {} px", if r.cifar { " (CIFAR stem)" } else { "" }, a.image);
            (arch, sets, r.in_chans, what)
        }
        None => {
            let s = official::infer_shape(&a.input)?;
            let heads = a.heads.or(s.heads).unwrap_or(12);
            // `vit_conv_*` names imply the conv stem: only a checkpoint with one takes them.
            let arch = crate::models::vit::ARCHS
                .iter()
                .filter(|n| n.starts_with("vit_conv_") == s.conv_stem)
                .find(|n| crate::models::vit::arch_dims(n) == Some((s.dim, s.depth, heads)))
                .copied()
                .unwrap_or("vit_tiny")
                .to_string();
            let sets = vec![
                format!("arch = \"{arch}\""),
                format!("dim = {}", s.dim),
                format!("depth = {}", s.depth),
                format!("heads = {heads}"),
                format!("img_size = {}", s.img),
                format!("patch_size = {}", s.patch),
                format!("moco_mlp_dim = {}", s.mlp_dim),
                format!("moco_dim = {}", s.out_dim),
                format!("stop_grad_conv1 = {}", a.stop_grad_conv1 && !s.conv_stem),
                format!("conv_stem = {}", s.conv_stem),
                format!("dataset = \"{}\"", a.dataset),
            ];
            // Image and patch sizes are added from the final configuration (`--set` may change
            // them: a conv stem's weights do not fix the patch it stands for).
            let what = format!("dim {}, depth {}, heads {heads}", s.dim, s.depth);
            (arch, sets, s.in_chans, what)
        }
    };
    let base = if arch.starts_with("resnet") { "resnet50" } else { "vit_small" };
    let cfg = config::merge_sets(&config::preset(base)?, &[sets, a.sets.clone()].concat())?;
    let mut what = what;
    if !arch.starts_with("resnet") {
        let stem = if cfg.conv_stem { "conv stem for patch" } else { "patch" };
        what += &format!(", {} px / {stem} {}", cfg.img_size, cfg.patch_size);
    }
    let mut model = crate::moco::MoCo::new(&cfg.model(in_chans)?, 0);
    let mut opt = crate::optim::Optimizer::new(cfg.optimizer, cfg.weight_decay, false);
    let info = official::load_into(&a.input, &mut model, &mut opt)?;
    let state = crate::train::checkpoint::TrainState {
        format: crate::train::checkpoint::FORMAT,
        epoch: info.epoch.max(0) as usize,
        iter: 0,
        step: opt.steps(),
        in_chans,
        config: cfg,
        control: Default::default(),
    };
    crate::train::checkpoint::save(&a.out, &mut model, &opt, &state)?;
    Ok(format!("convert: {} ({arch}: {what}, epoch {}) -> {}", a.input.display(), info.epoch, a.out.display()))
}
