//! `mocov3 knn`: weighted kNN accuracy of a checkpoint's features or of raw pixels.

use anyhow::Result;
use std::path::PathBuf;

use super::{open_probe, FeatureArg};

#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint written by `mocov3 pretrain`.
    #[arg(long, required_unless_present = "pixels", conflicts_with = "pixels")]
    checkpoint: Option<PathBuf>,
    /// Use raw pixels as features (the baseline to beat).
    #[arg(long)]
    pixels: bool,
    /// Dataset (default: the checkpoint's, or fashion-mnist with --pixels).
    #[arg(long)]
    dataset: Option<String>,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Neighbours, one or more (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "20", value_parser = super::at_least_one)]
    k: Vec<usize>,
    /// Temperature of the vote weights exp(sim / T).
    #[arg(long, default_value_t = 0.07, value_parser = super::positive_f32)]
    t: f32,
    /// Use only the first N training images as the bank.
    #[arg(long, value_parser = super::at_least_one)]
    train_limit: Option<usize>,
    /// Use only the first N test images as queries.
    #[arg(long, value_parser = super::at_least_one)]
    test_limit: Option<usize>,
    /// Whose backbone gives the features: the base encoder (the one the official probe takes)
    /// or the momentum encoder.
    #[arg(long, value_parser = ["base", "momentum"], default_value = "base")]
    encoder: String,
    #[command(flatten)]
    feature: FeatureArg,
    /// Standardise each feature dimension with the bank's mean and variance, then L2-normalise
    /// again, before the vote (not the plain protocol: every dimension counts alike).
    #[arg(long)]
    standardize: bool,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> Result<()> {
    use mocov3::eval::{features, knn};
    mocov3::engine::init_threads(a.threads);
    let t0 = std::time::Instant::now();
    let (dataset, train, test, bank, query, d, what) = match &a.checkpoint {
        Some(ck) => {
            let mut p = open_probe(ck, &a.dataset, &a.data_dir)?;
            let (nb, nq) = (features::count(&p.train, a.train_limit), features::count(&p.test, a.test_limit));
            let net = match a.encoder.as_str() {
                "momentum" => &mut p.model.momentum.backbone,
                _ => &mut p.model.base.backbone,
            };
            net.set_keep_activations(false);
            let (b, d) = features::backbone(net, &p.train, nb, &p.plain, 256, a.feature.value)?;
            let (q, _) = features::backbone(net, &p.test, nq, &p.plain, 256, a.feature.value)?;
            let what = format!(
                "{} (epoch {}, {} encoder, feature {})",
                ck.display(),
                p.state.epoch,
                a.encoder,
                a.feature.value
            );
            (p.dataset, p.train, p.test, b, q, d, what)
        }
        None => {
            let dataset = a.dataset.clone().unwrap_or_else(|| "fashion-mnist".into());
            let train = mocov3::data::load(&dataset, a.data_dir.as_deref(), true)?;
            let test = mocov3::data::load(&dataset, a.data_dir.as_deref(), false)?;
            let (b, d) = features::pixels(&train, features::count(&train, a.train_limit))?;
            let (q, _) = features::pixels(&test, features::count(&test, a.test_limit))?;
            (dataset, train, test, b, q, d, "pixels".to_string())
        }
    };
    let (nb, nq) = (bank.len() / d, query.len() / d);
    let classes = train.classes.max(test.classes);
    let (bank, query) = if a.standardize { knn::standardized(&bank, &query, d) } else { (bank, query) };
    let r = knn::classify(&bank, &train.labels[..nb], &query, &test.labels[..nq], d, classes, &a.k, a.t);
    eprintln!("features of {nb} train and {nq} test images from {what} in {:.1} s", t0.elapsed().as_secs_f64());
    for x in r {
        println!(
            "knn dataset={dataset} features={}{} k={} t={} top1={:.2} top5={:.2}",
            if a.pixels { "pixels" } else { "checkpoint" },
            if a.standardize { "+standardized" } else { "" },
            x.k,
            a.t,
            x.top1,
            x.top5
        );
    }
    Ok(())
}
