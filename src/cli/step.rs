//! `mocov3 step`: one training step from an official checkpoint (ViT or ResNet), for parity checks.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Official checkpoint (.pth.tar) to start from: a ViT (stepped with AdamW) or a ResNet (with LARS, as main_moco.py).
    #[arg(long)]
    checkpoint: PathBuf,
    /// safetensors file with `x1` and `x2`, f32 [N, C, H, W] (a ResNet takes its image size from them).
    #[arg(long)]
    views: PathBuf,
    /// Output: the official layout with the optimiser state (AdamW or LARS) after the step (.pth.tar).
    #[arg(long)]
    out: PathBuf,
    /// Learning rate of the step (already scaled; no warm-up or schedule).
    #[arg(long)]
    lr: f64,
    /// Weight decay (AdamW's, or LARS's for a ResNet).
    #[arg(long)]
    wd: f64,
    /// Momentum of the momentum-encoder update.
    #[arg(long)]
    moco_m: f64,
    /// Temperature τ of the contrastive loss.
    #[arg(long)]
    moco_t: f32,
    /// ViT: attention heads (not in the weights).
    #[arg(long, default_value_t = 12)]
    heads: usize,
    /// ViT: position embedding (not told apart by the weights).
    #[arg(long, value_enum, default_value = "sincos")]
    pos: mocov3::nn::posembed::PosEmbedKind,
    /// ViT: freeze the patch projection (official main_moco.py: --stop-grad-conv1, off unless given; the ViT recipe turns it on).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    stop_grad_conv1: bool,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> Result<()> {
    mocov3::engine::init_threads(a.threads);
    let args = mocov3::interop::step::StepArgs {
        heads: a.heads,
        pos: a.pos,
        stop_grad_conv1: a.stop_grad_conv1,
        lr: a.lr,
        wd: a.wd,
        m: a.moco_m,
        t: a.moco_t,
    };
    let loss = mocov3::interop::step::run(&a.checkpoint, &a.views, &a.out, &args)?;
    println!("loss {loss:.8}");
    eprintln!("step: {} -> {}", a.checkpoint.display(), a.out.display());
    Ok(())
}
