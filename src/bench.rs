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

/// A bench configuration with the batch, image size or patch size replaced.
pub fn with_overrides(
    mut c: BenchConfig,
    batch: Option<usize>,
    image: Option<usize>,
    patch: Option<usize>,
) -> Result<BenchConfig> {
    if let Some(b) = batch {
        c.batch = b;
    }
    if let Some(i) = image {
        c.model.vit.img = i;
    }
    if let Some(p) = patch {
        c.model.vit.patch = p;
    }
    c.model.vit.validate().map_err(|e| anyhow::anyhow!("invalid bench configuration: {e}"))?;
    if c.batch < 2 {
        bail!("batch must be at least 2");
    }
    Ok(c)
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
    Ok(BenchConfig { name, model: MocoConfig { vit, mlp_dim: hidden, out_dim: 256, t: 0.2 }, batch })
}

/// Multiply-add FLOPs (2 per MAC) of one training step as the official code computes it (every
/// token through every block): the base encoder and predictor forward and backward (backward =
/// 2 × forward, the patch projection's input gradient excluded) and the momentum encoder forward,
/// for both views of `batch` images.
pub fn step_flops(m: &MocoConfig, batch: usize) -> f64 {
    let v = &m.vit;
    let (t, d) = (v.tokens() as f64, v.dim as f64);
    let hidden = (v.mlp_ratio * v.dim) as f64;
    let block = 2.0 * t * (3.0 * d * d + d * d + 2.0 * d * hidden) + 2.0 * 2.0 * t * t * d;
    let patch = 2.0 * (t - 1.0) * (v.in_chans * v.patch * v.patch) as f64 * d;
    let (h, o) = (m.mlp_dim as f64, m.out_dim as f64);
    let projector = 2.0 * (d * h + h * h + h * o);
    let predictor = 2.0 * (o * h + h * o);
    let backbone = v.depth as f64 * block + patch;
    let base_fwd = backbone + projector + predictor;
    let base_bwd = 2.0 * base_fwd - patch;
    let momentum_fwd = backbone + projector;
    2.0 * batch as f64 * (base_fwd + base_bwd + momentum_fwd)
}

/// GFLOP/s of an n×n×n single-precision GEMM on all threads (median of `reps`).
pub fn gemm_rate(n: usize, reps: usize) -> f64 {
    use crate::engine::gemm::{sgemm, Mat};
    let mut rng = Rng::new(1);
    let a: Vec<f32> = (0..n * n).map(|_| rng.normal()).collect();
    let b: Vec<f32> = (0..n * n).map(|_| rng.normal()).collect();
    let mut c = vec![0.0f32; n * n];
    let mut times = Vec::new();
    for _ in 0..reps + 1 {
        let t0 = Instant::now();
        sgemm(n, n, n, Mat::rows(&a, n), Mat::rows(&b, n), &mut c, n, 1.0, false, true);
        times.push(t0.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(|x, y| x.partial_cmp(y).unwrap());
    2.0 * (n as f64).powi(3) / times[times.len() / 2] / 1e9
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

pub fn run(cfg: &BenchConfig, warmup: usize, timed: usize, mut progress: impl FnMut(usize, f64, f32)) -> BenchResult {
    let n = cfg.batch;
    let v = &cfg.model.vit;
    let mut rng = Rng::new(0);
    let x: Vec<f32> = (0..2 * n * v.in_chans * v.img * v.img).map(|_| rng.uniform_f64() as f32).collect();
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
    let med = if times.is_empty() { f64::NAN } else { times[times.len() / 2] };
    BenchResult { img_per_s: n as f64 / med, step_ms_median: med * 1e3, loss_first: first, loss_last: last }
}
