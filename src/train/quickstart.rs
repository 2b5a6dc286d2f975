//! The whole small-scale pipeline behind `mocov3 quickstart`: pre-train (or resume, or only
//! score) the Fashion-MNIST preset, then weighted kNN and the linear probe on its features and
//! on raw pixels, the report, and a summary table and `quickstart.json`.

use super::pretrain::{self, RunOptions};
use super::probe::open_probe;
use super::{budget, config};
use crate::eval::{features, knn, lincls};
use anyhow::Result;
use std::path::PathBuf;

/// What `mocov3 quickstart` asks for (its flags).
pub struct QuickstartOptions {
    pub out: PathBuf,
    /// Pre-training epochs (None: the preset's, or what `budget` fixes).
    pub epochs: Option<usize>,
    /// A time budget for the whole command (`60m`, `1h30m`, ...).
    pub budget: Option<String>,
    pub lincls_epochs: usize,
    /// Base lrs the probe chooses from (None: the default sweep).
    pub lincls_lr: Option<Vec<f64>>,
    /// Probe the L2-normalised features instead of standardised ones.
    pub lincls_l2: bool,
    pub data_dir: Option<PathBuf>,
    pub threads: usize,
}

/// What the quickstart reports for one kind of features: kNN top-1 (plain, and on standardised
/// features), and the linear probe's chosen base lr with its best and last top-1.
struct Scores {
    knn: f64,
    knn_std: f64,
    lr: f64,
    best: f64,
    last: f64,
}

/// The whole small-scale pipeline: pre-train (or resume) the Fashion-MNIST preset, then kNN and
/// the linear probe on its features and on raw pixels, the report, and a summary.
pub fn run(a: &QuickstartOptions) -> Result<()> {
    crate::engine::init_threads(a.threads);
    let t0 = std::time::Instant::now();
    let mut cfg = config::preset("fashion-mnist")?;
    cfg.out_dir = a.out.clone();
    if let Some(e) = a.epochs {
        cfg.epochs = e;
    }
    cfg.data_dir = a.data_dir.clone();
    let ckpt = pretrain::checkpoint_path(&cfg.out_dir);
    let budget_secs = a.budget.as_deref().map(budget::parse_duration).transpose()?;
    let prior = if ckpt.is_file() { Some(crate::train::checkpoint::read_state(&ckpt)?) } else { None };
    if let (Some(limit), Some(b)) = (budget_secs, a.budget.as_deref()) {
        match &prior {
            Some(state) => {
                cfg.epochs = state.config.epochs;
                eprintln!(
                    "quickstart: {} holds a run of {} epochs: --budget keeps its schedule",
                    ckpt.display(),
                    cfg.epochs
                );
            }
            None => {
                // Scoring (features of 70k images, kNN, 27 linear probes) took as long as 340-450
                // training steps in the measured runs (docs/experiments.md).
                let plan = budget::fit_epochs(&mut cfg, limit, t0, 400.0)?;
                eprintln!("quickstart: --budget {b}: {plan}");
            }
        }
    }
    let resume = match &prior {
        Some(state) => {
            config::resumed(&state.config, &cfg, &ckpt)?;
            Some(state.epoch)
        }
        None => None,
    };
    // None when the run directory already held the finished run: only scored here.
    let train_secs = match resume {
        Some(e) if e >= cfg.epochs => {
            eprintln!("quickstart: {} already holds {e} epochs; evaluating it", ckpt.display());
            None
        }
        _ => {
            let opts = RunOptions { resume: resume.map(|_| ckpt.clone()), stop_after_epochs: None, quiet: false };
            pretrain::run(cfg.clone(), &opts)?;
            Some(t0.elapsed().as_secs_f64())
        }
    };
    let mut p = open_probe(&ckpt, &None, &a.data_dir)?;
    let test = &p.test;
    let classes = p.train.classes.max(test.classes);
    let net = &mut p.model.base.backbone;
    net.set_keep_activations(false);
    eprintln!("quickstart: features of {} train and {} test images", p.train.len(), test.len());
    // The cls token (the protocol's feature), and cls + mean patch token (DINO's probe). Two
    // passes: the cls half of the second comes out of a last block run on all tokens, equal to
    // the first only to rounding, and the protocol's numbers stay those of `knn` and `lincls`.
    let mut feats = |kind| -> Result<_> {
        let (tr, d) = features::backbone(net, &p.train, p.train.len(), &p.plain, 256, kind)?;
        let (te, _) = features::backbone(net, test, test.len(), &p.plain, 256, kind)?;
        Ok((tr, te, d))
    };
    let (ftrain, ftest, d) = feats(features::VitFeature::Cls)?;
    let (atrain, atest, d2) = feats(features::VitFeature::ClsAvg)?;
    let (ptrain, pd) = features::pixels(&p.train, p.train.len())?;
    let (ptest, _) = features::pixels(test, test.len())?;
    let lcfg = lincls::LinclsConfig {
        epochs: a.lincls_epochs,
        batch: 256,
        lr: 3.0,
        momentum: 0.9,
        seed: 0,
        cached: true,
        crop_min: 0.08,
        lr_sweep: a.lincls_lr.clone().unwrap_or_else(|| {
            if a.lincls_l2 {
                vec![1.0, 3.0, 10.0, 30.0, 100.0]
            } else {
                vec![0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
            }
        }),
        feature: features::VitFeature::Cls,
        standardize: !a.lincls_l2,
    };
    let best = |r: &[lincls::EpochResult]| r.iter().map(|x| x.top1).fold(f64::NEG_INFINITY, f64::max);
    let last = |r: &[lincls::EpochResult]| r.last().map(|x| x.top1).unwrap_or(f64::NAN);
    let score = |x: &[f32], xt: &[f32], d: usize, what: &str| -> Result<Scores> {
        let vote =
            |b: &[f32], q: &[f32]| knn::classify(b, &p.train.labels, q, &test.labels, d, classes, &[20], 0.07)[0].top1;
        let (xs, xts) = knn::standardized(x, xt, d);
        let (knn, knn_std) = (vote(x, xt), vote(&xs, &xts));
        let r = lincls::probe_swept(x, &p.train.labels, xt, &test.labels, d, classes, &lcfg, |_| {})?;
        for sp in &r.sweep {
            eprintln!("quickstart: linear probe of {what}, base lr {} -> held-out top1 {:.2}", sp.lr, sp.val_top1);
        }
        Ok(Scores { knn, knn_std, lr: r.lr, best: best(&r.epochs), last: last(&r.epochs) })
    };
    let m = score(&ftrain, &ftest, d, "the model")?;
    let x = score(&ptrain, &ptest, pd, "raw pixels")?;
    let c = score(&atrain, &atest, d2, "the model's cls + mean patch token")?;
    let report = crate::report::render(&cfg.out_dir)?;
    let summary = serde_json::json!({
        "epochs": p.state.epoch,
        "budget_seconds": budget_secs,
        "pretrain_seconds": train_secs,
        "total_seconds": t0.elapsed().as_secs_f64(),
        "knn_top1": m.knn, "knn_top1_pixels": x.knn, "knn_top1_cls_avg": c.knn,
        "knn_top1_standardized": m.knn_std, "knn_top1_pixels_standardized": x.knn_std,
        "knn_top1_cls_avg_standardized": c.knn_std,
        "linear_top1_best": m.best, "linear_top1_last": m.last,
        "linear_top1_pixels_best": x.best, "linear_top1_pixels_last": x.last,
        "linear_top1_cls_avg_best": c.best, "linear_top1_cls_avg_last": c.last,
        "linear_epochs": lcfg.epochs, "linear_standardized": lcfg.standardize, "linear_lr": m.lr, "linear_lr_pixels": x.lr, "linear_lr_cls_avg": c.lr,
    });
    std::fs::write(cfg.out_dir.join("quickstart.json"), serde_json::to_string_pretty(&summary)?)?;
    println!("Fashion-MNIST test set, top-1 (%)       ViT ({} epochs)   raw pixels", p.state.epoch);
    println!("  weighted kNN (k 20, T 0.07)           {:>10.2}   {:>10.2}", m.knn, x.knn);
    println!("    the same, standardised features     {:>10.2}   {:>10.2}", m.knn_std, x.knn_std);
    println!(
        "  linear probe ({} epochs, best/last)  {:>5.2}/{:<5.2}  {:>5.2}/{:<5.2}   (base lr {} / {}{})",
        lcfg.epochs,
        m.best,
        m.last,
        x.best,
        x.last,
        m.lr,
        x.lr,
        if lcfg.standardize { ", standardised features" } else { "" }
    );
    println!(
        "  the ViT's cls + mean patch token (DINO's probe, {d2}-d): kNN {:.2} ({:.2} standardised), linear \
         {:.2}/{:.2} (base lr {})",
        c.knn, c.knn_std, c.best, c.last, c.lr
    );
    let pretrained = match train_secs {
        Some(s) => format!("pre-training {:.1} min", s / 60.0),
        None => "no pre-training (a finished run, scored again)".into(),
    };
    println!(
        "{pretrained}, all {:.1} min; curves: {}; summary: {}",
        t0.elapsed().as_secs_f64() / 60.0,
        report.display(),
        cfg.out_dir.join("quickstart.json").display()
    );
    Ok(())
}
