//! Pooling on NHWC activations: max pooling (PyTorch's `MaxPool2d`, padding never wins) and the
//! global average pool that ends a ResNet.

use crate::engine::ensure;
use rayon::prelude::*;

pub struct MaxPool2d {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub y: Vec<f32>,
    /// Index (into the input) of each output's maximum.
    argmax: Vec<u32>,
    dims: (usize, usize, usize, usize),
}

impl MaxPool2d {
    pub fn new(k: usize, stride: usize, pad: usize) -> MaxPool2d {
        MaxPool2d { k, stride, pad, y: Vec::new(), argmax: Vec::new(), dims: (0, 0, 0, 0) }
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        ((h + 2 * self.pad - self.k) / self.stride + 1, (w + 2 * self.pad - self.k) / self.stride + 1)
    }

    pub fn forward(&mut self, x: &[f32], images: usize, h: usize, w: usize, c: usize) {
        let (oh, ow) = self.out_size(h, w);
        self.dims = (images, h, w, c);
        let per = oh * ow * c;
        ensure(&mut self.y, images * per);
        if self.argmax.len() < images * per {
            self.argmax.resize(images * per, 0);
        }
        let (k, s, p) = (self.k, self.stride, self.pad);
        self.y[..images * per]
            .par_chunks_mut(per)
            .zip(self.argmax[..images * per].par_chunks_mut(per))
            .enumerate()
            .for_each(|(n, (y, am))| {
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
            });
    }

    /// dx gets each output's gradient at the position of its maximum.
    pub fn backward(&self, dy: &[f32], dx: &mut [f32]) {
        let (images, h, w, c) = self.dims;
        let (oh, ow) = self.out_size(h, w);
        let per = oh * ow * c;
        let am = &self.argmax;
        dx[..images * h * w * c].par_chunks_mut(h * w * c).enumerate().for_each(|(n, img)| {
            img.fill(0.0);
            for j in n * per..(n + 1) * per {
                img[am[j] as usize - n * h * w * c] += dy[j];
            }
        });
    }
}

/// Mean over the spatial positions: `[images, h, w, c]` → `[images, c]`.
pub fn global_avg_forward(x: &[f32], images: usize, hw: usize, c: usize, y: &mut [f32]) {
    y[..images * c].par_chunks_mut(c).enumerate().for_each(|(n, out)| {
        out.fill(0.0);
        for pix in x[n * hw * c..(n + 1) * hw * c].chunks(c) {
            for (o, v) in out.iter_mut().zip(pix) {
                *o += v;
            }
        }
        out.iter_mut().for_each(|o| *o /= hw as f32);
    });
}

pub fn global_avg_backward(dy: &[f32], images: usize, hw: usize, c: usize, dx: &mut [f32]) {
    dx[..images * hw * c].par_chunks_mut(hw * c).enumerate().for_each(|(n, img)| {
        for pix in img.chunks_mut(c) {
            for (d, g) in pix.iter_mut().zip(&dy[n * c..(n + 1) * c]) {
                *d = g / hw as f32;
            }
        }
    });
}

impl crate::nn::Module for MaxPool2d {
    fn visit(&mut self, _f: &mut dyn FnMut(&mut crate::nn::Param)) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn max_pool_finite_differences_and_padding() {
        let (n, h, w, c) = (2, 5, 6, 3);
        let mut mp = MaxPool2d::new(3, 2, 1);
        let (oh, ow) = mp.out_size(h, w);
        assert_eq!((oh, ow), (3, 3));
        let ny = n * oh * ow * c;
        // Distinct values (normal draws) keep the argmax away from ties for the probe.
        check_layer(
            &mut mp,
            n * h * w * c,
            ny,
            |l, x| {
                l.forward(x, n, h, w, c);
                l.y[..ny].to_vec()
            },
            |l, _, dy, dx| l.backward(dy, dx),
            Probe { eps: 1e-4, tol: 2e-2, ..Probe::default() },
        );
        // All-negative input: padding must not win (PyTorch pads with -inf).
        let x = vec![-5.0f32; h * w];
        let mut one = MaxPool2d::new(3, 2, 1);
        one.forward(&x, 1, h, w, 1);
        assert!(one.y[..9].iter().all(|&v| v == -5.0));
    }

    #[test]
    fn global_average_pool_and_its_gradient() {
        let (n, hw, c) = (2, 4, 3);
        let x: Vec<f32> = (0..n * hw * c).map(|i| i as f32).collect();
        let mut y = vec![0.0; n * c];
        global_avg_forward(&x, n, hw, c, &mut y);
        assert_eq!(y, vec![4.5, 5.5, 6.5, 16.5, 17.5, 18.5]);
        let mut dx = vec![0.0; n * hw * c];
        global_avg_backward(&[4.0, 8.0, 0.0, 1.0, 1.0, 1.0], n, hw, c, &mut dx);
        assert_eq!(&dx[..3], &[1.0, 2.0, 0.0]);
        assert_eq!(&dx[21..], &[0.25, 0.25, 0.25]);
    }
}
