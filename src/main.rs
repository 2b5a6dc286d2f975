//! The `mocov3` command line.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use mocov3::train::config::{self, PretrainConfig, PRESETS};
use mocov3::train::pretrain::{self, RunOptions};
use std::path::PathBuf;

mod cli;
use cli::{convert, extract, knn, lincls, quickstart};

#[derive(Parser)]
#[command(
    name = "mocov3",
    version,
    about = "MoCo v3 self-supervised pre-training of Vision Transformers, on its own CPU engine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pre-train a ViT with MoCo v3 (checkpoint every epoch, resumable).
    Pretrain(PretrainArgs),
    /// Write a PNG grid of images and their two augmented views (what pre-training sees).
    AugmentPreview(PreviewArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Weighted kNN accuracy of a checkpoint's features (or of raw pixels) on a labelled dataset.
    Knn(KnnArgs),
    /// Linear probe of a checkpoint's frozen backbone (the official main_lincls.py protocol).
    Lincls(LinclsArgs),
    /// Backbone features (cls token after the final norm, or --feature) of a dataset split, to
    /// safetensors.
    Extract(ExtractArgs),
    /// Render the curves of a run directory (metrics.jsonl, lincls.jsonl) into RUN_DIR/report.png.
    Report { run_dir: PathBuf },
    /// Convert between checkpoints: an official main_moco.py .pth.tar (zip or legacy) to a native
    /// one (`--to safetensors`), or a native one to the official layout (`--to official`) or to
    /// the DeiT fine-tuning layout (`--to deit`).
    Convert(ConvertArgs),
    /// Exactly one training step from an official checkpoint on given views (x1, x2 in a
    /// safetensors file), written in the official layout with the AdamW state: a parity check.
    Step(StepCmd),
    /// Pre-train the Fashion-MNIST preset (or finish it), then kNN and linear probe on its
    /// features (the cls token, and cls + mean patch token) and on raw pixels, the report, and a
    /// summary table.
    Quickstart(QuickstartArgs),
    /// List the named presets.
    Presets,
}

#[derive(Args)]
struct QuickstartArgs {
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    /// Pre-training epochs (default: the preset's).
    #[arg(long)]
    epochs: Option<usize>,
    /// Linear-probe epochs on cached features.
    #[arg(long, default_value_t = 100)]
    lincls_epochs: usize,
    /// Base lrs the linear probe chooses from on 10% of the training features held out (for
    /// the model and the raw pixels alike); the test split is only used for the final score
    /// [default: 0.001,0.003,0.01,0.03,0.1,0.3,1,3,10; with --lincls-l2 1,3,10,30,100].
    #[arg(long, value_delimiter = ',')]
    lincls_lr: Option<Vec<f64>>,
    /// Probe the L2-normalised features kNN reads as they are (the quickstart's earlier probe)
    /// instead of standardising each dimension first (`lincls --cached --standardize`).
    #[arg(long)]
    lincls_l2: bool,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args)]
struct StepCmd {
    /// Official checkpoint (.pth.tar) to start from.
    #[arg(long)]
    checkpoint: PathBuf,
    /// safetensors file with `x1` and `x2`, f32 [N, C, H, W].
    #[arg(long)]
    views: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    lr: f64,
    #[arg(long)]
    wd: f64,
    #[arg(long)]
    moco_m: f64,
    #[arg(long)]
    moco_t: f32,
    /// Attention heads (not in the weights).
    #[arg(long, default_value_t = 12)]
    heads: usize,
    /// Position embedding (not told apart by the weights).
    #[arg(long, value_enum, default_value = "sincos")]
    pos: mocov3::nn::posembed::PosEmbedKind,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    stop_grad_conv1: bool,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args)]
struct ConvertArgs {
    /// The checkpoint to convert.
    input: PathBuf,
    /// safetensors (official -> native), official, deit or timm (native -> torch.save file).
    #[arg(long)]
    to: String,
    #[arg(long)]
    out: PathBuf,
    /// Attention heads (not recorded in the weights; the official ViT-S and ViT-B use 12).
    #[arg(long, default_value_t = 12)]
    heads: usize,
    /// The run froze the patch projection (--stop-grad-conv1, the official ViT recipe).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    stop_grad_conv1: bool,
    /// Image size of a ResNet checkpoint (not recorded in its weights; a ViT's is).
    #[arg(long, default_value_t = 224)]
    image: usize,
    /// Dataset the native checkpoint should name for later commands.
    #[arg(long, default_value = "imagenet")]
    dataset: String,
    /// The recipe the run was trained with (batch_size, epochs, lr, ...: keys of `mocov3
    /// pretrain --print-config`), recorded for a later `pretrain --resume`, which keeps it.
    /// Default: the official vit_small / resnet50 recipe.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// `--feature`, shared by the commands that read a checkpoint's features.
#[derive(Args)]
struct FeatureArg {
    /// The ViT feature: `cls` (the cls token after the final norm; MoCo v3's protocol), `cls+avg`
    /// (cls and the mean patch token, 2·dim) or `lastN`, e.g. `last4` (cls tokens of the last N
    /// blocks, N·dim; both as DINO probes ViTs).
    #[arg(long = "feature", value_name = "FEATURE", default_value = "cls")]
    value: mocov3::eval::features::VitFeature,
}

#[derive(Args)]
struct LinclsArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 90)]
    epochs: usize,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Base learning rate, scaled by batch / 256 (the official ViT recipe uses 3.0). A list
    /// (`--lr 1,3,10,30`, with --cached) is swept: each is trained on 90% of the training
    /// features and scored on the other 10%, and the best trains the final head.
    #[arg(long, value_delimiter = ',', default_value = "3.0")]
    lr: Vec<f64>,
    /// Train on cached features of the un-augmented images (fast; no augmentation).
    #[arg(long)]
    cached: bool,
    /// With --cached: standardise each feature dimension (mean and variance of the training
    /// features) before the head, as MAE's probe does with a BatchNorm without affine
    /// parameters; not MoCo v3's protocol.
    #[arg(long)]
    standardize: bool,
    /// Smallest share of the image a training crop keeps (random-resized-crop scale; the
    /// official 0.08 leaves few pixels of a 28-px image). Not used with --cached.
    #[arg(long, default_value_t = 0.08)]
    crop_min: f64,
    #[command(flatten)]
    feature: FeatureArg,
    /// Where to write lincls.jsonl (default: beside the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args)]
struct ExtractArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// train or test
    #[arg(long, default_value = "test")]
    split: String,
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output file (tensors `features` [n, dim] and `labels` [n]).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    feature: FeatureArg,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args)]
struct KnnArgs {
    /// A checkpoint written by `mocov3 pretrain`.
    #[arg(long, required_unless_present = "pixels", conflicts_with = "pixels")]
    checkpoint: Option<PathBuf>,
    /// Use raw pixels as features (the baseline to beat).
    #[arg(long)]
    pixels: bool,
    /// Dataset (default: the checkpoint's, or fashion-mnist with --pixels).
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Neighbours, one or more (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "20")]
    k: Vec<usize>,
    /// Temperature of the vote weights exp(sim / T).
    #[arg(long, default_value_t = 0.07)]
    t: f32,
    /// Use only the first N training images as the bank.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N test images as queries.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Whose backbone gives the features: the base encoder (the one the official probe takes)
    /// or the momentum encoder.
    #[arg(long, value_parser = ["base", "momentum"], default_value = "base")]
    encoder: String,
    #[command(flatten)]
    feature: FeatureArg,
    /// Standardise each feature dimension with the bank's mean and variance, then L2-normalise
    /// again, before the vote (not the plain protocol: every dimension counts alike).
    #[arg(long)]
    standardize: bool,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Time the MoCo v3 training step (forward, backward, AdamW, momentum update).
    Step {
        /// C1 (ViT 192-d x 12 on 32 px, patch 4, batch 64) or C2 (ViT-S/16 at 224 px, batch 8).
        #[arg(long, default_value = "C1")]
        config: String,
        /// A ResNet step instead (resnet18 | resnet50: official heads, τ 1.0, LARS; 224 px,
        /// batch 8 unless --image / --batch say otherwise).
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
    /// Single-precision GEMM rate (n×n×n) of this machine through the project's GEMM.
    Gemm {
        #[arg(long, default_value_t = 2048)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

#[derive(Args)]
struct PreviewArgs {
    /// The preset whose augmentation to show (see `mocov3 presets`).
    #[arg(long, default_value = "fashion-mnist")]
    preset: String,
    /// Override configuration keys (augment, crop_min, blur_sigma_max, img_size, ...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How many images (rows), starting at --first.
    #[arg(long, default_value_t = 4)]
    images: usize,
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Pairs of views per image.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "augment-preview.png")]
    out: PathBuf,
}

#[derive(Args)]
struct PretrainArgs {
    /// Start from a named preset (see `mocov3 presets`).
    #[arg(long, default_value = "fashion-mnist")]
    preset: String,
    /// A TOML file whose keys override the preset (same names as `--print-config` shows).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override any configuration key: --set key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Base learning rate (scaled by batch / 256).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    dataset: Option<String>,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run directory: config.toml, metrics.jsonl, checkpoint.safetensors.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
    /// Compute threads (0 = one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Cut every epoch to this many steps (smoke runs).
    #[arg(long)]
    max_steps_per_epoch: Option<usize>,
    /// Resume from a checkpoint written by an earlier run. Its configuration is kept: other flags
    /// may change only --out, --threads, --data-dir, --skip-corrupt and the loader and logging
    /// keys; anything else that differs is an error. Without --out it continues in its own run
    /// directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after this many epochs of this invocation (resume later with --resume).
    #[arg(long)]
    stop_after_epochs: Option<usize>,
    /// Image folders: skip (and count) images that do not decode instead of stopping.
    #[arg(long)]
    skip_corrupt: bool,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[arg(long, short)]
    quiet: bool,
}

fn resolve(a: &PretrainArgs) -> Result<PretrainConfig> {
    overrides(config::preset(&a.preset)?, a)
}

/// `c` with the configuration file, the flags and the `--set`s of the command line applied.
fn overrides(mut c: PretrainConfig, a: &PretrainArgs) -> Result<PretrainConfig> {
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
    config::merge_sets(&c, &a.sets)
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Knn(a) => knn(a)?,
        Cmd::Quickstart(a) => quickstart(a)?,
        Cmd::Step(a) => {
            mocov3::engine::init_threads(a.threads);
            let args = mocov3::interop::step::StepArgs {
                heads: a.heads,
                pos: a.pos,
                stop_grad_conv1: a.stop_grad_conv1,
                lr: a.lr,
                wd: a.wd,
                m: a.moco_m,
                t: a.moco_t,
            };
            let loss = mocov3::interop::step::run(&a.checkpoint, &a.views, &a.out, &args)?;
            println!("loss {loss:.8}");
            eprintln!("step: {} -> {}", a.checkpoint.display(), a.out.display());
        }
        Cmd::Convert(a) => convert(a)?,
        Cmd::AugmentPreview(a) => {
            let mut c = config::merge_sets(&config::preset(&a.preset)?, &a.sets)?;
            if let Some(d) = a.dataset {
                c.dataset = d;
            }
            let set = mocov3::data::load(&c.dataset, a.data_dir.as_deref().or(c.data_dir.as_deref()), true)?;
            if a.first + a.images > set.len() || a.images == 0 {
                anyhow::bail!(
                    "--first {} --images {}: dataset '{}' has {} images",
                    a.first,
                    a.images,
                    c.dataset,
                    set.len()
                );
            }
            let aug = mocov3::train::pretrain::augmentation(&c, &set);
            let ids: Vec<usize> = (a.first..a.first + a.images).collect();
            mocov3::report::preview::augment_preview(&set, &ids, &aug, a.pairs.max(1), a.seed, &a.out)?;
            println!(
                "augment-preview: {} ({:?} pipeline, {} images x {} pairs)",
                a.out.display(),
                c.augment,
                a.images,
                a.pairs
            );
        }
        Cmd::Report { run_dir } => {
            let out = mocov3::report::render(&run_dir)?;
            println!("report: {}", out.display());
        }
        Cmd::Lincls(a) => lincls(a)?,
        Cmd::Extract(a) => extract(a)?,
        Cmd::Presets => {
            for (name, what) in PRESETS {
                println!("{name:16} {what}");
            }
        }
        Cmd::Pretrain(a) => {
            let cfg = match &a.resume {
                // A resumed run keeps its configuration; the command line may change only how
                // it runs (threads, logging, where it writes).
                Some(ck) => {
                    let trained = mocov3::train::checkpoint::read_state(ck)?.config;
                    let asked = overrides(trained.clone(), &a)?;
                    let conflicts = config::resume_conflicts(&trained, &asked)?;
                    if !conflicts.is_empty() {
                        anyhow::bail!(
                            "{}: a resumed run keeps the configuration it was started with (its lr and momentum \
                             schedules depend on it), but the command line changes it:\n  {}\ndrop those \
                             settings, or start a new run in another --out",
                            ck.display(),
                            conflicts.join("\n  ")
                        );
                    }
                    asked
                }
                None => resolve(&a)?,
            };
            if a.print_config {
                print!("{}", toml::to_string(&cfg)?);
                return Ok(());
            }
            let opts = RunOptions { resume: a.resume.clone(), stop_after_epochs: a.stop_after_epochs, quiet: a.quiet };
            let s = pretrain::run(cfg, &opts)?;
            if let (Some(f), Some(l)) = (s.losses.first(), s.losses.last()) {
                println!(
                    "done: {} steps, loss {f:.4} -> {l:.4}, checkpoint {}",
                    s.losses.len(),
                    s.checkpoint.display()
                );
            }
        }
        Cmd::Bench { what: BenchCmd::Data { dir, images, size, rounds, threads } } => {
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
        Cmd::Bench { what: BenchCmd::Gemm { n, threads } } => {
            mocov3::engine::init_threads(threads);
            let r = mocov3::bench::gemm_rate(n, 5);
            println!("RESULT framework=mocov3 gemm n={n} gflops={r:.1} threads={}", mocov3::engine::threads());
        }
        Cmd::Bench { what: BenchCmd::Step { config, arch, warmup, steps, batch, image, patch, threads } } => {
            mocov3::engine::init_threads(threads);
            let base = match &arch {
                Some(a) => mocov3::bench::resnet_config(a)?,
                None => mocov3::bench::config(&config)?,
            };
            let cfg = mocov3::bench::with_overrides(base, batch, image, patch)?;
            let timed = steps.unwrap_or(if cfg.name == "C1" { 18 } else { 5 });
            eprintln!(
                "bench step {}: batch {}, {} warm-up + {} timed steps, {} threads",
                cfg.name,
                cfg.batch,
                warmup,
                timed,
                mocov3::engine::threads()
            );
            let r = mocov3::bench::run(&cfg, warmup, timed, |i, dt, loss| {
                eprintln!("  step {i:2}: {:8.1} ms  loss {loss:.4} (bits {:08x})", dt * 1e3, loss.to_bits())
            });
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
