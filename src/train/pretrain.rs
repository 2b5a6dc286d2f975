//! The pre-training loop: data → MoCo step → AdamW → schedules, with metrics, progress, atomic
//! per-epoch checkpoints and bit-exact resume.

use super::actions::{Control, Guard};
use super::checkpoint::{self, Snapshot, TrainState, FORMAT};
use super::config::PretrainConfig;
use super::distributed;
use super::metrics::StepMetrics;
use super::runlog::{self, diverged, epoch_bar, log_events, log_step, open_sinks, save_checkpoint};
use crate::data::augment::Augment;
use crate::data::loader::TwoViewLoader;
use crate::engine::comm;
use crate::eval::monitor::KnnMonitor;
use crate::moco::MoCo;
use crate::nn::Module;
use crate::optim::{schedule, Optimizer};
use anyhow::{bail, Result};
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
    let (cfg, set, mut model, mut opt, (start_epoch, start_iter), mut step, (control, snap)) = start(cfg, opts)?;
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
    let fresh = super::instability::Watch::new(cfg.spike_threshold, cfg.spike_window, cfg.dip_threshold);
    let mut guard = Guard::new(cfg.on_spike, cfg.snapshot_every, fresh, control, snap);
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
            guard.inject(&mut model, step + 1, &cfg.inject_spike);
            let layers = model.base.backbone.layer_grad_norms();
            let [gp, g0, gl] = model.base.backbone.part_grad_norms(&layers);
            // Spikes, and the action one triggers (--on-spike), before the update.
            let decision = guard.after_backward(&mut model, &mut opt, step + 1, &layers)?;
            let mut events = decision.events;
            let lr = lr * guard.control.lr_scale;
            if decision.update {
                opt.update(&mut model.trainable_params(), lr);
            }
            step += 1;
            guard.after_step(&mut model, &mut opt, step);
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
                events.extend(guard.watch.knn(step, v));
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
                let control = guard.state();
                let state = TrainState {
                    format: FORMAT,
                    epoch,
                    iter: i + 1,
                    step,
                    in_chans: set.c,
                    config: cfg.clone(),
                    control,
                };
                if rank0 {
                    save_checkpoint(&ckpt, &mut model, &opt, &state, guard.snapshot.as_ref())?;
                }
                last_save = Instant::now();
            }
        }
        bar.finish();
        let control = guard.state();
        let state = TrainState {
            format: FORMAT,
            epoch: epoch + 1,
            iter: 0,
            step,
            in_chans: set.c,
            config: cfg.clone(),
            control,
        };
        if rank0 {
            save_checkpoint(&ckpt, &mut model, &opt, &state, guard.snapshot.as_ref())?;
        }
        last_save = Instant::now();
        if world.world() > 1 {
            // The ranks hold the same bits, or the run stops here.
            let f = distributed::weights_fingerprint(&mut model, &mut opt);
            distributed::same_on_every_rank(&format!("their weights after epoch {}", epoch + 1), f)?;
        }
        if show {
            let mean = runlog::epoch_mean(&losses, steps - first_step(epoch));
            runlog::epoch_done(
                epoch,
                start_epoch,
                end_epoch,
                cfg.epochs,
                mean,
                run_start.elapsed().as_secs_f64(),
                &ckpt,
            );
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
/// training set, and the model, optimiser, next epoch and step, and the instability guard's
/// state, from the checkpoint or fresh.
#[allow(clippy::type_complexity)]
fn start(
    cfg: PretrainConfig,
    opts: &RunOptions,
) -> Result<(
    PretrainConfig,
    std::sync::Arc<crate::data::ImageSet>,
    MoCo,
    Optimizer,
    (usize, usize),
    u64,
    (Control, Option<Snapshot>),
)> {
    let (cfg, resumed) = match &opts.resume {
        Some(p) => {
            let (model, opt, state, snap) = checkpoint::load_run(p)?;
            let c = super::config::resumed(&state.config, &cfg, p)?;
            (c, Some((model, opt, state, snap)))
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
    let (model, opt, start_at, step, guard) = match resumed {
        Some((model, opt, state, snap)) => {
            if state.in_chans != set.c {
                bail!(
                    "checkpoint was trained on {}-channel images, dataset '{}' has {}",
                    state.in_chans,
                    cfg.dataset,
                    set.c
                );
            }
            (model, opt, (state.epoch, state.iter), state.step, (state.control, snap))
        }
        None => {
            let mcfg = cfg.model(set.c)?;
            let opt = Optimizer::new(cfg.optimizer, cfg.weight_decay, cfg.exclude_norm_bias_decay);
            (MoCo::new(&mcfg, cfg.seed), opt, (0, 0), 0, (Control::default(), None))
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
    Ok((cfg, set, model, opt, start_at, step, guard))
}
