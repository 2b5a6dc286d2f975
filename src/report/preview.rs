//! `mocov3 augment-preview`: a PNG grid that shows what the two-view augmentation does. One row
//! per image: the image itself, then `pairs` pairs of (view 1, view 2) as the training loader
//! draws them, enlarged by an integer factor.

use super::font::draw_text;
use super::plot::Canvas;
use crate::data::augment::Augment;
use crate::data::ImageSet;
use crate::engine::rng::Rng;
use anyhow::Result;
use std::path::Path;

pub fn augment_preview(
    set: &ImageSet,
    ids: &[usize],
    aug: &Augment,
    pairs: usize,
    seed: u64,
    path: &Path,
) -> Result<()> {
    let s = aug.out;
    let zoom = (112 / s).max(1);
    let cell = (s * zoom) as i64;
    let (gap, top) = (6i64, 24i64);
    let cols = 1 + 2 * pairs;
    let width = cols as i64 * (cell + gap) + (pairs as i64) * gap + gap;
    let height = top + ids.len() as i64 * (cell + gap) + gap;
    let mut c = Canvas::new(width, height);
    let col_x = |k: usize| gap + k as i64 * (cell + gap) + (k.saturating_sub(1) / 2) as i64 * gap;
    draw_text(&mut c, col_x(0), 8, "image", 2, [0, 0, 0]);
    for p in 0..pairs {
        draw_text(&mut c, col_x(1 + 2 * p), 8, "view 1", 2, [0, 0, 0]);
        draw_text(&mut c, col_x(2 + 2 * p), 8, "view 2", 2, [0, 0, 0]);
    }
    let plain = Augment::crop_flip(s, 1.0, false, aug.mean.clone(), aug.std.clone());
    let mut buf = vec![0.0f32; set.c * s * s];
    for (row, &id) in ids.iter().enumerate() {
        let y = top + row as i64 * (cell + gap);
        let img = set.get(id)?;
        plain.plain(&img.px, img.h, img.w, set.c, &mut buf);
        paint(&mut c, &buf, aug, col_x(0), y, zoom);
        // The loader's per-sample stream for (seed, pair, image): what training would draw.
        for p in 0..pairs {
            let mut rng = Rng::derive(seed, &[p as u64, id as u64]);
            for v in 0..2 {
                aug.view(&mut rng, v, &img.px, img.h, img.w, set.c, &mut buf);
                paint(&mut c, &buf, aug, col_x(1 + 2 * p + v), y, zoom);
            }
        }
    }
    c.save_png(path)
}

/// Undo the normalisation of a CHW view and draw it (grey replicated to RGB).
fn paint(c: &mut Canvas, x: &[f32], aug: &Augment, x0: i64, y0: i64, zoom: usize) {
    let (s, ch) = (aug.out, aug.mean.len());
    for yy in 0..s {
        for xx in 0..s {
            let mut rgb = [0u8; 3];
            for (k, v) in rgb.iter_mut().enumerate() {
                let kc = k.min(ch - 1);
                let f = x[(kc * s + yy) * s + xx] * aug.std[kc] + aug.mean[kc];
                *v = (f * 255.0).round().clamp(0.0, 255.0) as u8;
            }
            for dy in 0..zoom {
                for dx in 0..zoom {
                    c.set(x0 + (xx * zoom + dx) as i64, y0 + (yy * zoom + dy) as i64, rgb);
                }
            }
        }
    }
}
