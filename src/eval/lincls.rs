//! The linear-probing protocol of the official `main_lincls.py`: the backbone frozen (and, for a
//! ViT, with nothing that differs between train and eval modes), a linear head on the cls feature
//! after the final norm (or another of [`VitFeature`], `LinclsConfig::feature`), initialised
//! N(0, 0.01) with zero bias, SGD with momentum 0.9 and no weight decay, lr = base × batch / 256 on a
//! per-epoch cosine, random-resized-crop + flip for training and the plain resized image for
//! evaluation, top-1 / top-5 every epoch, best and last.
//! A fast mode trains on cached features of the un-augmented images instead, optionally
//! standardised per dimension first (MAE's probe; `LinclsConfig::standardize`).
//! The backbone's weights are compared bit for bit before and after.

use super::features::{self, Standardizer, VitFeature};
use crate::data::augment::Augment;
use crate::data::ImageSet;
use crate::engine::rng::Rng;
use crate::engine::{ops, par};
use crate::models::backbone::Backbone;
use crate::nn::Module;

#[derive(Clone, Debug)]
pub struct LinclsConfig {
    pub epochs: usize,
    pub batch: usize,
    /// Base lr; the effective one is lr × batch / 256 (official ViT recipe: 3.0).
    pub lr: f64,
    pub momentum: f64,
    pub seed: u64,
    /// Train on cached features of the un-augmented images (no augmentation).
    pub cached: bool,
    pub crop_min: f64,
    /// Base lrs to choose from on held-out training features (cached mode; empty: use `lr`).
    pub lr_sweep: Vec<f64>,
    /// The feature the head reads: the cls token (the protocol) or another of [`VitFeature`].
    pub feature: VitFeature,
    /// Cached mode: shift and scale every feature dimension to zero mean and unit variance over
    /// the training features before the head (MAE's probe: a BatchNorm without affine
    /// parameters in front of the linear layer). Not part of MoCo v3's protocol.
    pub standardize: bool,
}

impl LinclsConfig {
    /// The settings [`run`] cannot use, as errors that name the command-line flag to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.crop_min > 0.0 && self.crop_min <= 1.0) {
            anyhow::bail!(
                "--crop-min {} is not a share of the image: give a value in (0, 1], e.g. 0.08",
                self.crop_min
            );
        }
        if !self.lr_sweep.is_empty() && !self.cached {
            anyhow::bail!("an lr sweep runs on cached features: add --cached, or give one --lr");
        }
        if self.standardize && !self.cached {
            anyhow::bail!("--standardize works on cached features: add --cached");
        }
        Ok(())
    }
}

/// What [`run`] did: the epochs of the final head, its base lr, and the sweep that chose it.
#[derive(Clone, Debug)]
pub struct Probed {
    pub epochs: Vec<EpochResult>,
    pub lr: f64,
    pub sweep: Vec<SweepPoint>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochResult {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub top1: f64,
    pub top5: f64,
}

/// A linear classifier `[classes, d]` + bias, trained by SGD with momentum (PyTorch semantics:
/// the first step's buffer is the gradient itself).
pub struct LinearHead {
    pub d: usize,
    pub classes: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
    mw: Vec<f32>,
    mb: Vec<f32>,
    started: bool,
}

impl LinearHead {
    pub fn new(d: usize, classes: usize, rng: &mut Rng) -> LinearHead {
        let w = (0..d * classes).map(|_| 0.01 * rng.normal()).collect();
        LinearHead {
            d,
            classes,
            w,
            b: vec![0.0; classes],
            gw: vec![0.0; d * classes],
            gb: vec![0.0; classes],
            mw: vec![0.0; d * classes],
            mb: vec![0.0; classes],
            started: false,
        }
    }

    pub fn logits(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        ops::matmul_forward(out, &x[..rows * self.d], &self.w, Some(&self.b), rows, self.d, self.classes);
    }

    /// One SGD step on mean cross-entropy; returns the loss.
    pub fn step(&mut self, x: &[f32], labels: &[u32], lr: f32, momentum: f32, scratch: &mut Vec<f32>) -> f64 {
        let (rows, c, d) = (labels.len(), self.classes, self.d);
        scratch.resize(rows * c, 0.0);
        self.logits(x, rows, scratch);
        // Gradient of the mean: scaled by 1/rows (a multiply; the code before the ops layer
        // divided, which differs in the last bit when rows is not a power of two).
        let loss = ops::crossentropy_softmax_inplace(scratch, labels, rows, c, 1.0 / rows as f32);
        ops::matmul_tn(&mut self.gw, scratch, x, c, d, rows, 1.0);
        par::col_sum(&mut self.gb, scratch, rows, c, false);
        for (p, (g, m)) in self
            .w
            .iter_mut()
            .chain(self.b.iter_mut())
            .zip(self.gw.iter().chain(&self.gb).zip(self.mw.iter_mut().chain(self.mb.iter_mut())))
        {
            *m = if self.started { momentum * *m + g } else { *g };
            *p -= lr * *m;
        }
        self.started = true;
        loss / rows as f64
    }

    /// Top-1 and top-5 accuracy (%) on features `x` with `labels`.
    pub fn accuracy(&self, x: &[f32], labels: &[u32]) -> (f64, f64) {
        let (n, c) = (labels.len(), self.classes);
        let mut logits = vec![0.0f32; n * c];
        self.logits(x, n, &mut logits);
        let hits = par::map_rows(&logits, c, |r, row| {
            let l = labels[r] as usize;
            let mut order: Vec<usize> = (0..c).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            ((order[0] == l) as usize, order.iter().take(5).any(|&k| k == l) as usize)
        });
        let (a1, a5) = hits.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (100.0 * a1 as f64 / n.max(1) as f64, 100.0 * a5 as f64 / n.max(1) as f64)
    }
}

/// Bit patterns of every backbone parameter and buffer (BatchNorm running statistics) for the
/// frozen-backbone check.
pub fn fingerprint(net: &mut Backbone) -> Vec<u32> {
    let mut v = Vec::new();
    net.visit(&mut |p| v.extend(p.w.iter().map(|x| x.to_bits())));
    net.visit_buffers(&mut |b| v.extend(b.data.iter().map(|x| x.to_bits())));
    v
}

/// The protocol's training loop: `fill(epoch, ids, feats)` provides the features of a batch of
/// training images; SGD with momentum on a per-epoch cosine; evaluation on `test` after every
/// epoch.
#[allow(clippy::too_many_arguments)]
fn train_head(
    train_labels: &[u32],
    test: &[f32],
    test_labels: &[u32],
    d: usize,
    classes: usize,
    cfg: &LinclsConfig,
    mut fill: impl FnMut(usize, &[usize], &mut [f32]) -> anyhow::Result<()>,
    mut report: impl FnMut(&EpochResult),
) -> anyhow::Result<Vec<EpochResult>> {
    let mut rng = Rng::new(cfg.seed);
    let mut head = LinearHead::new(d, classes, &mut rng);
    let init_lr = cfg.lr * cfg.batch as f64 / 256.0;
    let n = train_labels.len();
    let steps = n / cfg.batch;
    let mut feats = vec![0.0f32; cfg.batch * d];
    let mut labels = vec![0u32; cfg.batch];
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    for epoch in 0..cfg.epochs {
        let lr = init_lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / cfg.epochs as f64).cos());
        let mut order: Vec<usize> = (0..n).collect();
        Rng::derive(cfg.seed, &[epoch as u64]).shuffle(&mut order);
        let mut loss = 0.0;
        for s in 0..steps {
            let ids = &order[s * cfg.batch..(s + 1) * cfg.batch];
            for (l, &i) in labels.iter_mut().zip(ids) {
                *l = train_labels[i];
            }
            fill(epoch, ids, &mut feats)?;
            loss += head.step(&feats, &labels, lr as f32, cfg.momentum as f32, &mut scratch);
        }
        let (top1, top5) = head.accuracy(test, test_labels);
        let r = EpochResult { epoch, lr, train_loss: loss / steps.max(1) as f64, top1, top5 };
        report(&r);
        out.push(r);
    }
    Ok(out)
}

/// Train and evaluate a linear head on fixed features (`[n, d]` each): `--cached`, and the
/// raw-pixel logistic-regression baseline.
#[allow(clippy::too_many_arguments)]
pub fn probe_features(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    test_labels: &[u32],
    d: usize,
    classes: usize,
    cfg: &LinclsConfig,
    report: impl FnMut(&EpochResult),
) -> anyhow::Result<Vec<EpochResult>> {
    let standardized;
    let (train, test) = if cfg.standardize {
        let st = Standardizer::fit(train, d);
        standardized = (st.apply(train), st.apply(test));
        (&standardized.0[..], &standardized.1[..])
    } else {
        (train, test)
    };
    let fill = |_: usize, ids: &[usize], feats: &mut [f32]| {
        for (k, &i) in ids.iter().enumerate() {
            feats[k * d..(k + 1) * d].copy_from_slice(&train[i * d..(i + 1) * d]);
        }
        Ok(())
    };
    train_head(train_labels, test, test_labels, d, classes, cfg, fill, report)
}

/// One base lr's outcome in [`sweep_lr`]: validation top-1 after the last epoch.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepPoint {
    pub lr: f64,
    pub val_top1: f64,
}

/// Share of the training features [`sweep_lr`] holds out to score each lr.
pub const SWEEP_HELD_OUT: f64 = 0.1;

/// The paper sweeps the probe's learning rate; this does it without looking at the test split:
/// a seeded random [`SWEEP_HELD_OUT`] of the training features is held out, a head is trained on
/// the rest for each base lr in `cfg.lr_sweep`, and the lr with the best validation top-1 after
/// the last epoch wins (the first of equals). Returns the winner and every point.
pub fn sweep_lr(
    train: &[f32],
    train_labels: &[u32],
    d: usize,
    classes: usize,
    cfg: &LinclsConfig,
) -> anyhow::Result<(f64, Vec<SweepPoint>)> {
    let lrs = &cfg.lr_sweep;
    let n = train_labels.len();
    let n_val = ((n as f64 * SWEEP_HELD_OUT).round() as usize).clamp(1, n.saturating_sub(cfg.batch).max(1));
    if lrs.is_empty() || n_val + cfg.batch > n {
        anyhow::bail!("an lr sweep needs at least one lr and more than {} training images (has {n})", cfg.batch + 1);
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::derive(cfg.seed, &[0x5ee9]).shuffle(&mut order);
    let gather = |ids: &[usize]| {
        let mut x = Vec::with_capacity(ids.len() * d);
        for &i in ids {
            x.extend_from_slice(&train[i * d..(i + 1) * d]);
        }
        (x, ids.iter().map(|&i| train_labels[i]).collect::<Vec<u32>>())
    };
    let (vx, vy) = gather(&order[..n_val]);
    let (tx, ty) = gather(&order[n_val..]);
    let mut points = Vec::new();
    for &lr in lrs {
        let c = LinclsConfig { lr, ..cfg.clone() };
        let r = probe_features(&tx, &ty, &vx, &vy, d, classes, &c, |_| {})?;
        points.push(SweepPoint { lr, val_top1: r.last().map(|e| e.top1).unwrap_or(0.0) });
    }
    let best = points.iter().fold(&points[0], |b, p| if p.val_top1 > b.val_top1 { p } else { b });
    Ok((best.lr, points))
}

/// The cached-mode head: its base lr swept first when `cfg.lr_sweep` lists any ([`sweep_lr`]),
/// then trained on all of `train` and scored on `test` every epoch.
#[allow(clippy::too_many_arguments)]
pub fn probe_swept(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    test_labels: &[u32],
    d: usize,
    classes: usize,
    cfg: &LinclsConfig,
    report: impl FnMut(&EpochResult),
) -> anyhow::Result<Probed> {
    let (lr, sweep) =
        if cfg.lr_sweep.is_empty() { (cfg.lr, vec![]) } else { sweep_lr(train, train_labels, d, classes, cfg)? };
    let c = LinclsConfig { lr, ..cfg.clone() };
    let epochs = probe_features(train, train_labels, test, test_labels, d, classes, &c, report)?;
    Ok(Probed { epochs, lr, sweep })
}

/// Run the protocol; `report` is called after every epoch.
pub fn run(
    net: &mut Backbone,
    train: &ImageSet,
    test: &ImageSet,
    plain: &Augment,
    cfg: &LinclsConfig,
    report: impl FnMut(&EpochResult),
) -> anyhow::Result<Probed> {
    cfg.validate()?;
    let before = fingerprint(net);
    net.set_keep_activations(false);
    let d = net.feature_dim(cfg.feature).map_err(anyhow::Error::msg)?;
    let classes = train.classes.max(test.classes);
    let out = if cfg.cached {
        // Cached mode probes the L2-normalised features kNN uses (its lr is swept to suit them).
        let (test_feats, _) = features::backbone(net, test, test.len(), plain, cfg.batch, cfg.feature)?;
        let (train_feats, _) = features::backbone(net, train, train.len(), plain, cfg.batch, cfg.feature)?;
        probe_swept(&train_feats, &train.labels, &test_feats, &test.labels, d, classes, cfg, report)?
    } else {
        // The official protocol: the head sees the backbone's raw output, augmented views for
        // training and plain resized images for testing alike (no normalisation of either).
        let (test_feats, _) = features::backbone_raw(net, test, test.len(), plain, cfg.batch, cfg.feature)?;
        // The backbone in eval mode throughout, as the official `model.eval()`.
        net.set_training(false);
        let aug = Augment::crop_flip(plain.out, cfg.crop_min, true, plain.mean.clone(), plain.std.clone());
        let len = train.c * plain.out * plain.out;
        let mut x = vec![0.0f32; cfg.batch * len];
        let fill = |epoch: usize, ids: &[usize], feats: &mut [f32]| {
            par::try_for_chunks(&mut x, len, ids.len().min(cfg.batch), |j, v| -> anyhow::Result<()> {
                let i = ids[j];
                let mut r = Rng::derive(cfg.seed, &[1 + epoch as u64, i as u64]);
                let p = train.get(i)?;
                aug.view(&mut r, 0, &p.px, p.h, p.w, train.c, v);
                Ok(())
            })?;
            feats.copy_from_slice(&net.features(&x, cfg.batch, cfg.feature));
            Ok(())
        };
        let epochs = train_head(&train.labels, &test_feats, &test.labels, d, classes, cfg, fill, report)?;
        Probed { epochs, lr: cfg.lr, sweep: vec![] }
    };
    net.set_training(true);
    if fingerprint(net) != before {
        anyhow::bail!("the backbone's weights changed during linear probing: this is a bug, please report it");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_features_are_learned() {
        // Four classes on four directions with noise: a linear head must reach ~100%.
        let (d, c, n) = (8, 4, 400);
        let mut rng = Rng::new(2);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let k = i % c;
            for j in 0..d {
                x.push(if j == 2 * k { 1.0 } else { 0.0 } + 0.3 * rng.normal());
            }
            y.push(k as u32);
        }
        let mut head = LinearHead::new(d, c, &mut rng);
        let (before, _) = head.accuracy(&x, &y);
        let mut scratch = Vec::new();
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..200 {
            last = head.step(&x, &y, 0.5, 0.9, &mut scratch);
            first.get_or_insert(last);
        }
        let (after, top5) = head.accuracy(&x, &y);
        assert!(before < 60.0 && after > 98.0, "{before} -> {after}");
        assert_eq!(top5, 100.0);
        assert!(last < 0.2 * first.unwrap());
    }

    #[test]
    fn lr_sweep_prefers_a_rate_that_learns() {
        // Four classes on four directions (as above): with 1e-6 the head stays near its random
        // start in two epochs, with 1.0 it separates them; the sweep must pick 1.0 and score it
        // on held-out rows.
        let (d, c, n) = (8, 4, 800);
        let mut rng = Rng::new(5);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let k = i % c;
            for j in 0..d {
                x.push(if j == 2 * k { 1.0 } else { 0.0 } + 0.3 * rng.normal());
            }
            y.push(k as u32);
        }
        let cfg = LinclsConfig {
            epochs: 2,
            batch: 32,
            lr: 0.0,
            momentum: 0.9,
            seed: 1,
            cached: true,
            crop_min: 0.08,
            lr_sweep: vec![1e-6, 1.0],
            feature: VitFeature::Cls,
            standardize: false,
        };
        let (lr, points) = sweep_lr(&x, &y, d, c, &cfg).unwrap();
        assert_eq!(lr, 1.0);
        assert_eq!(points.len(), 2);
        assert!(points[1].val_top1 > 95.0 && points[0].val_top1 < 60.0, "{points:?}");
        assert!(sweep_lr(&x[..8], &y[..2], d, c, &cfg).is_err());
        assert!(sweep_lr(&x, &y, d, c, &LinclsConfig { lr_sweep: vec![], ..cfg }).is_err());
    }

    #[test]
    fn standardizing_rescues_a_signal_on_a_tiny_scale() {
        // The class lives in dimension 0 at a scale of 1e-3 beside unit noise in the others:
        // in 3 epochs at lr 0.1 the plain head cannot move far enough along it, the
        // standardised one separates the two classes (and its statistics are the training
        // rows', applied to the test rows too).
        let (d, n) = (4, 1024);
        let mut rng = Rng::new(9);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let k = (i % 2) as u32;
            x.push(1e-3 * (if k == 1 { 1.0 } else { -1.0 } + 0.2 * rng.normal()) + 5.0);
            for _ in 1..d {
                x.push(rng.normal());
            }
            y.push(k);
        }
        let cfg = LinclsConfig {
            epochs: 3,
            batch: 32,
            lr: 0.1,
            momentum: 0.9,
            seed: 3,
            cached: true,
            crop_min: 0.08,
            lr_sweep: vec![],
            feature: VitFeature::Cls,
            standardize: false,
        };
        let (tr, te) = (&x[..768 * d], &x[768 * d..]);
        let run = |c: &LinclsConfig| probe_features(tr, &y[..768], te, &y[768..], d, 2, c, |_| {}).unwrap();
        let plain = run(&cfg).last().unwrap().top1;
        let std = run(&LinclsConfig { standardize: true, ..cfg.clone() }).last().unwrap().top1;
        assert!(plain < 70.0 && std > 95.0, "plain {plain} standardized {std}");
        assert!(LinclsConfig { cached: false, ..cfg.clone() }.validate().is_ok());
        assert!(LinclsConfig { cached: false, standardize: true, ..cfg }.validate().is_err());
    }
}
