//! `mocov3 bench step`: the MoCo v3 training step of `bench-step` (C1: a tiny ViT on 32 px
//! images, C2: ViT-S/16 at 224 px; or a ResNet with `--arch`), on random images, fp32, timed
//! after warm-up. One fixed batch is used for every step, so the loss must fall. ViTs step with
//! AdamW, ResNets with LARS, as their official recipes.
//!
//! Over several processes (`mpirun -np N mocov3 bench step`), the batch is the global one: each
//! rank steps on its slice of it and the gradients are averaged as in pre-training
//! ([`crate::train::distributed`]); [`allreduce_secs`] times the all-reduce alone.

use crate::engine::comm;
use crate::engine::rng::Rng;
use crate::moco::{MoCo, MocoConfig};
use crate::models::backbone::{Backbone, BackboneConfig, ResNetConfig};
use crate::models::resnet::ResNet;
use crate::models::vit::VitConfig;
use crate::nn::posembed::PosEmbedKind;
use crate::optim::{Optimizer, OptimizerKind};
use crate::train::distributed;
use anyhow::{bail, Result};
use std::time::Instant;

pub struct BenchConfig {
    pub name: String,
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
    match &mut c.model.backbone {
        BackboneConfig::Vit(v) => {
            if let Some(i) = image {
                v.img = i;
            }
            if let Some(p) = patch {
                v.patch = p;
            }
        }
        BackboneConfig::ResNet(r) => {
            if let Some(i) = image {
                r.img = i;
            }
            if patch.is_some() {
                bail!("--patch applies to ViTs only");
            }
        }
    }
    c.model.backbone.validate().map_err(|e| anyhow::anyhow!("invalid bench configuration: {e}"))?;
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
        conv_stem: false,
        mlp_bn: false,
    };
    let model = MocoConfig { backbone: BackboneConfig::Vit(vit), mlp_dim: hidden, out_dim: 256, t: 0.2 };
    Ok(BenchConfig { name: name.into(), model, batch })
}

/// The official ResNet MoCo v3 step (projector 2048-4096-256, or 512-4096-256 for a ResNet-18, τ
/// 1.0, LARS) at 224 px, batch 8 unless overridden; `resnet18_cifar` is the CIFAR ResNet-18 (3×3
/// stride-1 stem, no max-pool) at 32 px, batch 32.
pub fn resnet_config(arch: &str) -> Result<BenchConfig> {
    let (depth, cifar, img, batch) = match arch {
        "resnet50" => (50, false, 224, 8),
        "resnet18" => (18, false, 224, 8),
        "resnet18_cifar" => (18, true, 32, 32),
        other => bail!(
            "unknown --arch '{other}': expected resnet18, resnet18_cifar or resnet50 (the ViTs are --config C1/C2)"
        ),
    };
    let backbone = BackboneConfig::ResNet(ResNetConfig { depth, cifar, img, in_chans: 3 });
    Ok(BenchConfig { name: arch.into(), model: MocoConfig { backbone, mlp_dim: 4096, out_dim: 256, t: 1.0 }, batch })
}

/// Multiply-add FLOPs (2 per MAC) of one training step as the official code computes it (every
/// token through every block): the base encoder and predictor forward and backward (backward =
/// 2 × forward, the patch projection's input gradient excluded) and the momentum encoder forward,
/// for both views of `batch` images. `net` is the model's backbone (a ResNet's convolutions are
/// counted on it).
pub fn step_flops(m: &MocoConfig, net: &Backbone, batch: usize) -> f64 {
    let v = match (&m.backbone, net) {
        (BackboneConfig::Vit(v), _) => v,
        (BackboneConfig::ResNet(r), Backbone::ResNet(net)) => return resnet_step_flops(m, r, net, batch),
        (BackboneConfig::ResNet(_), Backbone::Vit(_)) => unreachable!("a ResNet configuration builds a ResNet"),
    };
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

/// As [`step_flops`] for a ResNet: every convolution's multiply-adds (backward = 2 × forward,
/// the stem's input gradient excluded), and the heads.
fn resnet_step_flops(m: &MocoConfig, r: &ResNetConfig, net: &ResNet, batch: usize) -> f64 {
    let (conv, stem) = net.conv_macs(r.img, r.img);
    let (d, h, o) = (r.dim() as f64, m.mlp_dim as f64, m.out_dim as f64);
    let projector = 2.0 * (d * h + h * o);
    let predictor = 2.0 * (o * h + h * o);
    let backbone = 2.0 * conv;
    let base_fwd = backbone + projector + predictor;
    let base_bwd = 2.0 * base_fwd - 2.0 * stem;
    2.0 * batch as f64 * (base_fwd + base_bwd + backbone + projector)
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

/// The GEMM rate (GFLOP/s, median of `reps` after one untimed) of n×n×n products on `gpu` in
/// `prec`, operands already on the device (and already bf16 for bf16: the casts are not timed,
/// so this is the rate the step's MFU is quoted against).
#[cfg(feature = "cuda")]
pub fn gemm_rate_cuda(
    gpu: &crate::engine::cuda::Gpu,
    n: usize,
    prec: crate::engine::cuda::Precision,
    reps: usize,
) -> Result<f64, String> {
    use crate::engine::cuda::gemm::Gemm;
    use crate::engine::cuda::gpu::Operands;
    use crate::engine::cuda::launch::cast_to_bf16;
    let mut rng = Rng::new(1);
    let a: Vec<f32> = (0..n * n).map(|_| rng.normal()).collect();
    let (ad, bd) = (gpu.upload(&a)?, gpu.upload(&a)?);
    let (mut a16, mut b16) = (Default::default(), Default::default());
    cast_to_bf16(gpu, &mut a16, &ad, n * n)?;
    cast_to_bf16(gpu, &mut b16, &bd, n * n)?;
    let mut c = gpu.zeros::<f32>(n * n)?;
    let g = Gemm { m: n, n, k: n, a_trans: false, b_trans: false, alpha: 1.0, beta: 0.0 };
    let ops = match prec {
        crate::engine::cuda::Precision::Bf16 => Operands::Bf16(&a16, &b16),
        crate::engine::cuda::Precision::Fp32 => Operands::F32(&ad, &bd),
    };
    let mut times = Vec::new();
    for _ in 0..reps.max(1) + 1 {
        gpu.sync()?;
        let t0 = Instant::now();
        gpu.gemm(g, ops, &mut c)?;
        gpu.sync()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(|x, y| x.partial_cmp(y).unwrap());
    Ok(2.0 * (n as f64).powi(3) / times[times.len() / 2] / 1e9)
}

pub struct BenchResult {
    pub img_per_s: f64,
    pub step_ms_median: f64,
    pub loss_first: f32,
    pub loss_last: f32,
    /// Model FLOPs of one step ([`step_flops`]).
    pub flops_per_step: f64,
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
    let b = &cfg.model.backbone;
    let mut rng = Rng::new(0);
    let x: Vec<f32> = (0..2 * n * b.in_chans() * b.img() * b.img()).map(|_| rng.uniform_f64() as f32).collect();
    // This rank's slice of both views (all of them in one process).
    let c = comm::world();
    let nl = n / c.world();
    let len = b.in_chans() * b.img() * b.img();
    let x: Vec<f32> = (0..2)
        .flat_map(|v| x[(v * n + c.rank() * nl) * len..(v * n + (c.rank() + 1) * nl) * len].iter().copied())
        .collect();
    let mut bucket = Vec::new();
    let mut model = MoCo::new(&cfg.model, 0);
    let (mut opt, lr) = match b {
        BackboneConfig::Vit(_) => (Optimizer::new(OptimizerKind::Adamw, 0.1, false), 1.5e-4),
        BackboneConfig::ResNet(_) => (Optimizer::new(OptimizerKind::Lars, 1e-6, false), 0.6),
    };
    let lr = lr * n as f64 / 256.0;
    let mut times = Vec::new();
    let (mut first, mut last) = (f32::NAN, f32::NAN);
    for i in 0..warmup + timed {
        let t0 = Instant::now();
        let loss = distributed::mean_over_ranks(model.forward_backward(&x, nl, 0.99));
        distributed::average_grads(&mut model.trainable_params(), &mut bucket);
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
    let flops_per_step = step_flops(&cfg.model, &model.base.backbone, n);
    BenchResult {
        img_per_s: n as f64 / med,
        step_ms_median: med * 1e3,
        loss_first: first,
        loss_last: last,
        flops_per_step,
    }
}

/// Seconds per `all_reduce_sum` of `floats` f32 values over the process group: the median of
/// `rounds` timed calls after one untimed, each started together (a barrier first).
pub fn allreduce_secs(floats: usize, rounds: usize) -> f64 {
    let c = comm::world();
    let mut buf = vec![1.0f32; floats];
    let mut times = Vec::new();
    for i in 0..rounds + 1 {
        buf.fill(1.0);
        c.barrier();
        let t = Instant::now();
        c.all_reduce_sum(&mut buf);
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}
