//! 2D convolution on NHWC activations (`[images, h, w, chans]` row-major), as im2col + a GEMM
//! over the columns. The weight keeps PyTorch's layout `[out, in, kh, kw]`, so checkpoints map one
//! to one; the im2col columns are ordered (kh, kw, in) (contiguous runs of channels), so a k×k
//! convolution multiplies by a copy of the weight in that order and turns its gradient back.
//! Zero padding, any stride.

use super::linear::Linear;
use super::param::{Module, Param};
use crate::engine::ensure;
use crate::engine::ops::{self, ConvShape};
use crate::engine::tensor::Tensor;

/// Scratch of the im2col columns and their gradient, and of a weight and its gradient in the
/// columns' order, shared by every convolution of a network (the columns and the weight copy are
/// rebuilt in backward, so no layer keeps its own).
#[derive(Default)]
pub struct ConvScratch {
    cols: Tensor,
    dcols: Tensor,
    w: Tensor,
    dw: Tensor,
}

pub struct Conv2d {
    /// The GEMM over the im2col columns; its output `proj.y` is the convolution's,
    /// `[images, oh, ow, cout]`.
    pub proj: Linear,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    dims: (usize, usize, usize),
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(name: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: usize, bias: bool) -> Conv2d {
        let mut proj = Linear::new(name, cin * k * k, cout, bias);
        proj.w.shape = vec![cout, cin, k, k];
        Conv2d { proj, cin, cout, k, stride, pad, dims: (0, 0, 0) }
    }

    /// The weight `[out, in, kh, kw]` into `w` in the im2col columns' order `[out, kh·kw, in]`.
    fn weight_in_column_order(&self, w: &mut Tensor) {
        let (kk2, n) = (self.k * self.k, self.proj.w.len());
        ensure(w, n);
        ops::swap_inner_axes(&mut w[..n], &self.proj.w.w, self.cout, self.cin, kk2);
    }

    /// Output height and width for an input of `h` × `w`.
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        ((h + 2 * self.pad - self.k) / self.stride + 1, (w + 2 * self.pad - self.k) / self.stride + 1)
    }

    /// A 1×1 stride-1 convolution is a Linear over the pixels: its input is its own column matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// The geometry of the last forward.
    fn shape(&self) -> ConvShape {
        let (images, h, w) = self.dims;
        ConvShape { images, h, w, c: self.cin, k: self.k, s: self.stride, p: self.pad }
    }

    pub fn forward(&mut self, x: &[f32], images: usize, h: usize, w: usize, sc: &mut ConvScratch) {
        assert_eq!(x.len(), images * h * w * self.cin, "conv {}: input shape", self.proj.w.name);
        let (oh, ow) = self.out_size(h, w);
        self.dims = (images, h, w);
        let rows = images * oh * ow;
        let kk = self.cin * self.k * self.k;
        if self.pointwise() {
            self.proj.forward(x, rows);
        } else if self.k == 1 {
            ops::im2col(&mut sc.cols, x, self.shape());
            self.proj.forward(&sc.cols[..rows * kk], rows);
        } else {
            ops::im2col(&mut sc.cols, x, self.shape());
            self.weight_in_column_order(&mut sc.w);
            let p = &mut self.proj;
            ensure(&mut p.y, rows * self.cout);
            let bias = p.b.as_ref().map(|b| &b.w[..]);
            ops::matmul_forward(&mut p.y, &sc.cols[..rows * kk], &sc.w[..self.cout * kk], bias, rows, kk, self.cout);
        }
    }

    /// Gradients of the weights (and bias) and, when `dx` is given, of the input; `x` is the
    /// forward's input.
    pub fn backward(&mut self, x: &[f32], dy: &[f32], dx: Option<&mut [f32]>, sc: &mut ConvScratch) {
        let (images, h, w) = self.dims;
        let (c, k) = (self.cin, self.k);
        let (oh, ow) = self.out_size(h, w);
        let rows = images * oh * ow;
        let kk = c * k * k;
        let dy = &dy[..rows * self.cout];
        let x = &x[..images * h * w * c];
        if self.pointwise() {
            self.proj.backward(x, dy, rows, dx.map(|d| &mut d[..rows * c]));
            return;
        }
        ops::im2col(&mut sc.cols, x, self.shape());
        let cols = &sc.cols[..rows * kk];
        let dcols = match dx.is_some() {
            true => {
                ensure(&mut sc.dcols, rows * kk);
                Some(&mut sc.dcols[..rows * kk])
            }
            false => None,
        };
        if k == 1 {
            self.proj.backward(cols, dy, rows, dcols);
        } else {
            // The GEMM's weight is the (kh, kw, in) copy (made again: the scratch is shared); its
            // gradient goes back to (in, kh, kw).
            self.weight_in_column_order(&mut sc.w);
            let p = &mut self.proj;
            let trainable = p.w.trainable;
            let dw = match trainable {
                true => {
                    ensure(&mut sc.dw, self.cout * kk);
                    Some(&mut sc.dw[..self.cout * kk])
                }
                false => None,
            };
            let db = p.b.as_mut().filter(|b| b.trainable).map(|b| &mut b.g[..]);
            ops::matmul_backward(dcols, dw, db, dy, cols, &sc.w[..self.cout * kk], rows, kk, self.cout);
            if trainable {
                ops::swap_inner_axes(&mut p.w.g, &sc.dw, self.cout, k * k, c);
            }
        }
        if let Some(dx) = dx {
            ops::col2im(dx, &sc.dcols[..rows * kk], self.shape());
        }
    }
}

impl Module for Conv2d {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        self.proj.visit(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn finite_differences() {
        for (k, s, p, bias) in [(3, 1, 1, false), (3, 2, 1, true), (1, 1, 0, false), (1, 2, 0, false), (2, 2, 0, true)]
        {
            let (n, h, w, cin, cout) = (2, 5, 4, 3, 4);
            let mut conv = Conv2d::new("conv", cin, cout, k, s, p, bias);
            let mut rng = crate::engine::rng::Rng::new(7);
            conv.visit(&mut |q| q.init_normal(&mut rng, 0.5));
            let (oh, ow) = conv.out_size(h, w);
            let ny = n * oh * ow * cout;
            check_layer(
                &mut conv,
                n * h * w * cin,
                ny,
                |l, x| {
                    l.forward(x, n, h, w, &mut ConvScratch::default());
                    l.proj.y[..ny].to_vec()
                },
                |l, x, dy, dx| l.backward(x, dy, Some(dx), &mut ConvScratch::default()),
                Probe::default(),
            );
        }
    }

    #[test]
    fn matches_direct_convolution_with_pytorch_weight_layout() {
        let (n, h, w, cin, cout, k, s, p) = (1, 4, 5, 2, 3, 3, 2, 1);
        let mut conv = Conv2d::new("c", cin, cout, k, s, p, true);
        let mut rng = crate::engine::rng::Rng::new(1);
        conv.visit(&mut |q| q.init_normal(&mut rng, 1.0));
        let x: Vec<f32> = (0..n * h * w * cin).map(|_| rng.normal()).collect();
        conv.forward(&x, n, h, w, &mut ConvScratch::default());
        let (oh, ow) = conv.out_size(h, w);
        assert_eq!((oh, ow), (2, 3));
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..cout {
                    let mut acc = conv.proj.b.as_ref().unwrap().w[co] as f64;
                    for ci in 0..cin {
                        for ki in 0..k {
                            for kj in 0..k {
                                let (iy, ix) = ((oy * s + ki) as isize - 1, (ox * s + kj) as isize - 1);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    let wv = conv.proj.w.w[((co * cin + ci) * k + ki) * k + kj] as f64;
                                    acc += wv * x[(iy as usize * w + ix as usize) * cin + ci] as f64;
                                }
                            }
                        }
                    }
                    let got = conv.proj.y[(oy * ow + ox) * cout + co] as f64;
                    assert!((got - acc).abs() < 1e-4, "{got} vs {acc}");
                }
            }
        }
    }
}
