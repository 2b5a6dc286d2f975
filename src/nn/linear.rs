//! y = x Wᵀ + b, W of shape [out, in] as PyTorch's `nn.Linear`.

use super::param::{Module, Param, ParamKind};
use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};

pub struct Linear {
    pub w: Param,
    pub b: Option<Param>,
    pub inp: usize,
    pub out: usize,
    /// Output of the last forward, `[rows, out]`.
    pub y: Tensor,
    /// `[out, inp + 1]`: W with b as its last column for [`Linear::forward_aug`], and the
    /// gradient of the same in [`Linear::backward_aug`].
    wb: Tensor,
}

impl Linear {
    /// The output of the last forward (its first rows are this call's; read it through this,
    /// not the field, so the buffer's storage can change).
    pub fn output(&self) -> &[f32] {
        &self.y
    }

    pub fn new(name: &str, inp: usize, out: usize, bias: bool) -> Linear {
        Linear {
            w: Param::zeros(&format!("{name}.weight"), &[out, inp], ParamKind::Weight),
            b: bias.then(|| Param::zeros(&format!("{name}.bias"), &[out], ParamKind::Bias)),
            inp,
            out,
            y: Tensor::new(),
            wb: Tensor::new(),
        }
    }

    pub fn forward(&mut self, x: &[f32], rows: usize) {
        let (i, o) = (self.inp, self.out);
        assert_eq!(x.len(), rows * i, "linear {}: input shape", self.w.name);
        ensure(&mut self.y, rows * o);
        ops::matmul_forward(&mut self.y, x, &self.w.w, self.b.as_ref().map(|b| &b.w[..]), rows, i, o);
    }

    /// As [`Linear::forward`], for an input with a last column of ones (`[rows, inp + 1]`, as
    /// a LayerNorm with `ones_column` writes it): the bias taken inside the matrix product
    /// ([`ops::matmul_forward_aug`]).
    pub fn forward_aug(&mut self, xa: &[f32], rows: usize) {
        let (i, o) = (self.inp, self.out);
        assert_eq!(xa.len(), rows * (i + 1), "linear {}: input shape (with ones column)", self.w.name);
        let b = self.b.as_ref().expect("forward_aug needs a bias");
        ensure(&mut self.y, rows * o);
        ops::matmul_forward_aug(&mut self.y, &mut self.wb, xa, &self.w.w, &b.w, rows, i, o);
    }

    /// Backward of [`Linear::forward_aug`]: the bias gradient comes out of the weight-gradient
    /// product as its last column (Σ_rows dy · 1) instead of a separate column sum.
    pub fn backward_aug(&mut self, xa: &[f32], dy: &[f32], rows: usize, dx: Option<&mut [f32]>) {
        let (i, o) = (self.inp, self.out);
        let b = self.b.as_mut().expect("backward_aug needs a bias");
        let w = &mut self.w;
        let dw = w.trainable.then_some(&mut w.g[..]);
        let db = b.trainable.then_some(&mut b.g[..]);
        ops::matmul_backward_aug(dx, dw, db, &mut self.wb, dy, xa, &w.w, rows, i, o);
    }

    /// out = res + x Wᵀ + b, with row r of `res` at `res[r * res_stride..]`: the residual
    /// connection folded into the GEMM's accumulation (no separate output buffer or add pass).
    pub fn forward_residual(&self, x: &[f32], rows: usize, res: &[f32], res_stride: usize, out: &mut [f32]) {
        let (i, o) = (self.inp, self.out);
        assert_eq!(x.len(), rows * i, "linear {}: input shape", self.w.name);
        let b = self.b.as_ref().map(|b| &b.w[..]);
        ops::matmul_forward_residual(out, x, &self.w.w, b, res, res_stride, rows, i, o);
    }

    /// Exchange output buffers with another layer (for forward-only reuse of memory).
    pub fn swap_activations(&mut self, other: &mut Linear) {
        std::mem::swap(&mut self.y, &mut other.y);
    }

    /// Gradients of W and b (when trainable) and, if `dx` is given, of the input.
    pub fn backward(&mut self, x: &[f32], dy: &[f32], rows: usize, dx: Option<&mut [f32]>) {
        let w = &mut self.w;
        let dw = w.trainable.then_some(&mut w.g[..]);
        let db = self.b.as_mut().filter(|b| b.trainable).map(|b| &mut b.g[..]);
        ops::matmul_backward(dx, dw, db, dy, x, &w.w, rows, self.inp, self.out);
    }
}

impl Module for Linear {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        f(&mut self.w);
        if let Some(b) = &mut self.b {
            f(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn ones_column_form_equals_the_plain_form() {
        let (i, o, rows) = (7, 5, 9);
        let mut rng = crate::engine::rng::Rng::new(8);
        let mut a = Linear::new("fc", i, o, true);
        a.w.init_normal(&mut rng, 0.5);
        a.b.as_mut().unwrap().init_normal(&mut rng, 0.5);
        let mut b = Linear::new("fc", i, o, true);
        b.w.w.copy_from_slice(&a.w.w);
        b.b.as_mut().unwrap().w.copy_from_slice(&a.b.as_ref().unwrap().w);
        let x: Vec<f32> = (0..rows * i).map(|_| rng.normal()).collect();
        let xa: Vec<f32> = x.chunks(i).flat_map(|r| r.iter().copied().chain([1.0])).collect();
        let dy: Vec<f32> = (0..rows * o).map(|_| rng.normal()).collect();
        a.forward(&x, rows);
        b.forward_aug(&xa, rows);
        let (mut dxa, mut dxb) = (vec![0.0f32; rows * i], vec![0.0f32; rows * i]);
        a.backward(&x, &dy, rows, Some(&mut dxa));
        b.backward_aug(&xa, &dy, rows, Some(&mut dxb));
        let close = |p: &[f32], q: &[f32]| p.iter().zip(q).all(|(u, v)| (u - v).abs() < 1e-5);
        assert!(close(&a.y[..rows * o], &b.y[..rows * o]));
        assert!(close(&dxa, &dxb) && close(&a.w.g, &b.w.g));
        assert!(close(&a.b.as_ref().unwrap().g, &b.b.as_ref().unwrap().g));
    }

    #[test]
    fn finite_differences() {
        for bias in [true, false] {
            let mut l = Linear::new("fc", 7, 5, bias);
            let mut rng = crate::engine::rng::Rng::new(3);
            l.w.init_normal(&mut rng, 0.5);
            if let Some(b) = &mut l.b {
                b.init_normal(&mut rng, 0.5);
            }
            let rows = 6;
            check_layer(
                &mut l,
                rows * 7,
                rows * 5,
                |l, x| {
                    l.forward(x, rows);
                    l.y[..rows * 5].to_vec()
                },
                |l, x, dy, dx| l.backward(x, dy, rows, Some(dx)),
                Probe::default(),
            );
        }
    }
}
