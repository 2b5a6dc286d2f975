//! Convolution as im2col + GEMM on NHWC activations (`[images, h, w, chans]` row-major), the
//! layout change from the data pipeline's NCHW, and the patch embedding's im2col (kernel =
//! stride = patch, on NCHW images). The convolution's columns are ordered (kh, kw, in), each
//! kernel position one contiguous run of channels; the convolution turns PyTorch's weight layout
//! `[out, in, kh, kw]` (which checkpoints keep) into that order with [`swap_inner_axes`].

use crate::engine::tensor::Tensor;
use crate::engine::{ensure, par};
use rayon::prelude::*;

/// Geometry of a 2D convolution on NHWC input: `images` × `h` × `w` × `c` in, kernel `k`, stride
/// `s`, zero padding `p`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvShape {
    pub images: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
}

impl ConvShape {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        ((self.h + 2 * self.p - self.k) / self.s + 1, (self.w + 2 * self.p - self.k) / self.s + 1)
    }
}

/// Images `[n, c, hw]` (NCHW) into `out` as NHWC `[n, hw, c]` (grown as needed).
pub fn nchw_to_nhwc(out: &mut Tensor, inp: &[f32], n: usize, c: usize, hw: usize) {
    ensure(out, n * hw * c);
    for img in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(img * hw + p) * c + ch] = inp[(img * c + ch) * hw + p];
            }
        }
    }
}

/// The im2col columns of `inp` (NHWC, shape `g`) into `cols` `[images·oh·ow, k·k·c]` (grown as
/// needed): one row per output pixel, ordered (kh, kw, in), so that each kernel position is one
/// contiguous run of an input pixel's channels. (PyTorch's weight `[out, in, kh, kw]` is ordered
/// (in, kh, kw): [`swap_inner_axes`] turns it into this order.)
pub fn im2col(cols: &mut Tensor, inp: &[f32], g: ConvShape) {
    let ConvShape { h, w, c, k, s, p, .. } = g;
    let (oh, ow) = g.out_hw();
    let (rows, kk) = (g.images * oh * ow, c * k * k);
    let x = inp;
    ensure(cols, rows * kk);
    par::for_rows(&mut cols[..rows * kk], kk, |r, col| {
        let (n, rem) = (r / (oh * ow), r % (oh * ow));
        let (oy, ox) = (rem / ow, rem % ow);
        for ki in 0..k {
            let iy = (oy * s + ki) as isize - p as isize;
            for kj in 0..k {
                let ix = (ox * s + kj) as isize - p as isize;
                let dst = &mut col[(ki * k + kj) * c..][..c];
                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                    dst.copy_from_slice(&x[((n * h + iy as usize) * w + ix as usize) * c..][..c]);
                } else {
                    dst.fill(0.0);
                }
            }
        }
    });
}

/// Backward of [`im2col`]: the column gradients `dcols` summed back onto the input pixels,
/// `dinp` `[images, h, w, c]` written. Each image's columns touch only that image's pixels, in a
/// fixed order.
pub fn col2im(dinp: &mut [f32], dcols: &[f32], g: ConvShape) {
    let ConvShape { images, h, w, c, k, s, p } = g;
    let (oh, ow) = g.out_hw();
    let kk = c * k * k;
    let dc = &dcols[..images * oh * ow * kk];
    dinp[..images * h * w * c].par_chunks_mut(h * w * c).enumerate().for_each(|(n, img)| {
        img.fill(0.0);
        for oy in 0..oh {
            for ox in 0..ow {
                let col = &dc[((n * oh + oy) * ow + ox) * kk..][..kk];
                for ki in 0..k {
                    let iy = (oy * s + ki) as isize - p as isize;
                    if iy < 0 || iy as usize >= h {
                        continue;
                    }
                    for kj in 0..k {
                        let ix = (ox * s + kj) as isize - p as isize;
                        if ix < 0 || ix as usize >= w {
                            continue;
                        }
                        let dst = &mut img[(iy as usize * w + ix as usize) * c..][..c];
                        crate::engine::vec::add_assign_serial(dst, &col[(ki * k + kj) * c..][..c]);
                    }
                }
            }
        }
    });
}

/// `out` `[batch, b, a]` = `inp` `[batch, a, b]` with the two inner axes swapped, written: a
/// convolution weight `[out, in, kh·kw]` (PyTorch's order) into the im2col order `[out, kh·kw,
/// in]`, and its gradient back.
pub fn swap_inner_axes(out: &mut [f32], inp: &[f32], batch: usize, a: usize, b: usize) {
    let n = batch * a * b;
    assert!(inp.len() >= n && out.len() >= n, "swap_inner_axes: buffers shorter than {batch}x{a}x{b}");
    for (o, i) in out[..n].chunks_exact_mut(a * b).zip(inp[..n].chunks_exact(a * b)) {
        for (x, row) in i.chunks_exact(b).enumerate() {
            for (y, &v) in row.iter().enumerate() {
                o[y * a + x] = v;
            }
        }
    }
}

/// Patches of NCHW images `inp` `[batch, c, img, img]` into `cols` `[batch·g², c·p·p]` (g = img /
/// p; row order (image, patch row, patch column), column order (c, kh, kw)).
pub fn patchify(cols: &mut Tensor, inp: &[f32], batch: usize, c: usize, img: usize, p: usize) {
    let (s, g) = (img, img / p);
    assert_eq!(inp.len(), batch * c * s * s, "patch embedding: image shape");
    let k = c * p * p;
    let rows = batch * g * g;
    ensure(cols, rows * k);
    par::for_rows(&mut cols[..rows * k], k, |r, row| {
        let (b, pi) = (r / (g * g), r % (g * g));
        let (gi, gj) = (pi / g, pi % g);
        for ch in 0..c {
            for ki in 0..p {
                let src = ((b * c + ch) * s + gi * p + ki) * s + gj * p;
                row[(ch * p + ki) * p..(ch * p + ki + 1) * p].copy_from_slice(&inp[src..src + p]);
            }
        }
    });
}
