//! The evaluation, conversion and interop commands of the CLI.

use super::*;

pub fn knn(a: KnnArgs) -> Result<()> {
    use mocov3::eval::{features, knn};
    mocov3::engine::init_threads(a.threads);
    let t0 = std::time::Instant::now();
    let (dataset, train, test, bank, query, d, what) = match &a.checkpoint {
        Some(ck) => {
            let mut p = open_probe(ck, &a.dataset, &a.data_dir)?;
            let (nb, nq) = (features::count(&p.train, a.train_limit), features::count(&p.test, a.test_limit));
            let net = match a.encoder.as_str() {
                "momentum" => &mut p.model.momentum.backbone,
                _ => &mut p.model.base.backbone,
            };
            net.set_keep_activations(false);
            let (b, d) = features::backbone(net, &p.train, nb, &p.plain, 256, a.feature.value)?;
            let (q, _) = features::backbone(net, &p.test, nq, &p.plain, 256, a.feature.value)?;
            let what = format!(
                "{} (epoch {}, {} encoder, feature {})",
                ck.display(),
                p.state.epoch,
                a.encoder,
                a.feature.value
            );
            (p.dataset, p.train, p.test, b, q, d, what)
        }
        None => {
            let dataset = a.dataset.clone().unwrap_or_else(|| "fashion-mnist".into());
            let train = mocov3::data::load(&dataset, a.data_dir.as_deref(), true)?;
            let test = mocov3::data::load(&dataset, a.data_dir.as_deref(), false)?;
            let (b, d) = features::pixels(&train, features::count(&train, a.train_limit))?;
            let (q, _) = features::pixels(&test, features::count(&test, a.test_limit))?;
            (dataset, train, test, b, q, d, "pixels".to_string())
        }
    };
    let (nb, nq) = (bank.len() / d, query.len() / d);
    let classes = train.classes.max(test.classes);
    let (bank, query) = if a.standardize { knn::standardized(&bank, &query, d) } else { (bank, query) };
    let r = knn::classify(&bank, &train.labels[..nb], &query, &test.labels[..nq], d, classes, &a.k, a.t);
    eprintln!("features of {nb} train and {nq} test images from {what} in {:.1} s", t0.elapsed().as_secs_f64());
    for x in r {
        println!(
            "knn dataset={dataset} features={}{} k={} t={} top1={:.2} top5={:.2}",
            if a.pixels { "pixels" } else { "checkpoint" },
            if a.standardize { "+standardized" } else { "" },
            x.k,
            a.t,
            x.top1,
            x.top5
        );
    }
    Ok(())
}

/// A checkpoint's model and training state, with the dataset it was trained on (or the one
/// named): both splits, and the evaluation resize.
struct Probe {
    model: mocov3::moco::MoCo,
    state: mocov3::train::checkpoint::TrainState,
    dataset: String,
    train: mocov3::data::ImageSet,
    test: mocov3::data::ImageSet,
    plain: mocov3::data::augment::Augment,
}

fn open_probe(checkpoint: &std::path::Path, dataset: &Option<String>, data_dir: &Option<PathBuf>) -> Result<Probe> {
    let (model, _, state) = mocov3::train::checkpoint::load(checkpoint)?;
    let name = dataset.clone().unwrap_or_else(|| state.config.dataset.clone());
    let dir = data_dir.clone().or_else(|| state.config.data_dir.clone());
    let train = mocov3::data::load(&name, dir.as_deref(), true)?;
    let test = mocov3::data::load(&name, dir.as_deref(), false)?;
    if state.in_chans != train.c {
        anyhow::bail!("the checkpoint expects {}-channel images, dataset '{name}' has {}", state.in_chans, train.c);
    }
    let (mean, std) = train.channel_stats();
    let plain = mocov3::data::augment::Augment::crop_flip(state.config.img_size, 1.0, false, mean, std);
    Ok(Probe { model, state, dataset: name, train, test, plain })
}

pub fn lincls(a: LinclsArgs) -> Result<()> {
    use mocov3::eval::lincls;
    mocov3::engine::init_threads(a.threads);
    let cfg = lincls::LinclsConfig {
        epochs: a.epochs,
        batch: a.batch_size,
        lr: a.lr[0],
        momentum: 0.9,
        seed: a.seed,
        cached: a.cached,
        crop_min: a.crop_min,
        lr_sweep: if a.lr.len() > 1 { a.lr.clone() } else { vec![] },
        feature: a.feature.value,
        standardize: a.standardize,
    };
    // Bad settings are reported before the checkpoint and the dataset are read.
    cfg.validate()?;
    let mut p = open_probe(&a.checkpoint, &a.dataset, &a.data_dir)?;
    let name = p.dataset.clone();
    let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(|d| d.to_path_buf()).unwrap_or_default());
    std::fs::create_dir_all(&out)?;
    let mut log = mocov3::train::metrics::MetricsLog::open(&out.join("lincls.jsonl"), true)?;
    let mut tb = mocov3::train::tensorboard::EventWriter::create(&out)?;
    let mut err = None;
    let probed = lincls::run(&mut p.model.base.backbone, &p.train, &p.test, &p.plain, &cfg, |r| {
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
    for sp in &probed.sweep {
        eprintln!("lr sweep: base lr {} -> held-out top1 {:.2}", sp.lr, sp.val_top1);
    }
    let res = &probed.epochs;
    let best = res.iter().map(|r| r.top1).fold(f64::NEG_INFINITY, f64::max);
    let last = res.last().map(|r| (r.top1, r.top5)).unwrap_or((0.0, 0.0));
    println!(
        "lincls dataset={name} epochs={} lr={} mode={} best_top1={best:.2} last_top1={:.2} last_top5={:.2} backbone=unchanged",
        cfg.epochs,
        probed.lr,
        match (cfg.cached, cfg.standardize) {
            (true, true) => "cached+standardized",
            (true, false) => "cached",
            _ => "augmented",
        },
        last.0,
        last.1
    );
    Ok(())
}

pub fn extract(a: ExtractArgs) -> Result<()> {
    mocov3::engine::init_threads(a.threads);
    let mut p = open_probe(&a.checkpoint, &a.dataset, &a.data_dir)?;
    let set = match a.split.as_str() {
        "train" => &p.train,
        "test" => &p.test,
        other => anyhow::bail!("--split must be train or test, not '{other}'"),
    };
    let net = &mut p.model.base.backbone;
    net.set_keep_activations(false);
    let (f, d) = mocov3::eval::features::backbone(net, set, set.len(), &p.plain, 256, a.feature.value)?;
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
    println!(
        "extract: {} {} features of dim {d} (L2-normalised) and labels -> {}",
        set.len(),
        a.feature.value,
        a.out.display()
    );
    Ok(())
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    use mocov3::interop::official;
    if a.to == "official" || a.to == "deit" || a.to == "timm" {
        let (mut model, _, state) = mocov3::train::checkpoint::load(&a.input)?;
        if a.to != "official" && model.cfg.backbone.vit().is_none() {
            anyhow::bail!(
                "--to {}: a ViT layout; this checkpoint holds a {} (use --to official)",
                a.to,
                state.config.arch
            );
        }
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
    // The weights give the family and sizes; heads, stop_grad_conv1 and a ResNet's image size
    // are flags.
    let (arch, sets, in_chans, what) = match official::infer_resnet(&a.input)? {
        Some(r) => {
            let arch = format!("resnet{}", r.depth);
            let sets = vec![
                format!("arch = \"{arch}\""),
                format!("cifar_stem = {}", r.cifar),
                format!("img_size = {}", a.image),
                format!("moco_mlp_dim = {}", r.mlp_dim),
                format!("moco_dim = {}", r.out_dim),
                format!("dataset = \"{}\"", a.dataset),
            ];
            let what = format!("{arch}{}, {} px", if r.cifar { " (CIFAR stem)" } else { "" }, a.image);
            (arch, sets, r.in_chans, what)
        }
        None => {
            let s = official::infer_shape(&a.input)?;
            // `vit_conv_*` names imply the conv stem: only a checkpoint with one takes them.
            let arch = mocov3::models::vit::ARCHS
                .iter()
                .filter(|n| n.starts_with("vit_conv_") == s.conv_stem)
                .find(|n| mocov3::models::vit::arch_dims(n) == Some((s.dim, s.depth, a.heads)))
                .copied()
                .unwrap_or("vit_tiny")
                .to_string();
            let sets = vec![
                format!("arch = \"{arch}\""),
                format!("dim = {}", s.dim),
                format!("depth = {}", s.depth),
                format!("heads = {}", a.heads),
                format!("img_size = {}", s.img),
                format!("patch_size = {}", s.patch),
                format!("moco_mlp_dim = {}", s.mlp_dim),
                format!("moco_dim = {}", s.out_dim),
                format!("stop_grad_conv1 = {}", a.stop_grad_conv1 && !s.conv_stem),
                format!("conv_stem = {}", s.conv_stem),
                format!("dataset = \"{}\"", a.dataset),
            ];
            // Image and patch sizes are added from the final configuration (`--set` may change
            // them: a conv stem's weights do not fix the patch it stands for).
            let what = format!("dim {}, depth {}, heads {}", s.dim, s.depth, a.heads);
            (arch, sets, s.in_chans, what)
        }
    };
    let base = if arch.starts_with("resnet") { "resnet50" } else { "vit_small" };
    let cfg = config::merge_sets(&config::preset(base)?, &[sets, a.sets.clone()].concat())?;
    let mut what = what;
    if !arch.starts_with("resnet") {
        let stem = if cfg.conv_stem { "conv stem for patch" } else { "patch" };
        what += &format!(", {} px / {stem} {}", cfg.img_size, cfg.patch_size);
    }
    let mut model = mocov3::moco::MoCo::new(&cfg.model(in_chans)?, 0);
    let mut opt = mocov3::optim::Optimizer::new(cfg.optimizer, cfg.weight_decay, false);
    let info = official::load_into(&a.input, &mut model, &mut opt)?;
    let state = mocov3::train::checkpoint::TrainState {
        format: mocov3::train::checkpoint::FORMAT,
        epoch: info.epoch.max(0) as usize,
        step: opt.steps(),
        in_chans,
        config: cfg,
    };
    mocov3::train::checkpoint::save(&a.out, &mut model, &opt, &state)?;
    println!("convert: {} ({arch}: {what}, epoch {}) -> {}", a.input.display(), info.epoch, a.out.display());
    Ok(())
}

/// What the quickstart reports for one kind of features: kNN top-1 (plain, and on standardised
/// features), and the linear probe's chosen base lr with its best and last top-1.
struct Scores {
    knn: f64,
    knn_std: f64,
    lr: f64,
    best: f64,
    last: f64,
}

/// The whole small-scale pipeline: pre-train (or resume) the Fashion-MNIST preset, then kNN and
/// the linear probe on its features and on raw pixels, the report, and a summary.
pub fn quickstart(a: QuickstartArgs) -> Result<()> {
    use mocov3::eval::{features, knn, lincls};
    mocov3::engine::init_threads(a.threads);
    let t0 = std::time::Instant::now();
    let mut cfg = config::preset("fashion-mnist")?;
    cfg.out_dir = a.out.clone();
    if let Some(e) = a.epochs {
        cfg.epochs = e;
    }
    cfg.data_dir = a.data_dir.clone();
    let ckpt = pretrain::checkpoint_path(&cfg.out_dir);
    let resume = if ckpt.is_file() {
        let state = mocov3::train::checkpoint::read_state(&ckpt)?;
        let conflicts = config::resume_conflicts(&state.config, &cfg)?;
        if !conflicts.is_empty() {
            anyhow::bail!(
                "{} holds a run with another configuration than this quickstart's:\n  {}\nscore it with the \
                 same --epochs, or give another --out",
                ckpt.display(),
                conflicts.join("\n  ")
            );
        }
        Some(state.epoch)
    } else {
        None
    };
    // None when the run directory already held the finished run: only scored here.
    let train_secs = match resume {
        Some(e) if e >= cfg.epochs => {
            eprintln!("quickstart: {} already holds {e} epochs; evaluating it", ckpt.display());
            None
        }
        _ => {
            let opts = RunOptions { resume: resume.map(|_| ckpt.clone()), stop_after_epochs: None, quiet: false };
            pretrain::run(cfg.clone(), &opts)?;
            Some(t0.elapsed().as_secs_f64())
        }
    };
    let mut p = open_probe(&ckpt, &None, &a.data_dir)?;
    let test = &p.test;
    let classes = p.train.classes.max(test.classes);
    let net = &mut p.model.base.backbone;
    net.set_keep_activations(false);
    eprintln!("quickstart: features of {} train and {} test images", p.train.len(), test.len());
    // The cls token (the protocol's feature), and cls + mean patch token (DINO's probe). Two
    // passes: the cls half of the second comes out of a last block run on all tokens, equal to
    // the first only to rounding, and the protocol's numbers stay those of `knn` and `lincls`.
    let mut feats = |kind| -> Result<_> {
        let (tr, d) = features::backbone(net, &p.train, p.train.len(), &p.plain, 256, kind)?;
        let (te, _) = features::backbone(net, test, test.len(), &p.plain, 256, kind)?;
        Ok((tr, te, d))
    };
    let (ftrain, ftest, d) = feats(features::VitFeature::Cls)?;
    let (atrain, atest, d2) = feats(features::VitFeature::ClsAvg)?;
    let (ptrain, pd) = features::pixels(&p.train, p.train.len())?;
    let (ptest, _) = features::pixels(test, test.len())?;
    let lcfg = lincls::LinclsConfig {
        epochs: a.lincls_epochs,
        batch: 256,
        lr: 3.0,
        momentum: 0.9,
        seed: 0,
        cached: true,
        crop_min: 0.08,
        lr_sweep: a.lincls_lr.clone().unwrap_or_else(|| {
            if a.lincls_l2 {
                vec![1.0, 3.0, 10.0, 30.0, 100.0]
            } else {
                vec![0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
            }
        }),
        feature: features::VitFeature::Cls,
        standardize: !a.lincls_l2,
    };
    let best = |r: &[lincls::EpochResult]| r.iter().map(|x| x.top1).fold(f64::NEG_INFINITY, f64::max);
    let last = |r: &[lincls::EpochResult]| r.last().map(|x| x.top1).unwrap_or(f64::NAN);
    let score = |x: &[f32], xt: &[f32], d: usize, what: &str| -> Result<Scores> {
        let vote =
            |b: &[f32], q: &[f32]| knn::classify(b, &p.train.labels, q, &test.labels, d, classes, &[20], 0.07)[0].top1;
        let (xs, xts) = knn::standardized(x, xt, d);
        let (knn, knn_std) = (vote(x, xt), vote(&xs, &xts));
        let r = lincls::probe_swept(x, &p.train.labels, xt, &test.labels, d, classes, &lcfg, |_| {})?;
        for sp in &r.sweep {
            eprintln!("quickstart: linear probe of {what}, base lr {} -> held-out top1 {:.2}", sp.lr, sp.val_top1);
        }
        Ok(Scores { knn, knn_std, lr: r.lr, best: best(&r.epochs), last: last(&r.epochs) })
    };
    let m = score(&ftrain, &ftest, d, "the model")?;
    let x = score(&ptrain, &ptest, pd, "raw pixels")?;
    let c = score(&atrain, &atest, d2, "the model's cls + mean patch token")?;
    let report = mocov3::report::render(&cfg.out_dir)?;
    let summary = serde_json::json!({
        "epochs": p.state.epoch,
        "pretrain_seconds": train_secs,
        "total_seconds": t0.elapsed().as_secs_f64(),
        "knn_top1": m.knn, "knn_top1_pixels": x.knn, "knn_top1_cls_avg": c.knn,
        "knn_top1_standardized": m.knn_std, "knn_top1_pixels_standardized": x.knn_std,
        "knn_top1_cls_avg_standardized": c.knn_std,
        "linear_top1_best": m.best, "linear_top1_last": m.last,
        "linear_top1_pixels_best": x.best, "linear_top1_pixels_last": x.last,
        "linear_top1_cls_avg_best": c.best, "linear_top1_cls_avg_last": c.last,
        "linear_epochs": lcfg.epochs, "linear_standardized": lcfg.standardize, "linear_lr": m.lr, "linear_lr_pixels": x.lr, "linear_lr_cls_avg": c.lr,
    });
    std::fs::write(cfg.out_dir.join("quickstart.json"), serde_json::to_string_pretty(&summary)?)?;
    println!("Fashion-MNIST test set, top-1 (%)       ViT ({} epochs)   raw pixels", p.state.epoch);
    println!("  weighted kNN (k 20, T 0.07)           {:>10.2}   {:>10.2}", m.knn, x.knn);
    println!("    the same, standardised features     {:>10.2}   {:>10.2}", m.knn_std, x.knn_std);
    println!(
        "  linear probe ({} epochs, best/last)  {:>5.2}/{:<5.2}  {:>5.2}/{:<5.2}   (base lr {} / {}{})",
        lcfg.epochs,
        m.best,
        m.last,
        x.best,
        x.last,
        m.lr,
        x.lr,
        if lcfg.standardize { ", standardised features" } else { "" }
    );
    println!(
        "  the ViT's cls + mean patch token (DINO's probe, {d2}-d): kNN {:.2} ({:.2} standardised), linear \
         {:.2}/{:.2} (base lr {})",
        c.knn, c.knn_std, c.best, c.last, c.lr
    );
    let pretrained = match train_secs {
        Some(s) => format!("pre-training {:.1} min", s / 60.0),
        None => "no pre-training (a finished run, scored again)".into(),
    };
    println!(
        "{pretrained}, all {:.1} min; curves: {}; summary: {}",
        t0.elapsed().as_secs_f64() / 60.0,
        report.display(),
        cfg.out_dir.join("quickstart.json").display()
    );
    Ok(())
}
