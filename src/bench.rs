//! `mocov3 bench step`: the MoCo v3 training step of `bench-step` (C1: a tiny ViT on 32 px
//! images, C2: ViT-S/16 at 224 px), on random images, fp32, timed after warm-up. One fixed batch
//! is used for every step, so the loss must fall.

use crate::engine::rng::Rng;
use crate::moco::{MoCo, MocoConfig};
use crate::models::vit::VitConfig;
use crate::nn::posembed::PosEmbedKind;
use crate::optim::AdamW;
use anyhow::{bail, Result};
use std::time::Instant;

pub struct BenchConfig {
    pub name: &'static str,
    pub model: MocoConfig,
    pub batch: usize,
}

pub fn config(name: &str) -> Result<BenchConfig> {
    let (name, img, patch, dim, heads, hidden, batch) = match name.to_ascii_uppercase().as_str() {
        "C1" => ("C1", 32, 4, 192, 3, 1024, 64),
        "C2" => ("C2", 224, 16, 384, 12, 4096, 8),
        other => bail!("unknown bench config '{other}': expected C1 or C2"),
    };
    let vit = VitConfig {
        img,
        patch,
        in_chans: 3,
        dim,
        depth: 12,
        heads,
        mlp_ratio: 4,
        pos: PosEmbedKind::Sincos,
        stop_grad_conv1: false,
    };
    Ok(BenchConfig {
        name,
        model: MocoConfig {
            vit,
            mlp_dim: hidden,
            out_dim: 256,
            t: 0.2,
        },
        batch,
    })
}

pub struct BenchResult {
    pub img_per_s: f64,
    pub step_ms_median: f64,
    pub loss_first: f32,
    pub loss_last: f32,
}

/// Peak resident memory of this process so far, in MiB (Linux), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(
    cfg: &BenchConfig,
    warmup: usize,
    timed: usize,
    mut progress: impl FnMut(usize, f64, f32),
) -> BenchResult {
    let n = cfg.batch;
    let v = &cfg.model.vit;
    let mut rng = Rng::new(0);
    let x: Vec<f32> = (0..2 * n * v.in_chans * v.img * v.img)
        .map(|_| rng.uniform_f64() as f32)
        .collect();
    let mut model = MoCo::new(&cfg.model, 0);
    let mut opt = AdamW::new(0.1);
    let lr = 1.5e-4 * n as f64 / 256.0;
    let mut times = Vec::new();
    let (mut first, mut last) = (f32::NAN, f32::NAN);
    for i in 0..warmup + timed {
        let t0 = Instant::now();
        let loss = model.forward_backward(&x, n, 0.99);
        opt.update(&mut model.trainable_params(), lr);
        let dt = t0.elapsed().as_secs_f64();
        if i == 0 {
            first = loss;
        }
        last = loss;
        if i >= warmup {
            times.push(dt);
        }
        progress(i, dt, loss);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = if times.is_empty() {
        f64::NAN
    } else {
        times[times.len() / 2]
    };
    BenchResult {
        img_per_s: n as f64 / med,
        step_ms_median: med * 1e3,
        loss_first: first,
        loss_last: last,
    }
}
