//! `mocov3 convert`: official checkpoints to native ones and back, and to DeiT/timm layouts.

use anyhow::Result;
use mocov3::train::config;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint to convert.
    input: PathBuf,
    /// safetensors (official -> native), official, deit or timm (native -> torch.save file).
    #[arg(long)]
    to: String,
    /// Output file (safetensors for --to safetensors, a torch.save zip file otherwise).
    #[arg(long)]
    out: PathBuf,
    /// Attention heads (not recorded in the weights; the official ViT-S and ViT-B use 12).
    #[arg(long, default_value_t = 12)]
    heads: usize,
    /// The run froze the patch projection (--stop-grad-conv1, the official ViT recipe).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    stop_grad_conv1: bool,
    /// Image size of a ResNet checkpoint (not recorded in its weights; a ViT's is).
    #[arg(long, default_value_t = 224)]
    image: usize,
    /// Dataset the native checkpoint should name for later commands.
    #[arg(long, default_value = "imagenet")]
    dataset: String,
    /// The recipe the run was trained with (batch_size, epochs, lr, ...: keys of `mocov3
    /// pretrain --print-config`), recorded for a later `pretrain --resume`, which keeps it.
    /// Default: the official vit_small / resnet50 recipe.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    use mocov3::interop::official;
    if a.to == "official" || a.to == "deit" || a.to == "timm" {
        let (mut model, _, state) = mocov3::train::checkpoint::load(&a.input)?;
        if a.to != "official" && model.cfg.backbone.vit().is_none() {
            anyhow::bail!(
                "--to {}: a ViT layout; this checkpoint holds a {} (use --to official)",
                a.to,
                state.config.arch
            );
        }
        let obj = match a.to.as_str() {
            "official" => official::to_official(&mut model, state.epoch as i64, &state.config.arch),
            "deit" => official::to_deit(&mut model),
            _ => official::to_timm(&mut model),
        };
        mocov3::interop::writer::save(&a.out, &obj)?;
        println!("convert: {} -> {} ({} layout, torch.save zip format)", a.input.display(), a.out.display(), a.to);
        return Ok(());
    }
    if a.to != "safetensors" {
        anyhow::bail!("--to {}: expected safetensors, official, deit or timm", a.to);
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
            // `vit_conv_*` names imply the conv stem: only a checkpoint with one takes them.
            let arch = mocov3::models::vit::ARCHS
                .iter()
                .filter(|n| n.starts_with("vit_conv_") == s.conv_stem)
                .find(|n| mocov3::models::vit::arch_dims(n) == Some((s.dim, s.depth, a.heads)))
                .copied()
                .unwrap_or("vit_tiny")
                .to_string();
            let sets = vec![
                format!("arch = \"{arch}\""),
                format!("dim = {}", s.dim),
                format!("depth = {}", s.depth),
                format!("heads = {}", a.heads),
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
            let what = format!("dim {}, depth {}, heads {}", s.dim, s.depth, a.heads);
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
    let mut model = mocov3::moco::MoCo::new(&cfg.model(in_chans)?, 0);
    let mut opt = mocov3::optim::Optimizer::new(cfg.optimizer, cfg.weight_decay, false);
    let info = official::load_into(&a.input, &mut model, &mut opt)?;
    let state = mocov3::train::checkpoint::TrainState {
        format: mocov3::train::checkpoint::FORMAT,
        epoch: info.epoch.max(0) as usize,
        step: opt.steps(),
        in_chans,
        config: cfg,
    };
    mocov3::train::checkpoint::save(&a.out, &mut model, &opt, &state)?;
    println!("convert: {} ({arch}: {what}, epoch {}) -> {}", a.input.display(), info.epoch, a.out.display());
    Ok(())
}
