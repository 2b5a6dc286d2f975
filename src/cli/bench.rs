//! `mocov3 bench`: the training step, the data pipeline, the GEMM rate and the all-reduce.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Cmd {
    /// Time the MoCo v3 training step (forward, backward, AdamW, momentum update).
    Step {
        /// C1 (ViT 192-d x 12 on 32 px, patch 4, batch 64) or C2 (ViT-S/16 at 224 px, batch 8).
        #[arg(long, default_value = "C1")]
        config: String,
        /// A ResNet step instead (resnet18 | resnet50: official heads, τ 1.0, LARS; 224 px,
        /// batch 8; resnet18_cifar: the CIFAR stem at 32 px, batch 32; unless --image / --batch
        /// say otherwise).
        #[arg(long)]
        arch: Option<String>,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed steps (default: 18 for C1, so 20 steps in all; 5 for C2).
        #[arg(long)]
        steps: Option<usize>,
        /// Replace the configuration's batch size.
        #[arg(long)]
        batch: Option<usize>,
        /// Replace the configuration's image size.
        #[arg(long)]
        image: Option<usize>,
        /// Replace the configuration's patch size.
        #[arg(long)]
        patch: Option<usize>,
        /// Compute threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Two-view images per second per core of the official augmentation on a folder of JPEGs
    /// (generated there if missing); compare with scripts/bench_data_torch.py on the same files.
    Data {
        /// Folder for the JPEG files (`DIR/bench/*.jpg`).
        #[arg(long, default_value = "runs/bench-data")]
        dir: PathBuf,
        /// How many JPEG files to generate and time.
        #[arg(long, default_value_t = 200)]
        images: usize,
        /// Output size of each view.
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Timed passes over the files (after one untimed).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Threads (the rate is reported per thread; 1 compares one core with one core).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// All-reduce time and bandwidth over the processes of an `mpirun` job (the gradient
    /// average of data-parallel training): run it as `mpirun -np N mocov3 bench allreduce`.
    Allreduce {
        /// Message size in MiB of f32 values.
        #[arg(long, default_value_t = 16.0)]
        mib: f64,
        /// Timed all-reduces (after one untimed).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// GEMM rate (n×n×n) through the project's GEMM: single precision on the CPU; on a GPU
    /// (`--device cuda`) cuBLASLt's, bf16 operands with f32 accumulation (the mixed-precision
    /// path; the rate MFU is quoted against) or f32 (`--precision fp32`).
    Gemm {
        /// Matrix size (n×n times n×n).
        #[arg(long, default_value_t = 2048)]
        n: usize,
        /// Compute threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Where: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu", value_parser = super::device::parse)]
        device: super::device::Device,
        /// The GPU's operands: bf16 or fp32 (the CPU is always fp32).
        #[arg(long, default_value = "bf16", value_parser = ["bf16", "fp32"])]
        precision: String,
    },
}

#[cfg(feature = "cuda")]
fn gemm_cuda(n: usize, ordinal: usize, precision: &str) -> Result<()> {
    use mocov3::engine::cuda::{Gpu, Precision};
    let prec = if precision == "fp32" { Precision::Fp32 } else { Precision::Bf16 };
    let gpu = Gpu::new(ordinal).map_err(anyhow::Error::msg)?;
    let r = mocov3::bench::gemm_rate_cuda(&gpu, n, prec, 20).map_err(anyhow::Error::msg)?;
    println!(
        "RESULT framework=mocov3 gemm device=cuda:{ordinal} precision={precision} n={n} gflops={r:.1} ({})",
        gpu.describe()
    );
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn gemm_cuda(_: usize, _: usize, _: &str) -> Result<()> {
    unreachable!("--device cuda is refused by its parser in a build without CUDA")
}

pub fn run(what: Cmd) -> Result<()> {
    match what {
        Cmd::Data { dir, images, size, rounds, threads } => {
            mocov3::engine::init_threads(threads);
            let files = mocov3::data::benchdata::generate(&dir, images)?;
            let r = mocov3::data::benchdata::run(&files, size, rounds.max(1))?;
            println!(
            "RESULT framework=mocov3 bench=data images={} size={size} threads={} two_view_img_per_s={:.1} per_core={:.1}",
            r.images,
            r.threads,
            r.images as f64 / r.secs,
            r.per_core()
        );
        }
        Cmd::Allreduce { mib, rounds } => {
            let c = mocov3::engine::comm::world();
            let floats = ((mib * (1 << 20) as f64) / 4.0).round().max(1.0) as usize;
            let secs = mocov3::bench::allreduce_secs(floats, rounds.max(1));
            let (bytes, p) = ((floats * 4) as f64, c.world() as f64);
            if c.rank() == 0 {
                // Bus bandwidth (NCCL's convention): what each rank sends, 2(p-1)/p of the message.
                println!(
                    "RESULT framework=mocov3 bench=allreduce ranks={} mib={mib} ms_median={:.3} algo_gb_per_s={:.3} bus_gb_per_s={:.3} ({})",
                    c.world(),
                    secs * 1e3,
                    bytes / secs / 1e9,
                    bytes * 2.0 * (p - 1.0) / p / secs / 1e9,
                    c.describe()
                );
            }
        }
        Cmd::Gemm { n, threads, device, precision } => match device {
            super::device::Device::Cpu => {
                mocov3::engine::init_threads(threads);
                let r = mocov3::bench::gemm_rate(n, 5);
                println!("RESULT framework=mocov3 gemm n={n} gflops={r:.1} threads={}", mocov3::engine::threads());
            }
            super::device::Device::Cuda(ordinal) => gemm_cuda(n, ordinal, &precision)?,
        },
        Cmd::Step { config, arch, warmup, steps, batch, image, patch, threads } => {
            mocov3::engine::init_threads(threads);
            let world = mocov3::engine::comm::world();
            let base = match &arch {
                Some(a) => mocov3::bench::resnet_config(a)?,
                None => mocov3::bench::config(&config)?,
            };
            let cfg = mocov3::bench::with_overrides(base, batch, image, patch)?;
            let timed = steps.unwrap_or(if cfg.name == "C1" { 18 } else { 5 });
            mocov3::train::distributed::local_batch(cfg.batch)?;
            let rank0 = world.rank() == 0;
            if rank0 {
                eprintln!(
                    "bench step {}: batch {}, {} warm-up + {} timed steps, {} threads, {}",
                    cfg.name,
                    cfg.batch,
                    warmup,
                    timed,
                    mocov3::engine::threads(),
                    world.describe()
                );
            }
            let r = mocov3::bench::run(&cfg, warmup, timed, |i, dt, loss| {
                if rank0 {
                    eprintln!("  step {i:2}: {:8.1} ms  loss {loss:.4} (bits {:08x})", dt * 1e3, loss.to_bits())
                }
            });
            if !rank0 {
                return Ok(());
            }
            println!(
            "RESULT framework=mocov3 config={} img_per_s={:.3} step_ms_median={:.1} loss_first={:.4} loss_last={:.4}",
            cfg.name, r.img_per_s, r.step_ms_median, r.loss_first, r.loss_last
        );
            let gflop = r.flops_per_step / 1e9;
            let patch = cfg.model.backbone.vit().map(|v| format!(" patch {}", v.patch)).unwrap_or_default();
            eprintln!(
                "batch {} image {}{patch}: {gflop:.1} GFLOP per step (model count), {:.1} GFLOP/s achieved",
                cfg.batch,
                cfg.model.backbone.img(),
                gflop / (r.step_ms_median / 1e3)
            );
            if let Some(m) = mocov3::bench::peak_rss_mib() {
                eprintln!("peak resident memory: {m:.0} MiB");
            }
        }
    }
    Ok(())
}
