//! Features of a dataset from a backbone (ViT: cls token after the final norm, or one of the
//! other token features of [`VitFeature`]; ResNet: the pooled channels; L2-normalised), or from
//! raw pixels (the baseline).

use crate::data::augment::Augment;
use crate::data::ImageSet;
use crate::engine::ops;
use crate::engine::par;
use crate::models::backbone::Backbone;
pub use crate::models::vit::VitFeature;

/// Which images of `set` to use: the first `limit` (all when None).
pub fn count(set: &ImageSet, limit: Option<usize>) -> usize {
    limit.map_or(set.len(), |l| l.min(set.len()))
}

/// Normalised features of `kind` ([`VitFeature`]) of the first `n` images, resized without
/// augmentation, in batches of `batch` (use the training batch size so no buffer has to grow).
/// BatchNorms run in eval mode (running statistics, as `model.eval()`) and are left in training
/// mode afterwards. Returns the features and their width.
pub fn backbone(
    net: &mut Backbone,
    set: &ImageSet,
    n: usize,
    aug: &Augment,
    batch: usize,
    kind: VitFeature,
) -> anyhow::Result<(Vec<f32>, usize)> {
    let (mut out, d) = backbone_raw(net, set, n, aug, batch, kind)?;
    ops::l2norm_inplace(&mut out, d);
    Ok((out, d))
}

/// As [`backbone`], without the L2 normalisation: what the backbone itself outputs, as the
/// official linear probe sees it.
pub fn backbone_raw(
    net: &mut Backbone,
    set: &ImageSet,
    n: usize,
    aug: &Augment,
    batch: usize,
    kind: VitFeature,
) -> anyhow::Result<(Vec<f32>, usize)> {
    let d = net.feature_dim(kind).map_err(anyhow::Error::msg)?;
    net.set_training(false);
    let len = set.c * aug.out * aug.out;
    let mut x = vec![0.0f32; batch * len];
    let mut out = vec![0.0f32; n * d];
    // A progress bar on a terminal: a large split takes a minute on a laptop.
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let b = indicatif::ProgressBar::new(n as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("features of {prefix} [{bar:30}] {pos}/{len} ({elapsed}<{eta})")
        {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(set.name.clone());
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    for b0 in (0..n).step_by(batch) {
        let rows = batch.min(n - b0);
        let filled = par::try_for_chunks(&mut x, len, rows, |i, v| -> anyhow::Result<()> {
            let p = set.get(b0 + i)?;
            aug.plain(&p.px, p.h, p.w, set.c, v);
            Ok(())
        });
        if let Err(e) = filled {
            net.set_training(true);
            return Err(e);
        }
        let f = net.features(&x[..rows * len], rows, kind);
        out[b0 * d..(b0 + rows) * d].copy_from_slice(&f);
        bar.inc(rows as u64);
    }
    bar.finish_and_clear();
    net.set_training(true);
    Ok((out, d))
}

/// Normalised raw pixels of the first `n` images (values in [0, 1]).
pub fn pixels(set: &ImageSet, n: usize) -> anyhow::Result<(Vec<f32>, usize)> {
    if !set.files.is_empty() {
        anyhow::bail!("{}: raw-pixel features need images of one size (not an image folder)", set.name);
    }
    let d = set.h * set.w * set.c;
    let mut out: Vec<f32> = set.pixels[..n * d].iter().map(|&p| p as f32 / 255.0).collect();
    ops::l2norm_inplace(&mut out, d);
    Ok((out, d))
}

/// Per-dimension standardisation fitted on training features: each dimension shifted to zero
/// mean and scaled to unit variance (population variance plus 1e-5, BatchNorm's eps), as a
/// BatchNorm without affine parameters does (MAE's probe). The same shift and scale are then
/// applied to any split.
pub struct Standardizer {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl Standardizer {
    /// Statistics of the `[n, d]` rows of `x`.
    pub fn fit(x: &[f32], d: usize) -> Self {
        let n = (x.len() / d).max(1) as f64;
        let (mut mean, mut var) = (vec![0.0f64; d], vec![0.0f64; d]);
        for row in x.chunks_exact(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        for row in x.chunks_exact(d) {
            for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(row) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let inv_std = var.iter().map(|s| 1.0 / (s / n + 1e-5).sqrt()).collect();
        Standardizer { mean, inv_std }
    }

    /// `x` (`[rows, d]`) standardised with the fitted statistics.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = x.to_vec();
        par::for_rows(&mut out, self.mean.len(), |_, row| {
            for ((v, &m), &s) in row.iter_mut().zip(&self.mean).zip(&self.inv_std) {
                *v = ((*v as f64 - m) * s) as f32;
            }
        });
        out
    }
}
