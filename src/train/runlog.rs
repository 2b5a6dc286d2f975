//! What a training run writes besides its weights' updates: the run directory (config.toml,
//! metrics.jsonl, TensorBoard events), checkpoints (kept as the last K too), the progress bar and
//! console lines, and instability events.

use super::checkpoint::{self, Snapshot, TrainState};
use super::config::PretrainConfig;
use super::metrics::{MetricsLog, StepMetrics};
use super::tensorboard::EventWriter;
use crate::moco::MoCo;
use crate::optim::Optimizer;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// A duration for the console: "42 s", "12.5 min", "2 h 05 min".
pub fn clock(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.0} s")
    } else if secs < 3600.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

/// The run directory's config.toml, metrics log and TensorBoard writer (rank 0's to keep).
pub fn open_sinks(cfg: &PretrainConfig, step: u64) -> Result<(MetricsLog, EventWriter)> {
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
pub fn save_checkpoint(
    ckpt: &Path,
    model: &mut MoCo,
    opt: &Optimizer,
    state: &TrainState,
    snap: Option<&Snapshot>,
) -> Result<()> {
    checkpoint::save_run(ckpt, model, opt, state, snap)?;
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
pub fn epoch_bar(visible: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
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
pub fn diverged(loss: f32, step: u64, epoch: usize, i: usize, ckpt: &Path) -> anyhow::Error {
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
pub fn log_step(log: &mut MetricsLog, tb: &mut EventWriter, s: &StepMetrics) -> Result<()> {
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
pub fn log_events(
    log: &mut MetricsLog,
    tb: &mut EventWriter,
    events: &[serde_json::Value],
    show: bool,
    bar: &ProgressBar,
) -> Result<()> {
    for e in events {
        log.write(e)?;
        let kind = e["event"].as_str().unwrap_or("event");
        let v =
            ["ratio", "depth", "lag", "acc", "lr_scale", "factor"].iter().find_map(|k| e[*k].as_f64()).unwrap_or(0.0);
        tb.scalars(e["step"].as_u64().unwrap_or(0), &[(&format!("events/{kind}"), v as f32)])?;
        if show {
            let line = if kind == "action" { super::actions::describe(e) } else { super::instability::describe(e) };
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
pub fn epoch_mean(losses: &[f32], steps: usize) -> f64 {
    let k = losses.len().saturating_sub(steps);
    losses[k..].iter().map(|&v| v as f64).sum::<f64>() / (losses.len() - k).max(1) as f64
}

/// The console line after an epoch: mean loss, time spent, and the time left. The estimate
/// extrapolates this invocation's epochs (not those before a resume) to where it stops: the last
/// epoch, or earlier with --stop-after-epochs.
pub fn epoch_done(epoch: usize, start: usize, end: usize, epochs: usize, mean: f64, elapsed: f64, ckpt: &Path) {
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
