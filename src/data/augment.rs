//! The two-view augmentation of `pretrain` (and the crop + flip of the linear probe).
//!
//! `official` is `main_moco.py`'s asymmetric BYOL pipeline, per view: RandomResizedCrop
//! (torchvision's parameter sampling: scale (crop_min, 1), ratio (3/4, 4/3), ten attempts then
//! the centre-crop fallback; Pillow's bilinear resampling), ColorJitter(0.4, 0.4, 0.2, 0.1) with
//! p 0.8 in a random order, RandomGrayscale p 0.2, GaussianBlur σ ~ U(blur_sigma) with p 1.0 on
//! view 1 and 0.1 on view 2, Solarize p 0.2 on view 2 only, horizontal flip p 0.5, then
//! normalisation. The operations are Pillow's own, on 8-bit images (see `ops`).
//!
//! `crop-flip` is RandomResizedCrop (float bilinear resampling straight to the normalised output)
//! and the flip only.

use super::ops::{self, Image};
use crate::engine::rng::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentKind {
    Official,
    CropFlip,
}

#[derive(Clone, Debug)]
pub struct Augment {
    pub out: usize,
    pub crop_min: f64,
    pub flip: bool,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub kind: AugmentKind,
    /// Range of the Gaussian blur's σ in pixels (official: 0.1 to 2.0 at 224 px).
    pub blur_sigma: (f32, f32),
}

/// torchvision's `RandomResizedCrop.get_params`: returns (top, left, height, width).
pub fn rrc_params(
    rng: &mut Rng,
    h: usize,
    w: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let i = rng.below(h - ch + 1);
            let j = rng.below(w - cw + 1);
            return (i, j, ch, cw);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, ((w as f64 / ratio.0).round() as usize).min(h))
    } else if in_ratio > ratio.1 {
        (((h as f64 * ratio.1).round() as usize).min(w), h)
    } else {
        (w, h)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

impl Augment {
    /// Crop + flip (no colour operations): the linear probe's training transform, and with
    /// `crop_min` 1 and no flip the plain resize used for evaluation.
    pub fn crop_flip(out: usize, crop_min: f64, flip: bool, mean: Vec<f32>, std: Vec<f32>) -> Augment {
        Augment { out, crop_min, flip, mean, std, kind: AugmentKind::CropFlip, blur_sigma: (0.1, 2.0) }
    }

    /// View `which` (0 or 1: the pipelines differ in blur and solarize) of an HWC byte image,
    /// written as normalised CHW f32 into `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn view(&self, rng: &mut Rng, which: usize, img: &[u8], h: usize, w: usize, c: usize, out: &mut [f32]) {
        let crop = rrc_params(rng, h, w, (self.crop_min, 1.0), (3.0 / 4.0, 4.0 / 3.0));
        if self.kind == AugmentKind::CropFlip {
            let flip = self.flip && rng.uniform_f64() < 0.5;
            self.render(img, w, c, crop, flip, out);
            return;
        }
        let mut im = ops::resized_crop_px(&img[..h * w * c], w, c, crop, self.out, self.out);
        if rng.uniform_f64() < 0.8 {
            color_jitter(rng, &mut im);
        }
        if rng.uniform_f64() < 0.2 {
            ops::grayscale(&mut im);
        }
        let (p_blur, p_solarize) = if which == 0 { (1.0, 0.0) } else { (0.1, 0.2) };
        if rng.uniform_f64() < p_blur {
            let s = rng.uniform(self.blur_sigma.0 as f64, self.blur_sigma.1 as f64) as f32;
            ops::gaussian_blur(&mut im, s);
        }
        if rng.uniform_f64() < p_solarize {
            ops::solarize(&mut im, 128);
        }
        if self.flip && rng.uniform_f64() < 0.5 {
            ops::hflip(&mut im);
        }
        self.normalize(&im, out);
    }

    /// ToTensor + Normalize: HWC bytes → CHW floats.
    pub fn normalize(&self, im: &Image, out: &mut [f32]) {
        let (hw, c) = (im.h * im.w, im.c);
        for k in 0..c {
            let (m, s) = (self.mean[k], self.std[k]);
            // The 256 possible values, each computed as the direct formula would.
            let lut: Vec<f32> = (0..256).map(|p| (p as f32 / 255.0 - m) / s).collect();
            for (o, p) in out[k * hw..(k + 1) * hw].iter_mut().zip(im.px[k..].iter().step_by(c)) {
                *o = lut[*p as usize];
            }
        }
    }

    /// Bilinear resampling (half-pixel centres) of the crop (top, left, height, width) to the
    /// output size, optionally mirrored, then normalised.
    pub fn render(
        &self,
        img: &[u8],
        w: usize,
        c: usize,
        crop: (usize, usize, usize, usize),
        flip: bool,
        out: &mut [f32],
    ) {
        let s = self.out;
        let (top, left, ch, cw) = crop;
        let (sy, sx) = (ch as f32 / s as f32, cw as f32 / s as f32);
        for y in 0..s {
            let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (ch - 1) as f32);
            let y0 = fy.floor() as usize;
            let y1 = (y0 + 1).min(ch - 1);
            let wy = fy - y0 as f32;
            for x in 0..s {
                let xx = if flip { s - 1 - x } else { x };
                let fx = ((xx as f32 + 0.5) * sx - 0.5).clamp(0.0, (cw - 1) as f32);
                let x0 = fx.floor() as usize;
                let x1 = (x0 + 1).min(cw - 1);
                let wx = fx - x0 as f32;
                for k in 0..c {
                    let p = |yy: usize, xx: usize| img[((top + yy) * w + left + xx) * c + k] as f32;
                    let v = (1.0 - wy) * ((1.0 - wx) * p(y0, x0) + wx * p(y0, x1))
                        + wy * ((1.0 - wx) * p(y1, x0) + wx * p(y1, x1));
                    out[(k * s + y) * s + x] = (v / 255.0 - self.mean[k]) / self.std[k];
                }
            }
        }
    }

    /// The un-augmented image at the output size (for evaluation), CHW normalised: a square image
    /// is resized whole (identity at the output size: Fashion-MNIST, CIFAR); any other takes the
    /// central square of 224/256 of its shorter side, as the official Resize(256) + CenterCrop(224).
    pub fn plain(&self, img: &[u8], h: usize, w: usize, c: usize, out: &mut [f32]) {
        if h == w {
            self.render(img, w, c, (0, 0, h, w), false, out);
        } else {
            let side = ((h.min(w) as f64 * 224.0 / 256.0).round() as usize).max(1);
            let crop = ((h - side) / 2, (w - side) / 2, side, side);
            self.normalize(&ops::resized_crop_px(&img[..h * w * c], w, c, crop, self.out, self.out), out);
        }
    }
}

/// torchvision's ColorJitter(0.4, 0.4, 0.2, 0.1): brightness and contrast factors in
/// [0.6, 1.4], saturation in [0.8, 1.2], hue in [-0.1, 0.1], applied in a random order.
fn color_jitter(rng: &mut Rng, im: &mut Image) {
    let mut order = [0usize, 1, 2, 3];
    rng.shuffle(&mut order);
    let b = rng.uniform(0.6, 1.4) as f32;
    let c = rng.uniform(0.6, 1.4) as f32;
    let s = rng.uniform(0.8, 1.2) as f32;
    let h = rng.uniform(-0.1, 0.1) as f32;
    for op in order {
        match op {
            0 => ops::brightness(im, b),
            1 => ops::contrast(im, c),
            2 => ops::saturation(im, s),
            _ => ops::hue(im, h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrc_stays_inside_and_respects_scale() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let (i, j, h, w) = rrc_params(&mut rng, 28, 28, (0.2, 1.0), (0.75, 4.0 / 3.0));
            assert!(i + h <= 28 && j + w <= 28 && h > 0 && w > 0);
            let frac = (h * w) as f64 / 784.0;
            assert!(frac > 0.15 && frac <= 1.0, "{frac}");
        }
        // Impossible scale forces the centre-crop fallback.
        let (i, j, h, w) = rrc_params(&mut rng, 10, 40, (5.0, 6.0), (0.75, 4.0 / 3.0));
        assert_eq!((h, w), (10, 13));
        assert_eq!((i, j), (0, 13));
    }

    #[test]
    fn full_crop_is_identity_and_flip_mirrors() {
        let a = Augment::crop_flip(4, 1.0, false, vec![0.5], vec![0.25]);
        let img: Vec<u8> = (0..16).map(|i| (i * 10) as u8).collect();
        let mut out = vec![0.0; 16];
        a.render(&img, 4, 1, (0, 0, 4, 4), false, &mut out);
        for (o, &v) in out.iter().zip(&img) {
            assert!((o - (v as f32 / 255.0 - 0.5) / 0.25).abs() < 1e-5);
        }
        a.render(&img, 4, 1, (0, 0, 4, 4), true, &mut out);
        assert!((out[0] - (30.0 / 255.0 - 0.5) / 0.25).abs() < 1e-5);
        // A 2x2 crop upsampled to 4x4 keeps its corner values.
        a.render(&img, 4, 1, (1, 1, 2, 2), false, &mut out);
        assert!((out[0] - (50.0 / 255.0 - 0.5) / 0.25).abs() < 1e-5);
        assert!((out[15] - (100.0 / 255.0 - 0.5) / 0.25).abs() < 1e-5);
    }
}
