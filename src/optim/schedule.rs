//! Per-iteration schedules of the official `main_moco.py` (`epoch` is fractional:
//! `epoch + i / iters_per_epoch`).

use std::f64::consts::PI;

/// Linear warm-up from 0 to `lr` over `warmup` epochs, then half-cosine to exactly 0.
pub fn learning_rate(lr: f64, epoch: f64, warmup: f64, epochs: f64) -> f64 {
    if epoch < warmup {
        lr * epoch / warmup
    } else {
        lr * 0.5 * (1.0 + (PI * (epoch - warmup) / (epochs - warmup)).cos())
    }
}

/// m from m0 up to 1 over the whole run on a half cosine (when `cosine`), else constant.
pub fn momentum(m0: f64, epoch: f64, epochs: f64, cosine: bool) -> f64 {
    if cosine {
        1.0 - 0.5 * (1.0 + (PI * epoch / epochs).cos()) * (1.0 - m0)
    } else {
        m0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(learning_rate(1.0, 0.0, 10.0, 100.0), 0.0);
        assert!((learning_rate(1.0, 5.0, 10.0, 100.0) - 0.5).abs() < 1e-12);
        assert!((learning_rate(1.0, 10.0, 10.0, 100.0) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 55.0, 10.0, 100.0) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, 100.0, 10.0, 100.0).abs() < 1e-12);
        assert!((momentum(0.99, 0.0, 100.0, true) - 0.99).abs() < 1e-12);
        assert!((momentum(0.99, 50.0, 100.0, true) - 0.995).abs() < 1e-12);
        assert!((momentum(0.99, 100.0, 100.0, true) - 1.0).abs() < 1e-12);
        assert_eq!(momentum(0.99, 50.0, 100.0, false), 0.99);
    }
}
