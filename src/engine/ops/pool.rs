//! Pooling on NHWC activations: max pooling (PyTorch's `MaxPool2d`: padding never wins) and the
//! global average pool that ends a ResNet.

use rayon::prelude::*;

/// Max pool of `inp` `[images, h, w, c]` with kernel `k`, stride `s`, padding `p`: `out`
/// `[images, oh, ow, c]` and the input index of each maximum, `argmax`, written.
#[allow(clippy::too_many_arguments)]
pub fn maxpool_forward(
    out: &mut [f32],
    argmax: &mut [u32],
    inp: &[f32],
    (images, h, w, c): (usize, usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
) {
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let per = oh * ow * c;
    let x = inp;
    out[..images * per].par_chunks_mut(per).zip(argmax[..images * per].par_chunks_mut(per)).enumerate().for_each(
        |(n, (y, am))| {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let (mut best, mut at) = (f32::NEG_INFINITY, 0u32);
                        for ki in 0..k {
                            for kj in 0..k {
                                let (iy, ix) =
                                    ((oy * s + ki) as isize - p as isize, (ox * s + kj) as isize - p as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    let i = ((n * h + iy as usize) * w + ix as usize) * c + ch;
                                    if x[i] > best {
                                        best = x[i];
                                        at = i as u32;
                                    }
                                }
                            }
                        }
                        y[(oy * ow + ox) * c + ch] = best;
                        am[(oy * ow + ox) * c + ch] = at;
                    }
                }
            }
        },
    );
}

/// Backward of [`maxpool_forward`]: `dinp` `[images, h, w, c]` written, each output's gradient at
/// the position of its maximum; `out_len` = oh·ow·c per image.
pub fn maxpool_backward(
    dinp: &mut [f32],
    dout: &[f32],
    argmax: &[u32],
    (images, h, w, c): (usize, usize, usize, usize),
    out_len: usize,
) {
    let per = out_len;
    dinp[..images * h * w * c].par_chunks_mut(h * w * c).enumerate().for_each(|(n, img)| {
        img.fill(0.0);
        for j in n * per..(n + 1) * per {
            img[argmax[j] as usize - n * h * w * c] += dout[j];
        }
    });
}

/// Mean over the spatial positions: `inp` `[images, hw, c]` → `out` `[images, c]`.
pub fn global_avg_forward(out: &mut [f32], inp: &[f32], images: usize, hw: usize, c: usize) {
    out[..images * c].par_chunks_mut(c).enumerate().for_each(|(n, o)| {
        o.fill(0.0);
        for pix in inp[n * hw * c..(n + 1) * hw * c].chunks(c) {
            for (o, v) in o.iter_mut().zip(pix) {
                *o += v;
            }
        }
        o.iter_mut().for_each(|o| *o /= hw as f32);
    });
}

/// Backward of [`global_avg_forward`]: `dinp` `[images, hw, c]` written.
pub fn global_avg_backward(dinp: &mut [f32], dout: &[f32], images: usize, hw: usize, c: usize) {
    dinp[..images * hw * c].par_chunks_mut(hw * c).enumerate().for_each(|(n, img)| {
        for pix in img.chunks_mut(c) {
            for (d, g) in pix.iter_mut().zip(&dout[n * c..(n + 1) * c]) {
                *d = g / hw as f32;
            }
        }
    });
}
