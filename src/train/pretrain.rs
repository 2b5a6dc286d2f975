//! The pre-training loop: data → MoCo step → AdamW → schedules, with metrics, progress, atomic
//! per-epoch checkpoints and bit-exact resume.

use super::checkpoint::{self, TrainState, FORMAT};
use super::config::PretrainConfig;
use super::distributed;
use super::metrics::{MetricsLog, StepMetrics};
use super::tensorboard::EventWriter;
use crate::data::augment::Augment;
use crate::data::loader::TwoViewLoader;
use crate::engine::comm;
use crate::eval::monitor::KnnMonitor;
use crate::moco::MoCo;
use crate::nn::Module;
use crate::optim::{schedule, Optimizer};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Default, Clone)]
pub struct RunOptions {
    /// Continue from this checkpoint (its configuration wins over the given one).
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint) after this many epochs of this invocation.
    pub stop_after_epochs: Option<usize>,
    /// No progress bar or console lines.
    pub quiet: bool,
}

/// A duration for the console: "42 s", "12.5 min", "2 h 05 min".
fn clock(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.0} s")
    } else if secs < 3600.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

pub struct RunSummary {
    /// Loss of every step run by this invocation, in order.
    pub losses: Vec<f32>,
    pub checkpoint: PathBuf,
    pub next_epoch: usize,
    /// The last kNN monitor accuracy (%), if the monitor ran.
    pub last_knn: Option<f64>,
    /// Seconds spent in the kNN monitor, and in the whole run.
    pub monitor_secs: f64,
    pub total_secs: f64,
    /// Steps in a full epoch of this configuration's training set (before `max_steps_per_epoch`).
    pub full_epoch_steps: usize,
}

/// The two-view augmentation a configuration trains with on `set` (normalised with the
/// dataset's own channel statistics).
pub fn augmentation(cfg: &PretrainConfig, set: &crate::data::ImageSet) -> Augment {
    let (mean, std) = set.channel_stats();
    Augment {
        out: cfg.img_size,
        crop_min: cfg.crop_min,
        flip: true,
        mean,
        std,
        kind: cfg.augment,
        blur_sigma: (cfg.blur_sigma_min, cfg.blur_sigma_max),
    }
}

pub fn checkpoint_path(out_dir: &Path) -> PathBuf {
    out_dir.join("checkpoint.safetensors")
}

/// Pre-train as `cfg` says (or continue the run of `opts.resume`): set-up, then per epoch the
/// steps (loss, backward, update, monitor, logging) and a checkpoint.
///
/// Over several processes ([`comm::world`], see [`distributed`]) every rank runs this same loop
/// on its shard of each global batch; rank 0 alone writes the run directory and the console.
pub fn run(cfg: PretrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    let (cfg, set, mut model, mut opt, (start_epoch, start_iter), mut step) = start(cfg, opts)?;
    let world = comm::world();
    let rank0 = world.rank() == 0;
    let ckpt = checkpoint_path(&cfg.out_dir);
    // Run directory, metrics and TensorBoard: rank 0's.
    let mut sinks = if rank0 { Some(open_sinks(&cfg, step)?) } else { None };

    let aug = augmentation(&cfg, &set);
    let mut monitor = if cfg.knn_every > 0 && rank0 {
        let eval = crate::data::load(&cfg.dataset, cfg.data_dir.as_deref(), false)?;
        let cap = if cfg.knn_bank > 0 { cfg.knn_bank } else { (set.len() / 10).max(cfg.knn_k) };
        let d = model.cfg.backbone.dim();
        let classes = set.classes.max(eval.classes);
        Some((KnnMonitor::new(cfg.knn_every, cap, cfg.knn_eval, cfg.knn_k, cfg.knn_t, d, classes), eval))
    } else {
        None
    };
    let mut monitor_secs = 0.0f64;
    let run_start = Instant::now();
    // This rank's share of each global batch: its slice of the one global permutation.
    let n = distributed::local_batch(cfg.batch_size)?;
    let mut loader = TwoViewLoader::new(&set, aug.clone(), n, cfg.seed).shard(world.rank(), world.world());
    let full_epoch_steps = loader.steps();
    let steps = cfg.steps_per_epoch(full_epoch_steps);
    let mut bucket = Vec::new();
    let mut x = vec![0.0f32; 2 * n * loader.image_len()];
    let peak = cfg.peak_lr();
    let end_epoch = opts.stop_after_epochs.map_or(cfg.epochs, |k| (start_epoch + k).min(cfg.epochs));
    // A checkpoint written within an epoch resumes at its next step.
    let first_step = move |epoch: usize| if epoch == start_epoch { start_iter.min(steps) } else { 0 };

    // Batches prepared ahead on extra threads, or (0 workers) on the compute pool between steps.
    let prefetch = if cfg.loader_workers > 0 {
        let schedule: Vec<(usize, usize)> =
            (start_epoch..end_epoch).flat_map(|e| (first_step(e)..steps).map(move |i| (e, i))).collect();
        Some(crate::data::prefetch::Prefetcher::start(
            set.clone(),
            aug,
            n,
            cfg.seed,
            (world.rank(), world.world()),
            cfg.loader_workers,
            cfg.loader_depth,
            schedule,
        )?)
    } else {
        None
    };
    let show = !opts.quiet && rank0;
    let tty = std::io::stderr().is_terminal();
    if show {
        let nparams = model.base.num_params() + model.predictor.num_params();
        let ranks = if world.world() > 1 {
            format!(" ({n} on each of {}: {})", world.world(), world.describe())
        } else {
            String::new()
        };
        eprintln!(
            "pretrain: {} on {} ({} images, {}x{}x{}), {} params, batch {}{ranks}, {} steps/epoch, epochs {}..{}, {} threads -> {}",
            cfg.arch, cfg.dataset, set.len(), set.c, set.h, set.w, nparams, cfg.batch_size, steps, start_epoch, end_epoch, crate::engine::threads(), cfg.out_dir.display()
        );
    }
    if show && start_epoch >= cfg.epochs {
        eprintln!(
            "pretrain: {} already holds all {} epochs of its run: nothing to train. Score it with `mocov3 knn \
             --checkpoint {}` or `mocov3 lincls`; a longer schedule is a new run (another --out: the lr and \
             momentum schedules depend on the epoch count)",
            ckpt.display(),
            cfg.epochs,
            ckpt.display()
        );
    }
    let mut losses = Vec::new();
    let mut last_knn: Option<f64> = None;
    let mut watch = super::instability::Watch::new(cfg.spike_threshold, cfg.spike_window, cfg.dip_threshold);
    let mut last_save = Instant::now();
    for epoch in start_epoch..end_epoch {
        let bar = epoch_bar(show && tty, steps, epoch, cfg.epochs);
        bar.set_position(first_step(epoch) as u64);
        let mut rate = 0.0f64;
        for i in first_step(epoch)..steps {
            let t0 = Instant::now();
            let e = epoch as f64 + i as f64 / steps as f64;
            let lr = schedule::learning_rate(peak, e, cfg.warmup_epochs, cfg.epochs as f64);
            let m = schedule::momentum(cfg.moco_m, e, cfg.epochs as f64, cfg.moco_m_cos);
            let ahead = match &prefetch {
                Some(p) => Some(p.next()?),
                None => {
                    loader.fill(epoch, i, &mut x)?;
                    None
                }
            };
            let (xs, ids) = match &ahead {
                Some(b) => (&b.x[..], &b.ids[..]),
                None => (&x[..], loader.ids(i)),
            };
            // The loss of the global batch (the mean of the ranks' losses).
            let loss = distributed::mean_over_ranks(model.forward_backward(xs, n, m));
            if cfg.knn_every > 0 {
                // The step's own features of the first views (of the global batch) feed the queue.
                let (f, ids) = distributed::gather_batch(model.features(n), ids);
                if let Some((mon, _)) = &mut monitor {
                    mon.push(&f, ids.iter().map(|&id| set.labels[id]));
                }
            }
            if let (Some(p), Some(b)) = (&prefetch, ahead) {
                p.give_back(b.x);
            }
            if !loss.is_finite() {
                bar.abandon();
                return Err(diverged(loss, step, epoch, i, &ckpt));
            }
            distributed::average_grads(&mut model.trainable_params(), &mut bucket);
            let layers = model.base.backbone.layer_grad_norms();
            let [gp, g0, gl] = model.base.backbone.part_grad_norms(&layers);
            let mut events = watch.grads(step + 1, &layers);
            opt.update(&mut model.trainable_params(), lr);
            step += 1;
            let mut knn_top1 = None;
            if let Some((mon, eval)) = &mut monitor {
                if mon.due(step) {
                    let t = Instant::now();
                    knn_top1 = Some(mon.evaluate(&mut model.base.backbone, eval, &loader.aug, 2 * n)?);
                    monitor_secs += t.elapsed().as_secs_f64();
                }
            }
            losses.push(loss);
            let dt = t0.elapsed().as_secs_f64();
            let r = cfg.batch_size as f64 / dt;
            rate = if i == 0 { r } else { 0.9 * rate + 0.1 * r };
            if let Some(v) = knn_top1 {
                last_knn = Some(v);
                events.extend(watch.knn(step, v));
            }
            let knn = last_knn.map(|v| format!(" knn {v:.1}%")).unwrap_or_default();
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e} m {m:.4} {rate:.1} img/s{knn}"));
            bar.inc(1);
            if i % cfg.log_every.max(1) == 0 || i + 1 == steps || knn_top1.is_some() {
                let metrics = StepMetrics {
                    step,
                    epoch: e,
                    loss,
                    lr,
                    m,
                    grad_norm_patch: gp,
                    grad_norm_first_block: g0,
                    grad_norm_last_block: gl,
                    img_per_s: r,
                    knn_top1,
                    grad_norms: layers,
                };
                if let Some((log, tb)) = &mut sinks {
                    log_step(log, tb, &metrics)?;
                }
                if show && !tty {
                    let knn = knn_top1.map(|v| format!(" knn {v:.2}%")).unwrap_or_default();
                    eprintln!(
                        "epoch {} step {}/{} loss {loss:.4} lr {lr:.3e} m {m:.5} {rate:.1} img/s{knn}",
                        epoch + 1,
                        i + 1,
                        steps
                    );
                }
            }
            if let Some((log, tb)) = &mut sinks {
                log_events(log, tb, &events, show, &bar)?;
            }
            let minutes = last_save.elapsed().as_secs_f64() / 60.0;
            let by_steps = cfg.checkpoint_every_steps > 0 && step.is_multiple_of(cfg.checkpoint_every_steps as u64);
            let by_time = cfg.checkpoint_every_minutes > 0.0 && minutes >= cfg.checkpoint_every_minutes;
            if i + 1 < steps && (by_steps || by_time) {
                let state =
                    TrainState { format: FORMAT, epoch, iter: i + 1, step, in_chans: set.c, config: cfg.clone() };
                if rank0 {
                    save_checkpoint(&ckpt, &mut model, &opt, &state)?;
                }
                last_save = Instant::now();
            }
        }
        bar.finish();
        let state =
            TrainState { format: FORMAT, epoch: epoch + 1, iter: 0, step, in_chans: set.c, config: cfg.clone() };
        if rank0 {
            save_checkpoint(&ckpt, &mut model, &opt, &state)?;
        }
        last_save = Instant::now();
        if world.world() > 1 {
            // The ranks hold the same bits, or the run stops here.
            let f = distributed::weights_fingerprint(&mut model, &mut opt);
            distributed::same_on_every_rank(&format!("their weights after epoch {}", epoch + 1), f)?;
        }
        if show {
            let mean = epoch_mean(&losses, steps - first_step(epoch));
            epoch_done(epoch, start_epoch, end_epoch, cfg.epochs, mean, run_start.elapsed().as_secs_f64(), &ckpt);
        }
    }
    let total_secs = run_start.elapsed().as_secs_f64();
    let skipped = set.skipped.load(std::sync::atomic::Ordering::Relaxed);
    if skipped > 0 && show {
        eprintln!("skipped {skipped} image reads that did not decode (--skip-corrupt)");
    }
    if show && monitor.is_some() && total_secs > 0.0 {
        eprintln!(
            "kNN monitor: {monitor_secs:.1} s of {total_secs:.1} s ({:.1}% of the run)",
            100.0 * monitor_secs / total_secs
        );
    }
    Ok(RunSummary {
        losses,
        checkpoint: ckpt,
        next_epoch: end_epoch,
        last_knn,
        monitor_secs,
        total_secs,
        full_epoch_steps,
    })
}

/// Set-up: the configuration (a checkpoint's when resuming, see [`super::config::resumed`]), the
/// training set, and the model, optimiser, next epoch and step, from the checkpoint or fresh.
#[allow(clippy::type_complexity)]
fn start(
    cfg: PretrainConfig,
    opts: &RunOptions,
) -> Result<(PretrainConfig, std::sync::Arc<crate::data::ImageSet>, MoCo, Optimizer, (usize, usize), u64)> {
    let (cfg, resumed) = match &opts.resume {
        Some(p) => {
            let (model, opt, state) = checkpoint::load(p)?;
            let c = super::config::resumed(&state.config, &cfg, p)?;
            (c, Some((model, opt, state)))
        }
        None => (cfg, None),
    };
    crate::engine::init_threads(cfg.threads);
    let mut set = crate::data::load(&cfg.dataset, cfg.data_dir.as_deref(), true)?;
    set.skip_corrupt = cfg.skip_corrupt;
    let set = std::sync::Arc::new(set);
    if set.len() < cfg.batch_size {
        bail!("dataset '{}' has {} images, fewer than one batch of {}", cfg.dataset, set.len(), cfg.batch_size);
    }
    // Refuse what cannot fit before allocating it.
    super::memory::check(&cfg, &cfg.model(set.c)?, cfg.batch_size / comm::world().world())?;
    let (model, opt, start_at, step) = match resumed {
        Some((model, opt, state)) => {
            if state.in_chans != set.c {
                bail!(
                    "checkpoint was trained on {}-channel images, dataset '{}' has {}",
                    state.in_chans,
                    cfg.dataset,
                    set.c
                );
            }
            (model, opt, (state.epoch, state.iter), state.step)
        }
        None => {
            let mcfg = cfg.model(set.c)?;
            let opt = Optimizer::new(cfg.optimizer, cfg.weight_decay, cfg.exclude_norm_bias_decay);
            (MoCo::new(&mcfg, cfg.seed), opt, (0, 0), 0)
        }
    };
    let (mut model, mut opt) = (model, opt);
    if comm::world().world() > 1 {
        // Same build and settings everywhere (how each rank runs, its threads and data folder,
        // may differ); then rank 0's weights, and the same weights and optimiser state on all.
        let mut same = cfg.clone();
        (same.threads, same.data_dir, same.loader_workers, same.loader_depth) = (0, None, 0, 0);
        let text = toml::to_string(&same)?;
        distributed::same_on_every_rank("build or settings", distributed::config_fingerprint(&text))?;
        distributed::same_on_every_rank("the step they start at", step)?;
        distributed::broadcast_model(&mut model);
        distributed::same_on_every_rank("optimiser state", distributed::weights_fingerprint(&mut model, &mut opt))?;
    }
    Ok((cfg, set, model, opt, start_at, step))
}

/// The run directory's config.toml, metrics log and TensorBoard writer (rank 0's to keep).
fn open_sinks(cfg: &PretrainConfig, step: u64) -> Result<(MetricsLog, EventWriter)> {
    std::fs::create_dir_all(&cfg.out_dir).with_context(|| format!("cannot create {}", cfg.out_dir.display()))?;
    std::fs::write(cfg.out_dir.join("config.toml"), toml::to_string(cfg)?)?;
    let metrics = cfg.out_dir.join("metrics.jsonl");
    let log = if step == 0 { MetricsLog::open(&metrics, true)? } else { MetricsLog::resume(&metrics, step)? };
    let mut tb = EventWriter::create(&cfg.out_dir)?;
    if step > 0 {
        // TensorBoard drops what earlier event files logged from this step on.
        tb.restart_at(step + 1)?;
    }
    Ok((log, tb))
}

/// Write the checkpoint (atomically, see [`checkpoint::save`]); with `keep_checkpoints` = K > 0,
/// also keep it as `checkpoints/step-N.safetensors` (a hard link: no copy) and delete all but the
/// K newest of those.
fn save_checkpoint(ckpt: &Path, model: &mut MoCo, opt: &Optimizer, state: &TrainState) -> Result<()> {
    checkpoint::save(ckpt, model, opt, state)?;
    let keep = state.config.keep_checkpoints;
    if keep == 0 {
        return Ok(());
    }
    let dir = ckpt.with_file_name("checkpoints");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let kept = dir.join(format!("step-{:09}.safetensors", state.step));
    let _ = std::fs::remove_file(&kept);
    if std::fs::hard_link(ckpt, &kept).is_err() {
        std::fs::copy(ckpt, &kept).with_context(|| format!("cannot copy {} to {}", ckpt.display(), kept.display()))?;
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors"))
        })
        .collect();
    all.sort();
    for old in &all[..all.len().saturating_sub(keep)] {
        std::fs::remove_file(old).with_context(|| format!("cannot remove the old checkpoint {}", old.display()))?;
    }
    Ok(())
}

/// The progress bar of one epoch (hidden when not on a terminal or quiet).
fn epoch_bar(visible: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(steps as u64);
    if let Ok(style) = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})") {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_prefix(format!("{}/{epochs}", epoch + 1));
    b
}

/// The error of a non-finite loss: where it happened, and that the last good checkpoint stays.
fn diverged(loss: f32, step: u64, epoch: usize, i: usize, ckpt: &Path) -> anyhow::Error {
    let kept = if ckpt.exists() {
        format!("the last good checkpoint is kept at {}", ckpt.display())
    } else {
        "no checkpoint was written yet".into()
    };
    anyhow::anyhow!(
        "loss became {loss} at step {step} (epoch {epoch}, iteration {i}): training diverged; {kept}. \
         Lower the learning rate (--lr) or lengthen the warm-up, then resume or restart."
    )
}

/// One step's metrics into `metrics.jsonl` and the TensorBoard events.
fn log_step(log: &mut MetricsLog, tb: &mut EventWriter, s: &StepMetrics) -> Result<()> {
    log.write(s)?;
    let mut values = vec![
        ("train/loss", s.loss),
        ("train/lr", s.lr as f32),
        ("train/momentum", s.m as f32),
        ("grad_norm/patch_embed", s.grad_norm_patch as f32),
        ("grad_norm/first_block", s.grad_norm_first_block as f32),
        ("grad_norm/last_block", s.grad_norm_last_block as f32),
        ("train/img_per_s", s.img_per_s as f32),
    ];
    if let Some(v) = s.knn_top1 {
        values.push(("knn/top1", v as f32));
    }
    let layers: Vec<(String, f32)> =
        s.grad_norms.iter().map(|(n, v)| (format!("grad_norm_layer/{n}"), *v as f32)).collect();
    values.extend(layers.iter().map(|(n, v)| (n.as_str(), *v)));
    tb.scalars(s.step, &values)
}

/// Instability events (see [`super::instability`]) into the log, TensorBoard (`events/<kind>`:
/// the spike's ratio, the dip's depth or accuracy, the lag) and the console.
fn log_events(
    log: &mut MetricsLog,
    tb: &mut EventWriter,
    events: &[serde_json::Value],
    show: bool,
    bar: &ProgressBar,
) -> Result<()> {
    for e in events {
        log.write(e)?;
        let kind = e["event"].as_str().unwrap_or("event");
        let v = ["ratio", "depth", "lag", "acc"].iter().find_map(|k| e[*k].as_f64()).unwrap_or(0.0);
        tb.scalars(e["step"].as_u64().unwrap_or(0), &[(&format!("events/{kind}"), v as f32)])?;
        if show {
            let line = super::instability::describe(e);
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
    }
    Ok(())
}

/// Mean loss of the last `steps` steps.
fn epoch_mean(losses: &[f32], steps: usize) -> f64 {
    let k = losses.len().saturating_sub(steps);
    losses[k..].iter().map(|&v| v as f64).sum::<f64>() / (losses.len() - k).max(1) as f64
}

/// The console line after an epoch: mean loss, time spent, and the time left. The estimate
/// extrapolates this invocation's epochs (not those before a resume) to where it stops: the last
/// epoch, or earlier with --stop-after-epochs.
fn epoch_done(epoch: usize, start: usize, end: usize, epochs: usize, mean: f64, elapsed: f64, ckpt: &Path) {
    let done = epoch + 1 - start;
    let todo = end - epoch - 1;
    let left =
        if todo > 0 { format!(", about {} left", clock(elapsed / done as f64 * todo as f64)) } else { String::new() };
    eprintln!(
        "epoch {}/{epochs} done: mean loss {mean:.4}; {} elapsed{left}; checkpoint {}",
        epoch + 1,
        clock(elapsed),
        ckpt.display()
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_picks_the_unit() {
        assert_eq!(super::clock(42.4), "42 s");
        assert_eq!(super::clock(750.0), "12.5 min");
        assert_eq!(super::clock(7500.0), "2 h 05 min");
    }
}
