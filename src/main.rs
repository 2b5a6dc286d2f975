//! The `mocov3` command line.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use mocov3::train::config::{self, PretrainConfig, PRESETS};
use mocov3::train::pretrain::{self, RunOptions};
use std::path::PathBuf;

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
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Weighted kNN accuracy of a checkpoint's features (or of raw pixels) on a labelled dataset.
    Knn(KnnArgs),
    /// Linear probe of a checkpoint's frozen backbone (the official main_lincls.py protocol).
    Lincls(LinclsArgs),
    /// Backbone features (cls token after the final norm) of a dataset split, to safetensors.
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
    /// List the named presets.
    Presets,
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
    /// Dataset the native checkpoint should name for later commands.
    #[arg(long, default_value = "imagenet")]
    dataset: String,
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
    /// Base learning rate, scaled by batch / 256 (the official ViT recipe uses 3.0).
    #[arg(long, default_value_t = 3.0)]
    lr: f64,
    /// Train on cached features of the un-augmented images (fast; no augmentation).
    #[arg(long)]
    cached: bool,
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
    /// Single-precision GEMM rate (n×n×n) of this machine through the project's GEMM.
    Gemm {
        #[arg(long, default_value_t = 2048)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
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
    /// Resume from a checkpoint written by an earlier run (its configuration is used).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after this many epochs of this invocation (resume later with --resume).
    #[arg(long)]
    stop_after_epochs: Option<usize>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[arg(long, short)]
    quiet: bool,
}

fn resolve(a: &PretrainArgs) -> Result<PretrainConfig> {
    let mut c = config::preset(&a.preset)?;
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
            let cfg = resolve(&a)?;
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
        Cmd::Bench { what: BenchCmd::Gemm { n, threads } } => {
            mocov3::engine::init_threads(threads);
            let r = mocov3::bench::gemm_rate(n, 5);
            println!("RESULT framework=mocov3 gemm n={n} gflops={r:.1} threads={}", mocov3::engine::threads());
        }
        Cmd::Bench { what: BenchCmd::Step { config, warmup, steps, batch, image, patch, threads } } => {
            mocov3::engine::init_threads(threads);
            let cfg = mocov3::bench::with_overrides(mocov3::bench::config(&config)?, batch, image, patch)?;
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
                eprintln!("  step {i:2}: {:8.1} ms  loss {loss:.4}", dt * 1e3)
            });
            println!(
                "RESULT framework=mocov3 config={} img_per_s={:.3} step_ms_median={:.1} loss_first={:.4} loss_last={:.4}",
                cfg.name, r.img_per_s, r.step_ms_median, r.loss_first, r.loss_last
            );
            let gflop = mocov3::bench::step_flops(&cfg.model, cfg.batch) / 1e9;
            eprintln!(
                "batch {} image {} patch {}: {gflop:.1} GFLOP per step (model count), {:.1} GFLOP/s achieved",
                cfg.batch,
                cfg.model.vit.img,
                cfg.model.vit.patch,
                gflop / (r.step_ms_median / 1e3)
            );
            if let Some(m) = mocov3::bench::peak_rss_mib() {
                eprintln!("peak resident memory: {m:.0} MiB");
            }
        }
    }
    Ok(())
}

fn knn(a: KnnArgs) -> Result<()> {
    use mocov3::eval::{features, knn};
    mocov3::engine::init_threads(a.threads);
    let loaded = match &a.checkpoint {
        Some(p) => Some(mocov3::train::checkpoint::load(p)?),
        None => None,
    };
    let dataset = a
        .dataset
        .clone()
        .or_else(|| loaded.as_ref().map(|l| l.2.config.dataset.clone()))
        .unwrap_or_else(|| "fashion-mnist".into());
    let data_dir = a.data_dir.clone().or_else(|| loaded.as_ref().and_then(|l| l.2.config.data_dir.clone()));
    let train = mocov3::data::load(&dataset, data_dir.as_deref(), true)?;
    let test = mocov3::data::load(&dataset, data_dir.as_deref(), false)?;
    let (nb, nq) = (features::count(&train, a.train_limit), features::count(&test, a.test_limit));
    let classes = train.classes.max(test.classes);
    let t0 = std::time::Instant::now();
    let (bank, query, d, what) = match loaded {
        None => {
            let (b, d) = features::pixels(&train, nb);
            let (q, _) = features::pixels(&test, nq);
            (b, q, d, "pixels".to_string())
        }
        Some((mut model, _, state)) => {
            if state.in_chans != train.c {
                anyhow::bail!(
                    "the checkpoint expects {}-channel images, dataset '{dataset}' has {}",
                    state.in_chans,
                    train.c
                );
            }
            let (mean, std) = train.channel_stats();
            let aug =
                mocov3::data::augment::Augment { out: state.config.img_size, crop_min: 1.0, flip: false, mean, std };
            let vit = &mut model.base.backbone;
            vit.keep_activations = false;
            let b = features::backbone(vit, &train, nb, &aug, 256);
            let q = features::backbone(vit, &test, nq, &aug, 256);
            (b, q, vit.cfg.dim, format!("{} (epoch {})", a.checkpoint.as_ref().unwrap().display(), state.epoch))
        }
    };
    let r = knn::classify(&bank, &train.labels[..nb], &query, &test.labels[..nq], d, classes, &a.k, a.t);
    eprintln!("features of {nb} train and {nq} test images from {what} in {:.1} s", t0.elapsed().as_secs_f64());
    for x in r {
        println!(
            "knn dataset={dataset} features={} k={} t={} top1={:.2} top5={:.2}",
            if a.pixels { "pixels" } else { "checkpoint" },
            x.k,
            a.t,
            x.top1,
            x.top5
        );
    }
    Ok(())
}

/// A checkpoint's model, training state, and the dataset split(s) it was trained on (or named).
struct Probe {
    model: mocov3::moco::MoCo,
    state: mocov3::train::checkpoint::TrainState,
    train: mocov3::data::ImageSet,
    plain: mocov3::data::augment::Augment,
}

fn open_probe(checkpoint: &std::path::Path, dataset: &Option<String>, data_dir: &Option<PathBuf>) -> Result<Probe> {
    let (model, _, state) = mocov3::train::checkpoint::load(checkpoint)?;
    let name = dataset.clone().unwrap_or_else(|| state.config.dataset.clone());
    let dir = data_dir.clone().or_else(|| state.config.data_dir.clone());
    let train = mocov3::data::load(&name, dir.as_deref(), true)?;
    if state.in_chans != train.c {
        anyhow::bail!("the checkpoint expects {}-channel images, dataset '{name}' has {}", state.in_chans, train.c);
    }
    let (mean, std) = train.channel_stats();
    let plain = mocov3::data::augment::Augment { out: state.config.img_size, crop_min: 1.0, flip: false, mean, std };
    Ok(Probe { model, state, train, plain })
}

fn lincls(a: LinclsArgs) -> Result<()> {
    use mocov3::eval::lincls;
    mocov3::engine::init_threads(a.threads);
    let mut p = open_probe(&a.checkpoint, &a.dataset, &a.data_dir)?;
    let name = a.dataset.clone().unwrap_or_else(|| p.state.config.dataset.clone());
    let dir = a.data_dir.clone().or_else(|| p.state.config.data_dir.clone());
    let test = mocov3::data::load(&name, dir.as_deref(), false)?;
    let cfg = lincls::LinclsConfig {
        epochs: a.epochs,
        batch: a.batch_size,
        lr: a.lr,
        momentum: 0.9,
        seed: a.seed,
        cached: a.cached,
        crop_min: 0.08,
    };
    let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(|d| d.to_path_buf()).unwrap_or_default());
    std::fs::create_dir_all(&out)?;
    let mut log = mocov3::train::metrics::MetricsLog::open(&out.join("lincls.jsonl"), true)?;
    let mut tb = mocov3::train::tensorboard::EventWriter::create(&out)?;
    let mut err = None;
    let res = lincls::run(&mut p.model.base.backbone, &p.train, &test, &p.plain, &cfg, |r| {
        eprintln!(
            "epoch {:3}/{}: lr {:.4} loss {:.4} top1 {:.2} top5 {:.2}",
            r.epoch + 1,
            cfg.epochs,
            r.lr,
            r.train_loss,
            r.top1,
            r.top5
        );
        let values = [
            ("lincls/train_loss", r.train_loss as f32),
            ("lincls/lr", r.lr as f32),
            ("lincls/top1", r.top1 as f32),
            ("lincls/top5", r.top5 as f32),
        ];
        if let Err(e) = log.write(r).and_then(|_| tb.scalars(r.epoch as u64 + 1, &values)) {
            err = Some(e);
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    let best = res.iter().map(|r| r.top1).fold(f64::NEG_INFINITY, f64::max);
    let last = res.last().map(|r| (r.top1, r.top5)).unwrap_or((0.0, 0.0));
    println!(
        "lincls dataset={name} epochs={} mode={} best_top1={best:.2} last_top1={:.2} last_top5={:.2} backbone=unchanged",
        cfg.epochs,
        if cfg.cached { "cached" } else { "augmented" },
        last.0,
        last.1
    );
    Ok(())
}

fn extract(a: ExtractArgs) -> Result<()> {
    mocov3::engine::init_threads(a.threads);
    let mut p = open_probe(&a.checkpoint, &a.dataset, &a.data_dir)?;
    let set = match a.split.as_str() {
        "train" => p.train,
        "test" => {
            let name = a.dataset.clone().unwrap_or_else(|| p.state.config.dataset.clone());
            let dir = a.data_dir.clone().or_else(|| p.state.config.data_dir.clone());
            mocov3::data::load(&name, dir.as_deref(), false)?
        }
        other => anyhow::bail!("--split must be train or test, not '{other}'"),
    };
    let vit = &mut p.model.base.backbone;
    vit.keep_activations = false;
    let d = vit.cfg.dim;
    let f = mocov3::eval::features::backbone(vit, &set, set.len(), &p.plain, 256);
    let fb: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
    let lb: Vec<u8> = set.labels.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect();
    use safetensors::tensor::{Dtype, TensorView};
    let views = vec![
        ("features".to_string(), TensorView::new(Dtype::F32, vec![set.len(), d], &fb)?),
        ("labels".to_string(), TensorView::new(Dtype::I64, vec![set.len()], &lb)?),
    ];
    let tmp = a.out.with_extension("tmp");
    safetensors::tensor::serialize_to_file(views, &None, &tmp)?;
    std::fs::rename(&tmp, &a.out)?;
    println!("extract: {} features of dim {d} (L2-normalised) and labels -> {}", set.len(), a.out.display());
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<()> {
    use mocov3::interop::official;
    if a.to == "official" || a.to == "deit" || a.to == "timm" {
        let (mut model, _, state) = mocov3::train::checkpoint::load(&a.input)?;
        let obj = match a.to.as_str() {
            "official" => official::to_official(&mut model, state.epoch as i64, &state.config.arch),
            "deit" => official::to_deit(&mut model),
            _ => official::to_timm(&mut model),
        };
        mocov3::interop::writer::save(&a.out, &obj)?;
        println!("convert: {} -> {} ({} layout, torch.save zip format)", a.input.display(), a.out.display(), a.to);
        return Ok(());
    }
    if a.to != "safetensors" {
        anyhow::bail!("--to {}: expected safetensors, official, deit or timm", a.to);
    }
    let s = official::infer_shape(&a.input)?;
    let arch = mocov3::models::vit::ARCHS
        .iter()
        .find(|n| mocov3::models::vit::arch_dims(n) == Some((s.dim, s.depth, a.heads)))
        .copied()
        .unwrap_or("vit_tiny");
    let sets = vec![
        format!("arch = \"{arch}\""),
        format!("dim = {}", s.dim),
        format!("depth = {}", s.depth),
        format!("heads = {}", a.heads),
        format!("img_size = {}", s.img),
        format!("patch_size = {}", s.patch),
        format!("moco_mlp_dim = {}", s.mlp_dim),
        format!("moco_dim = {}", s.out_dim),
        format!("stop_grad_conv1 = {}", a.stop_grad_conv1),
        format!("dataset = \"{}\"", a.dataset),
    ];
    let cfg = config::merge_sets(&config::preset("vit_small")?, &sets)?;
    let mut model = mocov3::moco::MoCo::new(&cfg.model(s.in_chans)?, 0);
    let mut opt = mocov3::optim::AdamW::new(cfg.weight_decay);
    let info = official::load_into(&a.input, &mut model, &mut opt)?;
    let state = mocov3::train::checkpoint::TrainState {
        format: mocov3::train::checkpoint::FORMAT,
        epoch: info.epoch.max(0) as usize,
        step: opt.step,
        in_chans: s.in_chans,
        config: cfg,
    };
    mocov3::train::checkpoint::save(&a.out, &mut model, &opt, &state)?;
    println!(
        "convert: {} ({arch}: dim {}, depth {}, heads {}, {} px / patch {}, epoch {}) -> {}",
        a.input.display(),
        s.dim,
        s.depth,
        a.heads,
        s.img,
        s.patch,
        info.epoch,
        a.out.display()
    );
    Ok(())
}
