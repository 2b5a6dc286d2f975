//! LayerNorm over the last dimension (PyTorch semantics, biased variance).

use super::param::{Module, Param, ParamKind};
use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};

pub struct LayerNorm {
    pub g: Param,
    pub b: Param,
    pub d: usize,
    pub eps: f32,
    /// Output, `[rows, d]`, or `[rows, d + 1]` with a last column of ones when `ones_column`.
    pub y: Tensor,
    /// Append a column of ones to every output row, so that the Linear layer reading it can take
    /// its bias inside the matrix product ([`crate::nn::Linear::forward_aug`]).
    pub ones_column: bool,
    /// Per row: mean and 1/std.
    stats: Tensor,
}

impl LayerNorm {
    /// The output of the last forward (its first rows are this call's; read it through this,
    /// not the field, so the buffer's storage can change).
    pub fn output(&self) -> &[f32] {
        &self.y
    }

    pub fn new(name: &str, d: usize, eps: f32) -> LayerNorm {
        LayerNorm {
            g: Param::filled(&format!("{name}.weight"), &[d], ParamKind::Norm, 1.0),
            b: Param::zeros(&format!("{name}.bias"), &[d], ParamKind::Norm),
            d,
            eps,
            y: Tensor::new(),
            ones_column: false,
            stats: Tensor::new(),
        }
    }

    /// Floats per output row (`d`, or `d + 1` with the ones column).
    pub fn stride(&self) -> usize {
        self.d + self.ones_column as usize
    }

    pub fn forward(&mut self, x: &[f32], rows: usize) {
        let d = self.d;
        assert_eq!(x.len(), rows * d, "layernorm {}: input shape", self.g.name);
        let sy = self.stride();
        ensure(&mut self.y, rows * sy);
        ensure(&mut self.stats, rows * 2);
        let (y, st) = (&mut self.y[..rows * sy], &mut self.stats[..rows * 2]);
        ops::layernorm_forward(y, st, x, &self.g.w, &self.b.w, rows, d, sy, self.eps);
    }

    /// Exchange saved buffers with another layer (for forward-only reuse of memory).
    pub fn swap_activations(&mut self, other: &mut LayerNorm) {
        std::mem::swap(&mut self.y, &mut other.y);
        std::mem::swap(&mut self.stats, &mut other.stats);
    }

    pub fn backward(&mut self, x: &[f32], dy: &[f32], rows: usize, dx: &mut [f32]) {
        let (g, b) = (&mut self.g, &mut self.b);
        let dg = g.trainable.then_some(&mut g.g[..]);
        let db = b.trainable.then_some(&mut b.g[..]);
        ops::layernorm_backward(dx, dg, db, dy, x, &g.w, &self.stats, rows, self.d);
    }
}

impl Module for LayerNorm {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        f(&mut self.g);
        f(&mut self.b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn finite_differences() {
        let d = 9;
        let rows = 5;
        let mut l = LayerNorm::new("norm", d, 1e-6);
        let mut rng = crate::engine::rng::Rng::new(5);
        l.g.init_normal(&mut rng, 1.0);
        l.b.init_normal(&mut rng, 1.0);
        check_layer(
            &mut l,
            rows * d,
            rows * d,
            |l, x| {
                l.forward(x, rows);
                l.y[..rows * d].to_vec()
            },
            |l, x, dy, dx| l.backward(x, dy, rows, dx),
            Probe { eps: 3e-3, ..Probe::default() },
        );
    }

    #[test]
    fn normalises_rows() {
        let mut l = LayerNorm::new("n", 4, 1e-6);
        l.forward(&[1.0, 2.0, 3.0, 4.0], 1);
        let want = [-1.3416399, -0.4472133, 0.4472133, 1.3416399];
        for (a, b) in l.y.iter().zip(want) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
