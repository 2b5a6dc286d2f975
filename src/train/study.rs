//! `mocov3 study`: the paper's instability and position-embedding experiments at a scale one
//! machine runs, as one resumable command. From a base configuration (by default the
//! Fashion-MNIST preset with a plain patch projection, so that it can be learned or fixed):
//!
//! - an lr sweep (×¼, ×1, ×4 the base lr), learned patch projection, sin-cos PE;
//! - the fixed random patch projection (`stop_grad_conv1`) at the largest lr;
//! - a batch ×4 (lr scaled by batch / 256, the linear rule), where it fits in memory;
//! - the position-embedding ablation: learned and none beside the sin-cos base run.
//!
//! Every run trains the same number of epochs (fixed once, from `--budget`, in `study.json`),
//! with the dense kNN monitor, the detectors, and a final kNN and linear probe on frozen
//! features. Each run lives in its own directory; a run already scored (its `result.json`) is
//! reused, one interrupted is resumed, so the command can be stopped and started again. The
//! report (`report.md` with figures) is `super::study_report`'s.

use super::budget;
use super::config::PretrainConfig;
use super::pretrain::{self, RunOptions};
use crate::eval::{features, knn, lincls};
use crate::nn::posembed::PosEmbedKind;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct StudyOptions {
    pub out: PathBuf,
    pub base: PretrainConfig,
    /// Seconds for the whole study (training and scoring), or None with `epochs`.
    pub budget: Option<f64>,
    pub epochs: Option<usize>,
    pub lincls_epochs: usize,
    pub quiet: bool,
    /// Write the report from the runs finished so far, training nothing.
    pub report_only: bool,
}

/// One run of the study.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub name: String,
    /// The experiments it belongs to: `lr`, `patch`, `batch`, `pe`.
    pub groups: Vec<&'static str>,
    pub cfg: PretrainConfig,
}

/// What a run gave (its `result.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub groups: Vec<String>,
    /// `done`, `diverged: ...` or `skipped: ...`.
    pub status: String,
    pub lr: f64,
    pub batch: usize,
    pub fixed_patch: bool,
    pub pos_embed: String,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub knn_top1: Option<f64>,
    pub linear_top1: Option<f64>,
    pub train_seconds: f64,
    pub score_seconds: f64,
}

/// The study's fixed plan (`study.json`): its epochs per run, kept by a resumed study.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub epochs: usize,
    pub runs: Vec<String>,
    pub note: String,
}

/// The runs for a base configuration.
pub fn plan(base: &PretrainConfig) -> Vec<RunSpec> {
    let mut b = base.clone();
    (b.stop_grad_conv1, b.conv_stem, b.pos_embed) = (false, false, PosEmbedKind::Sincos);
    // Every step's gradient norms in the log (the figures show single-step spikes).
    b.log_every = 1;
    let run = |name: &str, groups: Vec<&'static str>, f: &dyn Fn(&mut PretrainConfig)| {
        let mut cfg = b.clone();
        f(&mut cfg);
        RunSpec { name: name.into(), groups, cfg }
    };
    let lr = b.lr;
    vec![
        run("lr-x0.25", vec!["lr"], &|c| c.lr = lr / 4.0),
        run("lr-x1", vec!["lr", "batch", "pe"], &|_| {}),
        run("lr-x4", vec!["lr", "patch"], &|c| c.lr = lr * 4.0),
        run("lr-x4-fixed-patch", vec!["patch"], &|c| (c.lr, c.stop_grad_conv1) = (lr * 4.0, true)),
        run("batch-x4", vec!["batch"], &|c| c.batch_size *= 4),
        run("pe-learned", vec!["pe"], &|c| c.pos_embed = PosEmbedKind::Learned),
        run("pe-none", vec!["pe"], &|c| c.pos_embed = PosEmbedKind::None),
    ]
}

fn read_json<T: for<'a> Deserialize<'a>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is damaged: delete it to redo that part", path.display()))
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Run (or reuse) every run of the study, then write the report. Returns the report's path.
pub fn run(o: &StudyOptions) -> Result<PathBuf> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&o.out).with_context(|| format!("cannot create {}", o.out.display()))?;
    crate::engine::init_threads(o.base.threads);
    if o.base.arch.starts_with("resnet") {
        anyhow::bail!(
            "the study varies a ViT's patch projection and position embedding: give a ViT preset, not {}",
            o.base.arch
        );
    }
    let specs = plan(&o.base);
    // Every run's configuration is checked before any trains.
    for s in &specs {
        s.cfg.model(1).with_context(|| format!("study run {}", s.name))?;
    }
    let plan_path = o.out.join("study.json");
    if o.report_only && !plan_path.is_file() {
        anyhow::bail!("{} not found: no study was started in {}", plan_path.display(), o.out.display());
    }
    let plan = if plan_path.is_file() {
        let p: Plan = read_json(&plan_path)?;
        eprintln!("study: {} holds the plan ({} epochs per run): continuing it", plan_path.display(), p.epochs);
        p
    } else {
        let (epochs, note) = match (o.epochs, o.budget) {
            (Some(e), _) => (e, format!("{e} epochs per run (--epochs)")),
            (None, Some(limit)) => fit(&specs[1].cfg, specs.len(), limit, t0, &o.out)?,
            (None, None) => anyhow::bail!("give --budget (e.g. 90m) or --epochs"),
        };
        let p = Plan { epochs, runs: specs.iter().map(|s| s.name.clone()).collect(), note };
        write_json(&plan_path, &p)?;
        p
    };
    eprintln!("study: {} runs of {} epochs into {}: {}", specs.len(), plan.epochs, o.out.display(), plan.note);
    let mut results = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let dir = o.out.join(&spec.name);
        let done = dir.join("result.json");
        if done.is_file() {
            let r: RunResult = read_json(&done)?;
            eprintln!("study: [{}/{}] {}: reused ({})", i + 1, specs.len(), spec.name, r.status);
            results.push(r);
            continue;
        }
        if o.report_only {
            eprintln!("study: [{}/{}] {}: not finished yet, left out of the report", i + 1, specs.len(), spec.name);
            continue;
        }
        eprintln!("study: [{}/{}] {} ...", i + 1, specs.len(), spec.name);
        let mut cfg = spec.cfg.clone();
        (cfg.epochs, cfg.out_dir) = (plan.epochs, dir.clone());
        // A short run keeps its warm-up to a fifth of it (the official recipe: 40 of 300 epochs).
        cfg.warmup_epochs = cfg.warmup_epochs.min(plan.epochs as f64 / 5.0);
        let r = one_run(spec, cfg, o)?;
        eprintln!(
            "study: {}: {}; kNN {} linear {} ({:.1} min)",
            spec.name,
            r.status,
            r.knn_top1.map_or("-".into(), |v| format!("{v:.2}%")),
            r.linear_top1.map_or("-".into(), |v| format!("{v:.2}%")),
            (r.train_seconds + r.score_seconds) / 60.0
        );
        write_json(&done, &r)?;
        results.push(r);
    }
    let report = super::study_report::write(&o.out, &results, &plan, t0.elapsed().as_secs_f64())?;
    eprintln!("study: report {} ({:.1} min)", report.display(), t0.elapsed().as_secs_f64() / 60.0);
    Ok(report)
}

/// Epochs per run that fit `limit` seconds for `runs` runs like `cfg`, half an epoch's time per
/// run kept for scoring (features of both splits and the probe).
fn fit(cfg: &PretrainConfig, runs: usize, limit: f64, t0: Instant, out: &Path) -> Result<(usize, String)> {
    let mut c = cfg.clone();
    c.out_dir = out.join(".calibration-run");
    let rate = budget::measure_step(&c)?;
    let per_epoch = c.steps_per_epoch(rate.steps_per_epoch);
    let reserve = 0.5 * per_epoch as f64 * rate.secs * runs as f64;
    let epochs =
        budget::epochs_within(limit, t0.elapsed().as_secs_f64(), rate.secs, per_epoch * runs, budget::MARGIN, reserve)?;
    Ok((
        epochs,
        format!(
            "--budget {:.0} min: {:.3} s per step of the base run here, {per_epoch} steps per epoch, {runs} runs -> {epochs} \
             epochs per run",
            limit / 60.0,
            rate.secs
        ),
    ))
}

/// Train (or resume) one run and score it.
fn one_run(spec: &RunSpec, cfg: PretrainConfig, o: &StudyOptions) -> Result<RunResult> {
    let ckpt = pretrain::checkpoint_path(&cfg.out_dir);
    let mut r = RunResult {
        name: spec.name.clone(),
        groups: spec.groups.iter().map(|g| g.to_string()).collect(),
        status: "done".into(),
        lr: cfg.peak_lr(),
        batch: cfg.batch_size,
        fixed_patch: cfg.stop_grad_conv1,
        pos_embed: format!("{:?}", cfg.pos_embed).to_lowercase(),
        epochs: cfg.epochs,
        steps_per_epoch: 0,
        knn_top1: None,
        linear_top1: None,
        train_seconds: 0.0,
        score_seconds: 0.0,
    };
    let t = Instant::now();
    // An interrupted run continues (a finished one has nothing left to train).
    let resume = ckpt.is_file().then(|| ckpt.clone());
    let trained = pretrain::run(cfg.clone(), &RunOptions { resume, stop_after_epochs: None, quiet: o.quiet });
    r.train_seconds = t.elapsed().as_secs_f64();
    match trained {
        Ok(s) => r.steps_per_epoch = cfg.steps_per_epoch(s.full_epoch_steps),
        Err(e) => {
            let msg = format!("{e:#}");
            if msg.contains("GB of memory") {
                r.status = format!("skipped: {msg}");
                return Ok(r);
            }
            if !msg.contains("diverged") {
                return Err(e.context(format!("study run {}", spec.name)));
            }
            r.status = format!("diverged: {msg}");
        }
    }
    if ckpt.is_file() {
        let t = Instant::now();
        let (k, l) = score(&ckpt, o.lincls_epochs)?;
        (r.knn_top1, r.linear_top1, r.score_seconds) = (Some(k), Some(l), t.elapsed().as_secs_f64());
    }
    Ok(r)
}

/// kNN (k 20, T 0.07) and linear-probe top-1 (%) of a checkpoint's frozen cls features on its
/// dataset's test split; the probe trains on cached features with its lr chosen on held-out
/// training features.
pub fn score(ckpt: &Path, lincls_epochs: usize) -> Result<(f64, f64)> {
    let mut p = super::probe::open_probe(ckpt, &None, &None)?;
    let classes = p.train.classes.max(p.test.classes);
    let net = &mut p.model.base.backbone;
    net.set_keep_activations(false);
    let kind = features::VitFeature::Cls;
    let (train, d) = features::backbone(net, &p.train, p.train.len(), &p.plain, 256, kind)?;
    let (test, _) = features::backbone(net, &p.test, p.test.len(), &p.plain, 256, kind)?;
    let knn = knn::classify(&train, &p.train.labels, &test, &p.test.labels, d, classes, &[20], 0.07)[0].top1;
    let lcfg = lincls::LinclsConfig {
        epochs: lincls_epochs,
        batch: 256,
        lr: 1.0,
        momentum: 0.9,
        seed: 0,
        cached: true,
        crop_min: 0.08,
        lr_sweep: vec![0.03, 0.3, 3.0],
        feature: kind,
        standardize: true,
    };
    let r = lincls::probe_swept(&train, &p.train.labels, &test, &p.test.labels, d, classes, &lcfg, |_| {})?;
    let best = r.epochs.iter().map(|e| e.top1).fold(f64::NAN, f64::max);
    Ok((knn, best))
}

/// The event lines of a run's `metrics.jsonl`, and its step lines.
pub fn read_log(dir: &Path) -> Result<(Vec<Value>, Vec<Value>)> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let rows: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    Ok(rows.into_iter().partition(|v| v.get("event").is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_varies_one_thing_per_run_from_the_base() {
        let base = crate::train::config::preset("fashion-mnist").unwrap();
        let p = plan(&base);
        let by = |n: &str| p.iter().find(|s| s.name == n).unwrap().cfg.clone();
        let b = by("lr-x1");
        assert!(!b.conv_stem && !b.stop_grad_conv1 && b.pos_embed == PosEmbedKind::Sincos);
        assert_eq!(by("lr-x4").lr, 4.0 * b.lr);
        assert!(by("lr-x4-fixed-patch").stop_grad_conv1);
        assert_eq!(by("batch-x4").batch_size, 4 * b.batch_size);
        assert_eq!(by("pe-none").pos_embed, PosEmbedKind::None);
        let names: std::collections::HashSet<_> = p.iter().map(|s| &s.name).collect();
        assert_eq!(names.len(), p.len());
    }
}
