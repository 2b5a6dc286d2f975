//! `mocov3 lincls`: the linear probe of a checkpoint's frozen backbone.

use anyhow::Result;
use std::path::PathBuf;

use super::{open_probe, FeatureArg};

#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint written by `mocov3 pretrain` (or `convert`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset (default: the checkpoint's).
    #[arg(long)]
    dataset: Option<String>,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training epochs of the linear head (the official recipe: 90).
    #[arg(long, default_value_t = 90, value_parser = super::at_least_one)]
    epochs: usize,
    /// Batch size of the linear head (the official recipe: 1024 over 8 GPUs; 256 here).
    #[arg(long, default_value_t = 256, value_parser = super::at_least_one)]
    batch_size: usize,
    /// Base learning rate, scaled by batch / 256 (the official ViT recipe uses 3.0). A list
    /// (`--lr 1,3,10,30`, with --cached) is swept: each is trained on 90% of the training
    /// features and scored on the other 10%, and the best trains the final head.
    #[arg(long, value_delimiter = ',', default_value = "3.0", value_parser = super::positive)]
    lr: Vec<f64>,
    /// Train on cached features of the un-augmented images (fast; no augmentation).
    #[arg(long)]
    cached: bool,
    /// With --cached: standardise each feature dimension (mean and variance of the training
    /// features) before the head, as MAE's probe does with a BatchNorm without affine
    /// parameters; not MoCo v3's protocol.
    #[arg(long)]
    standardize: bool,
    /// Smallest share of the image a training crop keeps (random-resized-crop scale; the
    /// official 0.08 leaves few pixels of a 28-px image). Not used with --cached.
    #[arg(long, default_value_t = 0.08)]
    crop_min: f64,
    #[command(flatten)]
    feature: FeatureArg,
    /// Where to write lincls.jsonl (default: beside the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> Result<()> {
    use mocov3::eval::lincls;
    mocov3::engine::init_threads(a.threads);
    let cfg = lincls::LinclsConfig {
        epochs: a.epochs,
        batch: a.batch_size,
        lr: a.lr[0],
        momentum: 0.9,
        seed: a.seed,
        cached: a.cached,
        crop_min: a.crop_min,
        lr_sweep: if a.lr.len() > 1 { a.lr.clone() } else { vec![] },
        feature: a.feature.value,
        standardize: a.standardize,
    };
    // Bad settings are reported before the checkpoint and the dataset are read.
    cfg.validate()?;
    let mut p = open_probe(&a.checkpoint, &a.dataset, &a.data_dir)?;
    let name = p.dataset.clone();
    let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(|d| d.to_path_buf()).unwrap_or_default());
    std::fs::create_dir_all(&out)?;
    let mut log = mocov3::train::metrics::MetricsLog::open(&out.join("lincls.jsonl"), true)?;
    let mut tb = mocov3::train::tensorboard::EventWriter::create(&out)?;
    let mut err = None;
    let probed = lincls::run(&mut p.model.base.backbone, &p.train, &p.test, &p.plain, &cfg, |r| {
        eprintln!(
            "epoch {:3}/{}: lr {:.4} loss {:.4} top1 {:.2} top5 {:.2}",
            r.epoch + 1,
            cfg.epochs,
            r.lr,
            r.train_loss,
            r.top1,
            r.top5
        );
        let values = [
            ("lincls/train_loss", r.train_loss as f32),
            ("lincls/lr", r.lr as f32),
            ("lincls/top1", r.top1 as f32),
            ("lincls/top5", r.top5 as f32),
        ];
        if let Err(e) = log.write(r).and_then(|_| tb.scalars(r.epoch as u64 + 1, &values)) {
            err = Some(e);
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    for sp in &probed.sweep {
        eprintln!("lr sweep: base lr {} -> held-out top1 {:.2}", sp.lr, sp.val_top1);
    }
    let res = &probed.epochs;
    let best = res.iter().map(|r| r.top1).fold(f64::NEG_INFINITY, f64::max);
    let last = res.last().map(|r| (r.top1, r.top5)).unwrap_or((0.0, 0.0));
    println!(
        "lincls dataset={name} epochs={} lr={} mode={} best_top1={best:.2} last_top1={:.2} last_top5={:.2} backbone=unchanged",
        cfg.epochs,
        probed.lr,
        match (cfg.cached, cfg.standardize) {
            (true, true) => "cached+standardized",
            (true, false) => "cached",
            _ => "augmented",
        },
        last.0,
        last.1
    );
    Ok(())
}
