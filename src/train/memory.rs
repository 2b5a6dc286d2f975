//! The peak memory a pre-training run needs, estimated before anything is allocated, so that a
//! configuration that cannot fit is refused up front ("would need about N GB") instead of being
//! killed by the kernel mid-run.
//!
//! The estimate is a lower bound from measured footprints (BENCHMARKS.md): a ViT step keeps
//! about 40 f32 values per token, width and block for each image of the batch (both views: the
//! base encoder's saved activations and the workspaces; C1 measured 23 MiB per image), a
//! ResNet-50 step about 4 kB per input pixel and image besides its parameters (3.0 GB in all at
//! batch 8 and 224 px), a ResNet-18 about 1.7 kB, and the CIFAR stem, which skips the stride-4
//! entry, sixteen times as much (the `fashion-mnist-resnet18` preset peaked at 6.5 GB at batch
//! 256). Parameters count five times (weights, gradients, two AdamW moments, the momentum encoder) plus a copy while a
//! checkpoint is written.

use super::config::PretrainConfig;
use crate::moco::MocoConfig;
use anyhow::{bail, Result};

/// Estimated peak bytes of training `m` with `batch` images per process.
pub fn estimate_bytes(cfg: &PretrainConfig, m: &MocoConfig, batch: usize) -> u128 {
    let b = batch as u128;
    let params = m.min_floats() / 2 * 3 + 1;
    let acts = match m.backbone.vit() {
        Some(v) => {
            let tokens = ((v.img / v.patch.max(1)).pow(2) + 1) as u128;
            b * 40 * 4 * tokens * v.dim as u128 * v.depth as u128
        }
        None => {
            let px = (cfg.img_size as u128).pow(2);
            let per_px: u128 = if cfg.arch == "resnet50" { 4_000 } else { 1_700 };
            let stem = if cfg.cifar_stem { 16 } else { 1 };
            b * px * per_px * stem
        }
    };
    let heads = b * 2 * 12 * m.mlp_dim as u128 * 4;
    params * 4 * 7 + acts + heads
}

/// Memory this process could still get: MemAvailable plus free swap (Linux); None elsewhere.
pub fn available_bytes() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = |key: &str| -> Option<u128> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u128>().ok()
    };
    Some((kb("MemAvailable:")? + kb("SwapFree:").unwrap_or(0)) * 1024)
}

fn gb(b: u128) -> f64 {
    b as f64 / 1e9
}

/// An error when the estimate exceeds what the machine has, naming the keys that size it.
pub fn check(cfg: &PretrainConfig, m: &MocoConfig, batch: usize) -> Result<()> {
    let need = estimate_bytes(cfg, m, batch);
    if let Some(have) = available_bytes() {
        if need > have {
            bail!(
                "this configuration would need about {:.1} GB of memory ({batch} images per process of {} at {} px), \
                 and this machine has {:.1} GB available: lower batch_size (more processes share a global batch), \
                 img_size or the model's size",
                gb(need),
                cfg.arch,
                cfg.img_size,
                gb(have)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_tracks_the_measured_footprints_and_refuses_the_absurd() {
        let c = crate::train::config::preset("fashion-mnist").unwrap();
        let m = c.model(1).unwrap();
        // The fashion-mnist preset peaked at 0.96 GB (batch 256): the estimate is below that.
        let e = estimate_bytes(&c, &m, 256);
        assert!(e > 50_000_000 && e < 960_000_000, "{e}");
        // fashion-mnist-resnet18 peaked at 6.5 GB (batch 256), a ResNet-50 step at 3.0 GB
        // (`bench step --arch resnet50`: batch 8, 224 px).
        let r = crate::train::config::preset("fashion-mnist-resnet18").unwrap();
        let e = estimate_bytes(&r, &r.model(1).unwrap(), 256);
        assert!(e > 4_000_000_000 && e < 6_500_000_000, "{e}");
        let mut r50 = crate::train::config::preset("resnet50").unwrap();
        r50.img_size = 224;
        let e = estimate_bytes(&r50, &r50.model(1).unwrap(), 8);
        assert!(e > 2_000_000_000 && e < 3_000_000_000, "{e}");
        let mut big = crate::train::config::preset("vit_base").unwrap();
        big.batch_size = 4096;
        let m = big.model(3).unwrap();
        assert!(estimate_bytes(&big, &m, 4096) > 1_000_000_000_000, "ViT-B at batch 4096 needs terabytes");
        let e = format!("{:#}", check(&big, &m, 4096).unwrap_err());
        assert!(e.contains("would need about") && e.contains("batch_size"), "{e}");
    }
}
