//! `mocov3 bench data`: how fast the official two-view pipeline turns JPEG files into training
//! input (decode, then both views at the output size: crop, colour jitter, grayscale, blur,
//! solarize, flip, normalise), in two-view images per second per core. The peer
//! `scripts/bench_data_torch.py` runs torchvision + PIL's official pipeline on the same files.

use super::augment::{Augment, AugmentKind};
use super::folder;
use crate::engine::rng::Rng;
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Write `n` JPEG files of ImageNet-like sizes (about 500 × 375, smooth structure plus noise)
/// into `dir/bench/` unless they are there; returns their paths.
pub fn generate(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    let sub = dir.join("bench");
    std::fs::create_dir_all(&sub).with_context(|| format!("cannot create {}", sub.display()))?;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let p = sub.join(format!("{i:05}.jpg"));
            if !p.exists() {
                let mut rng = Rng::derive(11, &[i as u64]);
                let (w, h) = (400 + rng.below(200) as u32, 300 + rng.below(150) as u32);
                let (fx, fy, ph) = (rng.uniform(0.01, 0.05), rng.uniform(0.01, 0.05), rng.uniform(0.0, 6.0));
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let v = |k: f64| {
                        let s = ((x as f64 * fx + k + ph).sin() * (y as f64 * fy - k).cos() + 1.0) * 110.0;
                        (s + ((x * 31 + y * 17 + k as u32 * 7) % 23) as f64) as u8
                    };
                    image::Rgb([v(0.0), v(1.0), v(2.0)])
                });
                img.save_with_format(&p, image::ImageFormat::Jpeg)
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            Ok(p)
        })
        .collect()
}

pub struct DataBench {
    pub images: usize,
    pub secs: f64,
    pub threads: usize,
}

impl DataBench {
    pub fn per_core(&self) -> f64 {
        self.images as f64 / self.secs / self.threads as f64
    }
}

/// Decode each file once and draw its two views at `size` (the official pipeline, crop scale
/// 0.08–1, blur σ 0.1–2), over `rounds` passes on the current thread pool; the first pass warms
/// the file cache and is not timed.
pub fn run(files: &[PathBuf], size: usize, rounds: usize) -> Result<DataBench> {
    let aug = Augment {
        out: size,
        crop_min: 0.08,
        flip: true,
        mean: super::IMAGENET_MEAN.to_vec(),
        std: super::IMAGENET_STD.to_vec(),
        kind: AugmentKind::Official,
        blur_sigma: (0.1, 2.0),
    };
    let len = 3 * size * size;
    let pass = |r: usize| -> Result<()> {
        files.par_iter().enumerate().try_for_each_init(
            || vec![0.0f32; 2 * len],
            |out, (i, f)| -> Result<()> {
                let (px, h, w) = folder::decode(f)?;
                let mut rng = Rng::derive(r as u64, &[i as u64]);
                let (v1, v2) = out.split_at_mut(len);
                aug.view(&mut rng, 0, &px, h, w, 3, v1);
                aug.view(&mut rng, 1, &px, h, w, 3, v2);
                Ok(())
            },
        )
    };
    pass(0)?;
    let t0 = Instant::now();
    for r in 1..=rounds {
        pass(r)?;
    }
    Ok(DataBench {
        images: files.len() * rounds,
        secs: t0.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
    })
}
