//! Time budgets: a run that must end within a wall-clock limit fixes its number of epochs (and
//! so its cosine schedules) from the step rate measured on this machine before it starts.

use super::config::PretrainConfig;
use super::pretrain::{self, RunOptions};
use anyhow::{bail, Context, Result};
use std::time::Instant;

/// A duration such as `60m`, `1h`, `1h30m`, `90s` or `45` (minutes), in seconds.
pub fn parse_duration(s: &str) -> Result<f64> {
    let t = s.trim();
    if let Ok(m) = t.parse::<f64>() {
        return check(m * 60.0, s);
    }
    let (mut total, mut num) = (0.0f64, String::new());
    for ch in t.chars() {
        match ch {
            '0'..='9' | '.' => num.push(ch),
            'h' | 'm' | 's' if !num.is_empty() => {
                let v: f64 = num.parse().with_context(|| format!("time budget '{s}'"))?;
                total += v * match ch {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => bail!("time budget '{s}': expected e.g. 60m, 1h, 1h30m or 90s"),
        }
    }
    if !num.is_empty() {
        bail!("time budget '{s}': a number without a unit at the end (h, m or s)");
    }
    check(total, s)
}

fn check(secs: f64, s: &str) -> Result<f64> {
    if !(secs.is_finite() && secs > 0.0) {
        bail!("time budget '{s}' must be positive");
    }
    Ok(secs)
}

/// What a step costs here: seconds per step, data loading, logging and the kNN monitor's share
/// included, and the steps of a full epoch.
pub struct StepRate {
    pub secs: f64,
    pub steps_per_epoch: usize,
}

/// Measures [`StepRate`] for `cfg` by two short runs in a scratch directory: 2 steps, and 2 +
/// `knn_every` steps (12 when the monitor is off), whose difference holds exactly one monitor
/// evaluation when it is on, so the monitor's share per step is measured rather than guessed.
/// Set-up and the checkpoint write cancel out in the difference.
pub fn measure_step(cfg: &PretrainConfig) -> Result<StepRate> {
    let dir = cfg.out_dir.join(".calibration");
    let extra = if cfg.knn_every > 0 { cfg.knn_every } else { 10 };
    let time = |steps: usize| -> Result<(f64, usize)> {
        let mut c = cfg.clone();
        c.out_dir = dir.clone();
        c.epochs = 1;
        c.max_steps_per_epoch = Some(steps);
        let opts = RunOptions { resume: None, stop_after_epochs: None, quiet: true };
        let r = pretrain::run(c, &opts)?;
        Ok((r.total_secs, r.full_epoch_steps))
    };
    let (short, _) = time(2)?;
    let (long, steps_per_epoch) = time(2 + extra)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(StepRate { secs: per_step(short, long, 2, 2 + extra), steps_per_epoch })
}

/// Seconds per step from runs of `a` and `b` steps that took `short` and `long` seconds: their
/// difference over the extra steps. On steps much shorter than the runs' set-up, timing noise
/// can make that zero or negative; the long run's average per step (set-up included) is then
/// used, an upper bound, so a budget is never planned from a step that costs nothing.
fn per_step(short: f64, long: f64, a: usize, b: usize) -> f64 {
    let diff = (long - short) / (b - a) as f64;
    let upper = long / b as f64;
    (if diff > 0.05 * upper { diff } else { upper }).max(1e-6)
}

/// Room for a machine that slows down during the run (a shared one did by more than 10% in an
/// hour) and for the checkpoint writes: the measured step time is planned 5% longer.
pub const MARGIN: f64 = 1.05;

/// Fixes `cfg.epochs` (and so its cosine schedules) so that its training ends within `limit`
/// seconds of `started`, leaving the time of `reserve_steps` steps for what follows it. Returns
/// the line that tells the user what was planned.
pub fn fit_epochs(cfg: &mut PretrainConfig, limit: f64, started: Instant, reserve_steps: f64) -> Result<String> {
    let rate = measure_step(cfg)?;
    let (step, steps) = (rate.secs, rate.steps_per_epoch);
    let per_epoch = cfg.steps_per_epoch(steps);
    let reserve = reserve_steps * step;
    cfg.epochs = epochs_within(limit, started.elapsed().as_secs_f64(), step, per_epoch, MARGIN, reserve)?;
    let kept = if reserve > 0.0 { format!(", {:.1} min kept for scoring", reserve / 60.0) } else { String::new() };
    Ok(format!(
        "{step:.3} s per step here{}, {per_epoch} steps per epoch -> {} epochs ({:.1} min of training with a {:.0}% \
         margin{kept})",
        if cfg.knn_every > 0 { " (kNN monitor included)" } else { "" },
        cfg.epochs,
        cfg.epochs as f64 * per_epoch as f64 * step * MARGIN / 60.0,
        (MARGIN - 1.0) * 100.0,
    ))
}

/// The whole epochs that fit `budget` seconds when `spent` are gone already, an epoch is
/// `steps_per_epoch` steps of `step_secs` (times `overhead`, a margin for a machine that slows
/// and for the checkpoints), and `reserve` seconds must be left for what follows the training.
/// An error when not even one epoch fits.
pub fn epochs_within(
    budget: f64,
    spent: f64,
    step_secs: f64,
    steps_per_epoch: usize,
    overhead: f64,
    reserve: f64,
) -> Result<usize> {
    let epoch = step_secs * steps_per_epoch as f64 * overhead;
    let left = budget - spent - reserve;
    let n = (left / epoch).floor();
    if n < 1.0 {
        bail!(
            "a time budget of {:.1} min leaves {:.1} min for training after {:.1} min of set-up and {:.1} min kept for \
             scoring, but one epoch takes {:.1} min here: give a larger --budget",
            budget / 60.0,
            left.max(0.0) / 60.0,
            spent / 60.0,
            reserve / 60.0,
            epoch / 60.0
        );
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("60m").unwrap(), 3600.0);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400.0);
        assert_eq!(parse_duration("90s").unwrap(), 90.0);
        assert_eq!(parse_duration("45").unwrap(), 2700.0);
        for bad in ["", "0m", "-5", "1x", "1h30", "m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_noisy_calibration_falls_back_to_the_upper_bound() {
        // 1 s of set-up, 0.5 s per step: 2 steps 2 s, 22 steps 12 s.
        assert!((per_step(2.0, 12.0, 2, 22) - 0.5).abs() < 1e-12);
        // Steps too short to time: the long run was no slower than the short one.
        assert_eq!(per_step(1.02, 1.01, 2, 22), 1.01 / 22.0);
        assert_eq!(per_step(1.0, 1.001, 2, 22), 1.001 / 22.0);
    }

    #[test]
    fn the_epochs_that_fit_leave_the_reserve() {
        // 100 steps of 0.5 s per epoch (50 s, 55 s with 10% overhead); 3600 s, 100 spent, 300 kept.
        assert_eq!(epochs_within(3600.0, 100.0, 0.5, 100, 1.1, 300.0).unwrap(), 58);
        let e = epochs_within(600.0, 100.0, 5.0, 100, 1.0, 300.0).unwrap_err().to_string();
        assert!(e.contains("larger --budget"), "{e}");
    }
}
