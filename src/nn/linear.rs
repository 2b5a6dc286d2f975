//! y = x Wᵀ + b, W of shape [out, in] as PyTorch's `nn.Linear`.

use super::param::{Module, Param, ParamKind};
use crate::engine::gemm::{sgemm, sgemm_long_k, Mat};
use crate::engine::{ensure, par};

pub struct Linear {
    pub w: Param,
    pub b: Option<Param>,
    pub inp: usize,
    pub out: usize,
    /// Output of the last forward, `[rows, out]`.
    pub y: Vec<f32>,
    /// `[out, inp + 1]`: W with b as its last column for [`Linear::forward_aug`], and the
    /// gradient of the same in [`Linear::backward_aug`].
    wb: Vec<f32>,
}

impl Linear {
    pub fn new(name: &str, inp: usize, out: usize, bias: bool) -> Linear {
        Linear {
            w: Param::zeros(&format!("{name}.weight"), &[out, inp], ParamKind::Weight),
            b: bias.then(|| Param::zeros(&format!("{name}.bias"), &[out], ParamKind::Bias)),
            inp,
            out,
            y: Vec::new(),
            wb: Vec::new(),
        }
    }

    pub fn forward(&mut self, x: &[f32], rows: usize) {
        let (i, o) = (self.inp, self.out);
        assert_eq!(x.len(), rows * i, "linear {}: input shape", self.w.name);
        ensure(&mut self.y, rows * o);
        let y = &mut self.y[..rows * o];
        if let Some(b) = &self.b {
            par::for_rows(y, o, |_, row| row.copy_from_slice(&b.w));
        }
        sgemm(rows, o, i, Mat::rows(x, i), Mat::trans(&self.w.w, i), y, o, 1.0, self.b.is_some(), true);
    }

    /// As [`Linear::forward`], for an input with a last column of ones (`[rows, inp + 1]`, as
    /// a LayerNorm with `ones_column` writes it): y = [x 1] [W b]ᵀ, the bias taken inside the
    /// product, so the output is written once instead of filled with the bias and then
    /// accumulated into (about 15% of this layer's time at the ViT's shapes).
    pub fn forward_aug(&mut self, xa: &[f32], rows: usize) {
        let (i, o) = (self.inp, self.out);
        let ia = i + 1;
        assert_eq!(xa.len(), rows * ia, "linear {}: input shape (with ones column)", self.w.name);
        let b = self.b.as_ref().expect("forward_aug needs a bias");
        ensure(&mut self.wb, o * ia);
        for (r, row) in self.wb.chunks_mut(ia).enumerate() {
            row[..i].copy_from_slice(&self.w.w[r * i..(r + 1) * i]);
            row[i] = b.w[r];
        }
        ensure(&mut self.y, rows * o);
        sgemm(rows, o, ia, Mat::rows(xa, ia), Mat::trans(&self.wb, ia), &mut self.y[..rows * o], o, 1.0, false, true);
    }

    /// Backward of [`Linear::forward_aug`]: the bias gradient comes out of the weight-gradient
    /// product as its last column (Σ_rows dy · 1) instead of a separate column sum.
    pub fn backward_aug(&mut self, xa: &[f32], dy: &[f32], rows: usize, dx: Option<&mut [f32]>) {
        let (i, o) = (self.inp, self.out);
        let ia = i + 1;
        let dy = &dy[..rows * o];
        if let Some(dx) = dx {
            sgemm(rows, i, o, Mat::rows(dy, o), Mat::rows(&self.w.w, i), &mut dx[..rows * i], i, 1.0, false, true);
        }
        let b = self.b.as_mut().expect("backward_aug needs a bias");
        if self.w.trainable || b.trainable {
            ensure(&mut self.wb, o * ia);
            sgemm_long_k(o, ia, rows, Mat::trans(dy, o), Mat::rows(xa, ia), &mut self.wb, ia, 1.0);
            for (r, row) in self.wb.chunks(ia).enumerate() {
                if self.w.trainable {
                    self.w.g[r * i..(r + 1) * i].copy_from_slice(&row[..i]);
                }
                if b.trainable {
                    b.g[r] = row[i];
                }
            }
        }
    }

    /// out = res + x Wᵀ + b, with row r of `res` at `res[r * res_stride..]`: the residual
    /// connection folded into the GEMM's accumulation (no separate output buffer or add pass).
    pub fn forward_residual(&self, x: &[f32], rows: usize, res: &[f32], res_stride: usize, out: &mut [f32]) {
        let (i, o) = (self.inp, self.out);
        assert_eq!(x.len(), rows * i, "linear {}: input shape", self.w.name);
        let out = &mut out[..rows * o];
        let b = self.b.as_ref().map(|b| &b.w[..]);
        par::for_rows(out, o, |r, row| {
            let rr = &res[r * res_stride..r * res_stride + o];
            match b {
                Some(b) => row.iter_mut().zip(rr).zip(b).for_each(|((y, &v), &bb)| *y = v + bb),
                None => row.copy_from_slice(rr),
            }
        });
        sgemm(rows, o, i, Mat::rows(x, i), Mat::trans(&self.w.w, i), out, o, 1.0, true, true);
    }

    /// Exchange output buffers with another layer (for forward-only reuse of memory).
    pub fn swap_activations(&mut self, other: &mut Linear) {
        std::mem::swap(&mut self.y, &mut other.y);
    }

    /// Gradients of W and b (when trainable) and, if `dx` is given, of the input.
    pub fn backward(&mut self, x: &[f32], dy: &[f32], rows: usize, dx: Option<&mut [f32]>) {
        let (i, o) = (self.inp, self.out);
        let dy = &dy[..rows * o];
        if let Some(dx) = dx {
            sgemm(rows, i, o, Mat::rows(dy, o), Mat::rows(&self.w.w, i), &mut dx[..rows * i], i, 1.0, false, true);
        }
        if self.w.trainable {
            sgemm_long_k(o, i, rows, Mat::trans(dy, o), Mat::rows(x, i), &mut self.w.g, i, 1.0);
        }
        if let Some(b) = &mut self.b {
            if b.trainable {
                par::col_sum(&mut b.g, dy, rows, o, false);
            }
        }
    }
}

impl Module for Linear {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Param)) {
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
