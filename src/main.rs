//! The `mocov3` command line: dispatch only; each command lives in `cli/<command>.rs`.

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "mocov3",
    version,
    about = "MoCo v3 self-supervised pre-training of Vision Transformers and ResNets, on its own engine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pre-train a ViT or a ResNet with MoCo v3 (checkpoint every epoch, resumable).
    Pretrain(cli::pretrain::Args),
    /// Write a PNG grid of images and their two augmented views (what pre-training sees).
    AugmentPreview(cli::augment_preview::Args),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: cli::bench::Cmd,
    },
    /// Weighted kNN accuracy of a checkpoint's features (or of raw pixels) on a labelled dataset.
    Knn(cli::knn::Args),
    /// Linear probe of a checkpoint's frozen backbone (the official main_lincls.py protocol).
    Lincls(cli::lincls::Args),
    /// Backbone features (cls token after the final norm, or --feature) of a dataset split, to
    /// safetensors.
    Extract(cli::extract::Args),
    /// Render the curves of a run directory (metrics.jsonl, lincls.jsonl) into RUN_DIR/report.png.
    Report(cli::report::Args),
    /// Convert between checkpoints: an official main_moco.py .pth.tar (zip or legacy) to a native
    /// one (`--to safetensors`), or a native one to the official layout (`--to official`) or to
    /// the DeiT fine-tuning layout (`--to deit`) or timm's `VisionTransformer` keys (`--to timm`).
    Convert(cli::convert::Args),
    /// Exactly one training step from an official checkpoint on given views (x1, x2 in a
    /// safetensors file), written in the official layout with the AdamW state: a parity check.
    Step(cli::step::Args),
    /// Pre-train the Fashion-MNIST preset (or finish it), then kNN and linear probe on its
    /// features (the cls token, and cls + mean patch token) and on raw pixels, the report, and a
    /// summary table.
    Quickstart(cli::quickstart::Args),
    /// The paper's instability study at this machine's scale (lr sweep, learned vs fixed patch
    /// projection, batch, position embedding), resumable, with report.md and figures.
    Study(cli::study::Args),
    /// A PNG of the cls token's attention per head of a ViT checkpoint's last block over given
    /// images (DINO's visualisation).
    Attention(cli::attention::Args),
    /// List the named presets.
    Presets,
}

fn main() {
    let cmd = Cli::parse().cmd;
    let distributed = matches!(cmd, Cmd::Pretrain(_) | Cmd::Bench { .. });
    cli::run_in_world(distributed, || match cmd {
        Cmd::Pretrain(a) => cli::pretrain::run(a),
        Cmd::AugmentPreview(a) => cli::augment_preview::run(a),
        Cmd::Bench { what } => cli::bench::run(what),
        Cmd::Knn(a) => cli::knn::run(a),
        Cmd::Lincls(a) => cli::lincls::run(a),
        Cmd::Extract(a) => cli::extract::run(a),
        Cmd::Report(a) => cli::report::run(a),
        Cmd::Convert(a) => cli::convert::run(a),
        Cmd::Step(a) => cli::step::run(a),
        Cmd::Quickstart(a) => cli::quickstart::run(a),
        Cmd::Study(a) => cli::study::run(a),
        Cmd::Attention(a) => cli::attention::run(a),
        Cmd::Presets => cli::presets::run(),
    });
}
