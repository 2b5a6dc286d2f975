//! The official augmentation operations on 8-bit HWC images, computed as Pillow computes them
//! (torchvision runs them on PIL images): bilinear resampling with Pillow's support-scaled
//! triangle filter and 22-bit fixed-point weights, `Image.blend` for brightness / contrast /
//! saturation, Pillow's RGB↔HSV for hue, `convert("L")` for grayscale, Pillow's Gaussian blur
//! (three extended box blurs per axis in 24-bit fixed point) and `ImageOps.solarize`. Each is
//! checked against Pillow / torchvision on committed fixtures (`scripts/make_augment_fixtures.py`).
//!
//! Single-channel images: brightness, contrast, blur, solarize and flip apply; saturation, hue
//! and grayscale leave them unchanged, as torchvision does for PIL "L" images.

/// An 8-bit image, `[h, w, c]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub px: Vec<u8>,
}

impl Image {
    pub fn new(h: usize, w: usize, c: usize, px: Vec<u8>) -> Image {
        assert_eq!(px.len(), h * w * c, "image buffer size");
        Image { h, w, c, px }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` for the bilinear filter: per output pixel the first input index
/// and fixed-point weights.
fn coeffs(in_size: usize, out_size: usize) -> (Vec<usize>, Vec<Vec<i32>>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the bilinear filter's support is 1
    let ss = 1.0 / filterscale;
    let (mut starts, mut weights) = (Vec::with_capacity(out_size), Vec::with_capacity(out_size));
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let k: Vec<f64> = (xmin..xmax)
            .map(|x| {
                let t = ((x as f64 - center + 0.5) * ss).abs();
                if t < 1.0 {
                    1.0 - t
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = k.iter().sum();
        let fixed = k
            .iter()
            .map(|&v| {
                let v = if total != 0.0 { v / total } else { v };
                let f = v * (1u32 << PRECISION_BITS) as f64;
                if f < 0.0 {
                    (f - 0.5) as i32
                } else {
                    (f + 0.5) as i32
                }
            })
            .collect();
        starts.push(xmin);
        weights.push(fixed);
    }
    (starts, weights)
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize the crop (top, left, height, width) of `img` to `out_h` × `out_w` as Pillow's
/// `crop(...).resize(..., BILINEAR)` (torchvision's `resized_crop` on PIL images): a horizontal
/// pass then a vertical one, each rounded to 8 bits, skipped when that axis keeps its size.
pub fn resized_crop(img: &Image, crop: (usize, usize, usize, usize), out_h: usize, out_w: usize) -> Image {
    let (top, left, ch, cw) = crop;
    let c = img.c;
    let mut cur = Image::new(ch, cw, c, vec![0; ch * cw * c]);
    for y in 0..ch {
        let src = &img.px[((top + y) * img.w + left) * c..][..cw * c];
        cur.px[y * cw * c..(y + 1) * cw * c].copy_from_slice(src);
    }
    if out_w != cw {
        let (starts, weights) = coeffs(cw, out_w);
        let mut out = vec![0u8; ch * out_w * c];
        for y in 0..ch {
            for x in 0..out_w {
                for k in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &wt) in weights[x].iter().enumerate() {
                        ss += cur.px[(y * cw + starts[x] + i) * c + k] as i64 * wt as i64;
                    }
                    out[(y * out_w + x) * c + k] = clip8(ss);
                }
            }
        }
        cur = Image::new(ch, out_w, c, out);
    }
    if out_h != ch {
        let w = cur.w;
        let (starts, weights) = coeffs(ch, out_h);
        let mut out = vec![0u8; out_h * w * c];
        for y in 0..out_h {
            for x in 0..w {
                for k in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &wt) in weights[y].iter().enumerate() {
                        ss += cur.px[((starts[y] + i) * w + x) * c + k] as i64 * wt as i64;
                    }
                    out[(y * w + x) * c + k] = clip8(ss);
                }
            }
        }
        cur = Image::new(out_h, w, c, out);
    }
    cur
}

/// `Image.blend(a, b, alpha)`: a + alpha·(b − a), truncated and clipped to 8 bits.
fn blend_into(img: &mut [u8], degenerate: impl Fn(usize) -> u8, alpha: f32) {
    for (i, v) in img.iter_mut().enumerate() {
        let d = degenerate(i) as f32;
        let t = d + alpha * (*v as f32 - d);
        *v = if t <= 0.0 {
            0
        } else if t >= 255.0 {
            255
        } else {
            t as u8
        };
    }
}

/// Pillow's `convert("L")` of one RGB pixel (ITU-R 601-2 luma in 16-bit fixed point).
fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

fn grey(img: &Image) -> Vec<u8> {
    if img.c == 1 {
        img.px.clone()
    } else {
        img.px.chunks(img.c).map(luma).collect()
    }
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn brightness(img: &mut Image, f: f32) {
    blend_into(&mut img.px, |_| 0, f);
}

/// `ImageEnhance.Contrast`: blend with the mean grey level (rounded) of the image.
pub fn contrast(img: &mut Image, f: f32) {
    let g = grey(img);
    let mean = (g.iter().map(|&v| v as f64).sum::<f64>() / g.len() as f64 + 0.5) as u8;
    blend_into(&mut img.px, |_| mean, f);
}

/// `ImageEnhance.Color`: blend with the image's own grey version (no-op on grey images).
pub fn saturation(img: &mut Image, f: f32) {
    if img.c < 3 {
        return;
    }
    let g = grey(img);
    let c = img.c;
    blend_into(&mut img.px, |i| g[i / c], f);
}

/// torchvision's `adjust_hue` on PIL images: the H channel of Pillow's 8-bit HSV shifted by
/// `uint8(h·255)` (wrapping), converted back. No-op on grey images.
pub fn hue(img: &mut Image, h: f32) {
    if img.c < 3 {
        return;
    }
    let shift = ((h as f64 * 255.0) as i32).rem_euclid(256) as u8;
    for p in img.px.chunks_mut(img.c) {
        let [hh, s, v] = rgb_to_hsv(p[0], p[1], p[2]);
        let [r, g, b] = hsv_to_rgb(hh.wrapping_add(shift), s, v);
        p[..3].copy_from_slice(&[r, g, b]);
    }
}

// Pillow's `rgb2hsv_row` / `hsv2rgb` (Convert.c), with its mix of float variables and double
// literals kept: f32 where Pillow stores a float, f64 where its expression is double.
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = (maxc - minc) as f32;
    let s = cr / maxc as f32;
    let (rc, gc, bc) = ((maxc - r) as f32 / cr, (maxc - g) as f32 / cr, (maxc - b) as f32 / cr);
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + rc as f64 - bc as f64) as f32
    } else {
        (4.0 + gc as f64 - rc as f64) as f32
    };
    let h = ((h as f64 / 6.0 + 1.0) % 1.0) as f32;
    let clip = |v: f64| (v as i32).clamp(0, 255) as u8;
    [clip(h as f64 * 255.0), clip(s as f64 * 255.0), maxc]
}

fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v; 3];
    }
    let hf = h as f32 as f64 * 6.0 / 255.0;
    let i = hf.floor() as i32;
    let f = (hf - i as f64) as f32;
    let fs = (s as f32 as f64 / 255.0) as f32;
    let vf = v as f32 as f64;
    let cl = |x: f64| (x.round() as i32).clamp(0, 255) as u8;
    let p = cl(vf * (1.0 - fs as f64));
    let q = cl(vf * (1.0 - (fs * f) as f64));
    let t = cl(vf * (1.0 - fs as f64 * (1.0 - f as f64)));
    match i.rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// `RandomGrayscale`'s transform: `convert("L")` replicated to every channel.
pub fn grayscale(img: &mut Image) {
    if img.c < 3 {
        return;
    }
    let c = img.c;
    for p in img.px.chunks_mut(c) {
        let l = luma(p);
        p[..3].fill(l);
    }
}

/// `ImageOps.solarize`: values at or above the threshold are inverted.
pub fn solarize(img: &mut Image, threshold: u8) {
    for v in img.px.iter_mut() {
        if *v >= threshold {
            *v = 255 - *v;
        }
    }
}

pub fn hflip(img: &mut Image) {
    let (w, c) = (img.w, img.c);
    for row in img.px.chunks_mut(w * c) {
        for x in 0..w / 2 {
            for k in 0..c {
                row.swap(x * c + k, (w - 1 - x) * c + k);
            }
        }
    }
}

/// Pillow's box radius for a Gaussian of standard deviation `sigma` made of `passes` box blurs.
fn box_radius(sigma: f32, passes: u32) -> f32 {
    let sigma2 = sigma * sigma / passes as f32;
    let l_big = (12.0 * sigma2 + 1.0).sqrt();
    let l = ((l_big - 1.0) / 2.0).floor();
    let a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2) / (6.0 * (sigma2 - (l + 1.0) * (l + 1.0)));
    l + a
}

/// One extended box blur of a line (`stride` apart) with edge replication: a window of
/// 2·⌊r⌋ + 1 pixels weighted `ww` plus the next pixel on each side weighted `fw`, in 24-bit
/// fixed point, rounded to 8 bits.
fn box_line(line: &mut [u8], tmp: &mut Vec<u8>, n: usize, stride: usize, r: f32) {
    let ri = r as usize;
    let ww = ((1u32 << 24) as f32 / (r * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24) - (ri as u32 * 2 + 1) * ww) / 2;
    tmp.clear();
    tmp.extend((0..n).map(|i| line[i * stride]));
    let at = |i: isize| tmp[i.clamp(0, n as isize - 1) as usize] as u32;
    let mut acc: u32 = (-(ri as isize)..=ri as isize).map(|k| at(k - 1)).sum();
    for x in 0..n as isize {
        acc = acc + at(x + ri as isize) - at(x - ri as isize - 1);
        let bulk = acc * ww + (at(x - ri as isize - 1) + at(x + ri as isize + 1)) * fw;
        line[x as usize * stride] = ((bulk + (1 << 23)) >> 24) as u8;
    }
}

/// `ImageFilter.GaussianBlur(radius=sigma)`: three box blurs along every row, then three along
/// every column (each rounded to 8 bits), per channel.
pub fn gaussian_blur(img: &mut Image, sigma: f32) {
    let r = box_radius(sigma, 3);
    let (h, w, c) = (img.h, img.w, img.c);
    let mut tmp = Vec::new();
    for y in 0..h {
        for k in 0..c {
            for _ in 0..3 {
                box_line(&mut img.px[y * w * c + k..], &mut tmp, w, c, r);
            }
        }
    }
    for x in 0..w {
        for k in 0..c {
            for _ in 0..3 {
                box_line(&mut img.px[x * c + k..], &mut tmp, h, w * c, r);
            }
        }
    }
}
