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

/// Pillow accumulates in 32-bit integers (weights sum to 2^22, so 255 · 2^22 fits).
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize the crop (top, left, height, width) of `img` to `out_h` × `out_w` as Pillow's
/// `crop(...).resize(..., BILINEAR)` (torchvision's `resized_crop` on PIL images): a horizontal
/// pass then a vertical one, each rounded to 8 bits, skipped when that axis keeps its size.
pub fn resized_crop(img: &Image, crop: (usize, usize, usize, usize), out_h: usize, out_w: usize) -> Image {
    resized_crop_px(&img.px, img.w, img.c, crop, out_h, out_w)
}

/// [`resized_crop`] of an image given as bytes `[_, w, c]`, read in place.
pub fn resized_crop_px(
    px: &[u8],
    w: usize,
    c: usize,
    crop: (usize, usize, usize, usize),
    out_h: usize,
    out_w: usize,
) -> Image {
    let (top, left, ch, cw) = crop;
    let (base, stride) = ((top * w + left) * c, w * c);
    let mut cur = if out_w != cw {
        let (starts, weights) = coeffs(cw, out_w);
        let mut out = vec![0u8; ch * out_w * c];
        let src = &px[base..];
        match c {
            1 => hpass::<1>(src, stride, &mut out, ch, out_w, &starts, &weights),
            3 => hpass::<3>(src, stride, &mut out, ch, out_w, &starts, &weights),
            _ => hpass_any(src, stride, &mut out, ch, out_w, c, &starts, &weights),
        }
        Image::new(ch, out_w, c, out)
    } else {
        let mut cur = Image::new(ch, cw, c, vec![0; ch * cw * c]);
        for y in 0..ch {
            cur.px[y * cw * c..(y + 1) * cw * c].copy_from_slice(&px[base + y * stride..][..cw * c]);
        }
        cur
    };
    if out_h != ch {
        // Whole rows at a time: every output row is a weighted sum of input rows.
        let rl = cur.w * c;
        let (starts, weights) = coeffs(ch, out_h);
        let mut out = vec![0u8; out_h * rl];
        let mut acc = vec![0i32; rl];
        for y in 0..out_h {
            acc.fill(1 << (PRECISION_BITS - 1));
            for (i, &wt) in weights[y].iter().enumerate() {
                let src = &cur.px[(starts[y] + i) * rl..][..rl];
                for (a, &p) in acc.iter_mut().zip(src) {
                    *a += p as i32 * wt;
                }
            }
            for (o, &a) in out[y * rl..(y + 1) * rl].iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
        cur = Image::new(out_h, cur.w, c, out);
    }
    cur
}

/// The horizontal resampling pass for `C` channels (a fixed-size accumulator).
fn hpass<const C: usize>(
    src: &[u8],
    stride: usize,
    out: &mut [u8],
    rows: usize,
    out_w: usize,
    starts: &[usize],
    weights: &[Vec<i32>],
) {
    for y in 0..rows {
        let row = &src[y * stride..];
        for x in 0..out_w {
            let mut acc = [1i32 << (PRECISION_BITS - 1); C];
            let px = &row[starts[x] * C..];
            for (i, &wt) in weights[x].iter().enumerate() {
                for k in 0..C {
                    acc[k] += px[i * C + k] as i32 * wt;
                }
            }
            for k in 0..C {
                out[(y * out_w + x) * C + k] = clip8(acc[k]);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn hpass_any(
    src: &[u8],
    stride: usize,
    out: &mut [u8],
    rows: usize,
    out_w: usize,
    c: usize,
    starts: &[usize],
    weights: &[Vec<i32>],
) {
    let mut acc = vec![0i32; c];
    for y in 0..rows {
        let row = &src[y * stride..];
        for x in 0..out_w {
            acc.fill(1 << (PRECISION_BITS - 1));
            for (i, &wt) in weights[x].iter().enumerate() {
                for (a, &p) in acc.iter_mut().zip(&row[(starts[x] + i) * c..][..c]) {
                    *a += p as i32 * wt;
                }
            }
            for (o, &a) in out[(y * out_w + x) * c..][..c].iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
    }
}

/// `Image.blend(a, b, alpha)` of one value: a + alpha·(b − a), truncated and clipped to 8 bits.
#[inline]
fn blend1(d: f32, v: u8, alpha: f32) -> u8 {
    // Clamping then truncating equals Pillow's three cases, without branches.
    (d + alpha * (v as f32 - d)).clamp(0.0, 255.0) as u8
}

/// `Image.blend` with a constant image.
fn blend_into(img: &mut [u8], degenerate: u8, alpha: f32) {
    let d = degenerate as f32;
    for v in img.iter_mut() {
        *v = blend1(d, *v, alpha);
    }
}

/// Pillow's `convert("L")` of one RGB pixel (ITU-R 601-2 luma in 16-bit fixed point).
pub fn luma(p: &[u8]) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn brightness(img: &mut Image, f: f32) {
    blend_into(&mut img.px, 0, f);
}

/// `ImageEnhance.Contrast`: blend with the mean grey level (rounded) of the image.
pub fn contrast(img: &mut Image, f: f32) {
    let total: u64 = if img.c == 1 {
        img.px.iter().map(|&v| v as u64).sum()
    } else {
        img.px.chunks(img.c).map(|p| luma(p) as u64).sum()
    };
    let mean = (total as f64 / (img.h * img.w) as f64 + 0.5) as u8;
    blend_into(&mut img.px, mean, f);
}

/// `ImageEnhance.Color`: blend with the image's own grey version (no-op on grey images).
pub fn saturation(img: &mut Image, f: f32) {
    if img.c < 3 {
        return;
    }
    let c = img.c;
    for p in img.px.chunks_mut(c) {
        let l = luma(p) as f32;
        for v in p[..3].iter_mut() {
            *v = blend1(l, *v, f);
        }
    }
}

/// torchvision's `adjust_hue` on PIL images: the H channel of Pillow's 8-bit HSV shifted by
/// `uint8(h·255)` (wrapping), converted back. No-op on grey images.
pub fn hue(img: &mut Image, h: f32) {
    if img.c < 3 {
        return;
    }
    let shift = ((h as f64 * 255.0) as i32).rem_euclid(256) as u8;
    let c = img.c;
    let table = hue_table();
    // Chunks of pixels as separate channel arrays, so the RGB → HSV loop can vectorise.
    const N: usize = 256;
    let (mut r, mut g, mut b) = ([0u8; N], [0u8; N], [0u8; N]);
    let mut hsv = [[0u8; 3]; N];
    for chunk in img.px.chunks_mut(N * c) {
        let n = chunk.len() / c;
        for (i, p) in chunk.chunks(c).enumerate() {
            (r[i], g[i], b[i]) = (p[0], p[1], p[2]);
        }
        for i in 0..N {
            hsv[i] = rgb_to_hsv(r[i], g[i], b[i]);
        }
        let mut rgb = [[0u8; 3]; N];
        for i in 0..N {
            let [hh, s, v] = hsv[i];
            rgb[i] = hsv_to_rgb(&table, hh.wrapping_add(shift), s, v);
        }
        for (p, out) in chunk.chunks_mut(c).zip(&rgb[..n]) {
            p[..3].copy_from_slice(out);
        }
    }
}

// Pillow's `rgb2hsv_row` / `hsv2rgb` (Convert.c), with its mix of float variables and double
// literals kept: f32 where Pillow stores a float, f64 where its expression is double.
#[inline]
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    // Written without branches (every candidate computed, then selected): the same operations
    // as Pillow's on the selected path, so the same bits, and no mispredicted branches.
    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
    let cr = (maxc - minc) as f32;
    let s = cr / maxc.max(1) as f32;
    let (rc, gc, bc) = ((maxc - r) as f32 / cr, (maxc - g) as f32 / cr, (maxc - b) as f32 / cr);
    let h1 = bc - gc;
    let h2 = (2.0 + rc as f64 - bc as f64) as f32;
    let h3 = (4.0 + gc as f64 - rc as f64) as f32;
    let h = if r == maxc {
        h1
    } else if g == maxc {
        h2
    } else {
        h3
    };
    // fmod(x, 1) for x in [5/6, 2): exact either way.
    let x = h as f64 / 6.0 + 1.0;
    let h = (if x >= 1.0 { x - 1.0 } else { x }) as f32;
    let clip = |v: f64| (v as i32).clamp(0, 255) as u8;
    let grey = maxc == minc;
    [if grey { 0 } else { clip(h as f64 * 255.0) }, if grey { 0 } else { clip(s as f64 * 255.0) }, maxc]
}

/// Pillow's `hsv2rgb` pieces that depend on the hue byte alone: the sextant `i % 6` and the
/// remainder `f`, tabulated once per call of [`hue`].
fn hue_table() -> [(u8, f32); 256] {
    let mut t = [(0u8, 0.0f32); 256];
    for (h, e) in t.iter_mut().enumerate() {
        let hf = h as f32 as f64 * 6.0 / 255.0;
        let i = hf.floor() as i32;
        *e = (i.rem_euclid(6) as u8, (hf - i as f64) as f32);
    }
    t
}

#[inline]
fn hsv_to_rgb(table: &[(u8, f32); 256], h: u8, s: u8, v: u8) -> [u8; 3] {
    let (i, f) = table[h as usize];
    let fs = (s as f32 as f64 / 255.0) as f32;
    let vf = v as f32 as f64;
    // C's round() (half away from zero) for x >= 0, without a library call: exact, since
    // x - trunc(x) is exact.
    let cl = |x: f64| {
        let t = x.trunc();
        let r = if x - t >= 0.5 { t + 1.0 } else { t };
        (r as i32).clamp(0, 255) as u8
    };
    let p = cl(vf * (1.0 - fs as f64));
    let q = cl(vf * (1.0 - (fs * f) as f64));
    let t = cl(vf * (1.0 - fs as f64 * (1.0 - f as f64)));
    // Pillow's switch on the sextant, as selects.
    let r = match i {
        0 | 5 => v,
        1 => q,
        2 | 3 => p,
        _ => t,
    };
    let g = match i {
        0 => t,
        1 | 2 => v,
        3 => q,
        _ => p,
    };
    let b = match i {
        0 | 1 => p,
        2 => t,
        3 | 4 => v,
        _ => q,
    };
    if s == 0 {
        [v; 3]
    } else {
        [r, g, b]
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

/// `ImageFilter.GaussianBlur(radius=sigma)`: three box blurs along every row, then three along
/// every column (each rounded to 8 bits), per channel.
pub fn gaussian_blur(img: &mut Image, sigma: f32) {
    let r = box_radius(sigma, 3);
    let (h, w, c) = (img.h, img.w, img.c);
    // Rows first (as Pillow): on the transposed image they are columns.
    let mut t = transpose(&img.px, h, w, c);
    box_columns3(&mut t, w, h * c, r);
    img.px = transpose(&t, w, h, c);
    box_columns3(&mut img.px, h, w * c, r);
}

/// `[h, w, c]` → `[w, h, c]`.
fn transpose(px: &[u8], h: usize, w: usize, c: usize) -> Vec<u8> {
    let mut out = vec![0u8; px.len()];
    for y in 0..h {
        for x in 0..w {
            out[(x * h + y) * c..][..c].copy_from_slice(&px[(y * w + x) * c..][..c]);
        }
    }
    out
}

/// Three extended box blurs down every column (edges replicated): each a window of 2·⌊r⌋ + 1
/// pixels weighted `ww` plus the next pixel on each side weighted `fw`, in 24-bit fixed point,
/// rounded to 8 bits after each pass as Pillow does; a whole row at a time (one running sum per
/// column).
fn box_columns3(px: &mut [u8], h: usize, rl: usize, r: f32) {
    let ri = r as usize;
    let ww = ((1u32 << 24) as f32 / (r * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24) - (ri as u32 * 2 + 1) * ww) / 2;
    let pad = ri + 1;
    let rows = h + 2 * pad;
    let mut src = vec![0u32; rows * rl];
    let mut dst = vec![0u32; rows * rl];
    for (d, &p) in src[pad * rl..(pad + h) * rl].iter_mut().zip(px.iter()) {
        *d = p as u32;
    }
    let mut acc = vec![0u32; rl];
    for _ in 0..3 {
        for y in 0..pad {
            src.copy_within(pad * rl..(pad + 1) * rl, y * rl);
            src.copy_within((pad + h - 1) * rl..(pad + h) * rl, (pad + h + y) * rl);
        }
        acc.fill(0);
        for row in src[(pad - 1 - ri) * rl..(pad + ri) * rl].chunks(rl) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        for y in 0..h {
            let cy = pad + y;
            let add = &src[(cy + ri) * rl..][..rl];
            let sub = &src[(cy - ri - 1) * rl..][..rl];
            let far = &src[(cy + ri + 1) * rl..][..rl];
            let out = &mut dst[cy * rl..][..rl];
            for j in 0..rl {
                acc[j] = acc[j] + add[j] - sub[j];
                out[j] = (acc[j] * ww + (sub[j] + far[j]) * fw + (1 << 23)) >> 24;
            }
        }
        std::mem::swap(&mut src, &mut dst);
    }
    for (p, &v) in px.iter_mut().zip(&src[pad * rl..(pad + h) * rl]) {
        *p = v as u8;
    }
}
