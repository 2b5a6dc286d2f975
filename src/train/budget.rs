//! Time budgets: a run that must end within a wall-clock limit fixes its number of epochs (and
//! so its cosine schedules) from the step rate measured on this machine before it starts.

use super::config::PretrainConfig;
use super::pretrain::{self, RunOptions};
use anyhow::{bail, Context, Result};

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

/// Seconds one training step of `cfg` takes here, data loading and logging included: two short
/// runs in a scratch directory (2 and 12 steps, no kNN monitor), their difference over the 10
/// extra steps, so set-up and the checkpoint write cancel out.
pub fn seconds_per_step(cfg: &PretrainConfig) -> Result<f64> {
    let dir = cfg.out_dir.join(".calibration");
    let time = |steps: usize| -> Result<f64> {
        let mut c = cfg.clone();
        c.out_dir = dir.clone();
        c.epochs = 1;
        c.max_steps_per_epoch = Some(steps);
        c.knn_every = 0;
        let opts = RunOptions { resume: None, stop_after_epochs: None, quiet: true };
        Ok(pretrain::run(c, &opts)?.total_secs)
    };
    let short = time(2)?;
    let long = time(12)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(((long - short) / 10.0).max(1e-6))
}

/// The whole epochs that fit `budget` seconds when `spent` are gone already, an epoch is
/// `steps_per_epoch` steps of `step_secs` (times `overhead` for the monitor and checkpoints), and
/// `reserve` seconds must be left for what follows the training. An error when not even one
/// epoch fits.
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
    fn the_epochs_that_fit_leave_the_reserve() {
        // 100 steps of 0.5 s per epoch (50 s, 55 s with 10% overhead); 3600 s, 100 spent, 300 kept.
        assert_eq!(epochs_within(3600.0, 100.0, 0.5, 100, 1.1, 300.0).unwrap(), 58);
        let e = epochs_within(600.0, 100.0, 5.0, 100, 1.0, 300.0).unwrap_err().to_string();
        assert!(e.contains("larger --budget"), "{e}");
    }
}
