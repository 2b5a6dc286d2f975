//! `mocov3 pretrain`: MoCo v3 pre-training from a preset, a TOML file and flags; resumable.

use anyhow::Result;
use mocov3::train::budget;
use mocov3::train::config::{self, PretrainConfig};
use mocov3::train::pretrain::{self, RunOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Start from a named preset (see `mocov3 presets`).
    #[arg(long, default_value = "fashion-mnist")]
    preset: String,
    /// A TOML file whose keys override the preset (same names as `--print-config` shows).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override any configuration key: --set key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Pre-training epochs (replaces the preset's; the cosine schedules span them).
    #[arg(long)]
    epochs: Option<usize>,
    /// A wall-clock budget (60m, 1h30m, 90s): times a few steps here, then fixes the number of
    /// epochs (and so the schedules) that fit it, recorded in config.toml so a resume keeps it.
    #[arg(long, conflicts_with_all = ["epochs", "resume"])]
    budget: Option<String>,
    /// Global batch size (images per step; the lr is scaled by batch / 256).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Base learning rate (scaled by batch / 256).
    #[arg(long)]
    lr: Option<f64>,
    /// Dataset: fashion-mnist, mnist, cifar10, cifar100, imagenet, synthetic or folder:PATH.
    #[arg(long)]
    dataset: Option<String>,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run directory: config.toml, metrics.jsonl, checkpoint.safetensors.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the initialisation, the data order and the augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// Compute threads (0 = one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Cut every epoch to this many steps (smoke runs).
    #[arg(long)]
    max_steps_per_epoch: Option<usize>,
    /// Resume from a checkpoint written by an earlier run. Its configuration is kept: other flags
    /// may change only --out, --threads, --data-dir, --skip-corrupt, the checkpoint cadence and the
    /// loader and logging keys; anything else that differs is an error. Without --out it continues in its own run
    /// directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also checkpoint within epochs: every N steps (`500`) or every so long (`30m`, `1h`; the
    /// default is 30m); `0` checkpoints at epoch ends only. A resume continues mid-epoch.
    #[arg(long, value_name = "STEPS|TIME")]
    checkpoint_every: Option<String>,
    /// Keep the last K checkpoints as RUN_DIR/checkpoints/step-N.safetensors besides the latest.
    #[arg(long, value_name = "K")]
    keep_checkpoints: Option<usize>,
    /// Stop after this many epochs of this invocation (resume later with --resume).
    #[arg(long)]
    stop_after_epochs: Option<usize>,
    /// Image folders: skip (and count) images that do not decode instead of stopping.
    #[arg(long)]
    skip_corrupt: bool,
    /// What a gradient spike in the patch projection triggers: log (the default), freeze-patch
    /// (freeze it from then on: the paper's fix when it is needed), clip:V (its gradient down to
    /// V x its running median), skip (the step), rollback[:F] (to the last good in-memory
    /// snapshot, every `snapshot_every` steps; lr x F from then on, F = 0.5). Every action is
    /// logged; to try one, --set inject_spike=[STEP] multiplies that gradient by 1000.
    #[arg(long, value_name = "ACTION")]
    on_spike: Option<mocov3::train::actions::OnSpike>,
    /// Where to compute: cpu, or cuda[:N] (checks the CUDA libraries first and names any that
    /// is missing; the CUDA backend's kernels exist, training on it does not yet).
    #[arg(long, default_value = "cpu", value_parser = super::device::parse)]
    device: super::device::Device,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Print no per-step progress (the log and checkpoints are still written).
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    if let super::device::Device::Cuda(n) = a.device {
        anyhow::bail!(
            "--device cuda:{n}: the CUDA libraries load here, but training on the GPU is not built yet (the CUDA \
             backend's kernels compile and match the CPU ops; the layers do not call them): use --device cpu"
        );
    }
    let mut cfg = match &a.resume {
        // A resumed run keeps its configuration; the command line may change only how it runs
        // (config::resumed says which keys, and names any other that differs).
        Some(ck) => {
            let trained = mocov3::train::checkpoint::read_state(ck)?.config;
            let asked = overrides(trained.clone(), &a)?;
            config::resumed(&trained, &asked, ck)?
        }
        None => resolve(&a)?,
    };
    if a.budget.is_some() && mocov3::engine::comm::world().world() > 1 {
        anyhow::bail!("--budget times steps in one process: over several processes give --epochs instead");
    }
    if let (Some(b), false) = (&a.budget, a.print_config) {
        let plan = budget::fit_epochs(&mut cfg, budget::parse_duration(b)?, std::time::Instant::now(), 0.0)?;
        eprintln!("pretrain: --budget {b}: {plan}");
    }
    if a.print_config {
        print!("{}", toml::to_string(&cfg)?);
        return Ok(());
    }
    let opts = RunOptions { resume: a.resume.clone(), stop_after_epochs: a.stop_after_epochs, quiet: a.quiet };
    let s = pretrain::run(cfg, &opts)?;
    let rank0 = mocov3::engine::comm::world().rank() == 0;
    if let (Some(f), Some(l), true) = (s.losses.first(), s.losses.last(), rank0) {
        println!("done: {} steps, loss {f:.4} -> {l:.4}, checkpoint {}", s.losses.len(), s.checkpoint.display());
    }
    Ok(())
}

fn resolve(a: &Args) -> Result<PretrainConfig> {
    overrides(config::preset(&a.preset)?, a)
}

/// `c` with the configuration file, the flags and the `--set`s of the command line applied.
fn overrides(mut c: PretrainConfig, a: &Args) -> Result<PretrainConfig> {
    if let Some(p) = &a.config {
        c = config::merge_file(&c, p)?;
    }
    macro_rules! set {
        ($f:ident) => {
            if let Some(v) = &a.$f {
                c.$f = v.clone();
            }
        };
    }
    set!(epochs);
    set!(batch_size);
    set!(lr);
    set!(dataset);
    set!(seed);
    set!(threads);
    if let Some(v) = &a.data_dir {
        c.data_dir = Some(v.clone());
    }
    if let Some(v) = &a.out {
        c.out_dir = v.clone();
    }
    if let Some(v) = a.max_steps_per_epoch {
        c.max_steps_per_epoch = Some(v);
    }
    if a.skip_corrupt {
        c.skip_corrupt = true;
    }
    if let Some(v) = &a.checkpoint_every {
        (c.checkpoint_every_steps, c.checkpoint_every_minutes) = checkpoint_every(v)?;
    }
    if let Some(v) = a.on_spike {
        c.on_spike = v;
    }
    if let Some(k) = a.keep_checkpoints {
        c.keep_checkpoints = k;
    }
    config::merge_sets(&c, &a.sets)
}

/// `--checkpoint-every`: a step count (`500`), a time (`30m`, `1h30m`, `90s`) or `0` (off), as
/// (`checkpoint_every_steps`, `checkpoint_every_minutes`).
fn checkpoint_every(v: &str) -> Result<(usize, f64)> {
    let v = v.trim();
    if v == "0" {
        return Ok((0, 0.0));
    }
    if let Ok(n) = v.parse::<usize>() {
        return Ok((n, 0.0));
    }
    let secs = budget::parse_duration(v)
        .map_err(|e| anyhow::anyhow!("--checkpoint-every {v}: a step count (500) or a time (30m, 1h): {e:#}"))?;
    Ok((0, secs / 60.0))
}
