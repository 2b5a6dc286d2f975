//! `mocov3 convert`: official checkpoints to native ones and back, and to DeiT/timm layouts.

use anyhow::Result;
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
    /// Attention heads (not in the weights): default the file's record (`convert --to official`
    /// writes one), else 12 (the official ViT-S and ViT-B).
    #[arg(long)]
    heads: Option<usize>,
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
    let opts = mocov3::interop::convert::ConvertOptions {
        input: a.input,
        to: a.to,
        out: a.out,
        heads: a.heads,
        stop_grad_conv1: a.stop_grad_conv1,
        image: a.image,
        dataset: a.dataset,
        sets: a.sets,
    };
    println!("{}", mocov3::interop::convert::convert(&opts)?);
    Ok(())
}
