//! Patch embedding: a convolution with kernel = stride = patch, computed as im2col + GEMM. The
//! weight keeps the convolution's shape `[dim, chans, p, p]` for checkpoints. It is the first
//! layer, so no gradient flows to the image.

use super::linear::Linear;
use super::param::{Module, Param};
use crate::engine::ops;
use crate::engine::tensor::Tensor;

pub struct PatchEmbed {
    pub proj: Linear,
    pub chans: usize,
    pub img: usize,
    pub patch: usize,
    cols: Tensor,
}

impl PatchEmbed {
    pub fn new(name: &str, img: usize, patch: usize, chans: usize, dim: usize) -> PatchEmbed {
        assert!(img.is_multiple_of(patch), "image size {img} is not a multiple of the patch size {patch}");
        let mut proj = Linear::new(name, chans * patch * patch, dim, true);
        proj.w.shape = vec![dim, chans, patch, patch];
        PatchEmbed { proj, chans, img, patch, cols: Tensor::new() }
    }

    pub fn grid(&self) -> usize {
        self.img / self.patch
    }

    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// `x`: images `[batch, chans, img, img]`; output in `proj.y`, `[batch * patches, dim]`.
    pub fn forward(&mut self, x: &[f32], batch: usize) {
        let (c, p) = (self.chans, self.patch);
        ops::patchify(&mut self.cols, x, batch, c, self.img, p);
        let (k, rows) = (c * p * p, batch * self.num_patches());
        self.proj.forward(&self.cols[..rows * k], rows);
    }

    pub fn backward(&mut self, dy: &[f32], batch: usize) {
        let rows = batch * self.num_patches();
        let k = self.proj.inp;
        let cols = std::mem::take(&mut self.cols);
        self.proj.backward(&cols[..rows * k], dy, rows, None);
        self.cols = cols;
    }
}

impl Module for PatchEmbed {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        self.proj.visit(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn equals_direct_convolution() {
        let (b, c, s, p, d) = (2, 3, 8, 4, 5);
        let mut pe = PatchEmbed::new("pe", s, p, c, d);
        let mut rng = crate::engine::rng::Rng::new(4);
        pe.proj.w.init_normal(&mut rng, 1.0);
        pe.proj.b.as_mut().unwrap().init_normal(&mut rng, 1.0);
        let x: Vec<f32> = (0..b * c * s * s).map(|_| rng.normal()).collect();
        pe.forward(&x, b);
        let g = s / p;
        for bi in 0..b {
            for gi in 0..g {
                for gj in 0..g {
                    for o in 0..d {
                        let mut acc = pe.proj.b.as_ref().unwrap().w[o] as f64;
                        for ch in 0..c {
                            for ki in 0..p {
                                for kj in 0..p {
                                    let w = pe.proj.w.w[((o * c + ch) * p + ki) * p + kj] as f64;
                                    acc += w * x[((bi * c + ch) * s + gi * p + ki) * s + gj * p + kj] as f64;
                                }
                            }
                        }
                        let got = pe.proj.y[((bi * g + gi) * g + gj) * d + o] as f64;
                        assert!((got - acc).abs() < 1e-4, "{got} vs {acc}");
                    }
                }
            }
        }
    }

    #[test]
    fn finite_differences() {
        let (b, c, s, p, d) = (2, 1, 4, 2, 3);
        let mut pe = PatchEmbed::new("pe", s, p, c, d);
        let mut rng = crate::engine::rng::Rng::new(4);
        pe.proj.w.init_normal(&mut rng, 1.0);
        let ny = b * 4 * d;
        check_layer(
            &mut pe,
            b * c * s * s,
            ny,
            |l, x| {
                l.forward(x, b);
                l.proj.y[..ny].to_vec()
            },
            |l, _, dy, _| l.backward(dy, b),
            Probe { check_input: false, ..Probe::default() },
        );
    }
}
