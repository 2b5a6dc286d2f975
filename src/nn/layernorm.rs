//! LayerNorm over the last dimension (PyTorch semantics, biased variance).

use super::param::{Module, Param, ParamKind};
use crate::engine::par::{self, SendPtr};
use crate::engine::{ensure, vec};
use rayon::prelude::*;

pub struct LayerNorm {
    pub g: Param,
    pub b: Param,
    pub d: usize,
    pub eps: f32,
    /// Output, `[rows, d]`, or `[rows, d + 1]` with a last column of ones when `ones_column`.
    pub y: Vec<f32>,
    /// Append a column of ones to every output row, so that the Linear layer reading it can take
    /// its bias inside the matrix product ([`crate::nn::Linear::forward_aug`]).
    pub ones_column: bool,
    /// Per row: mean and 1/std.
    stats: Vec<f32>,
}

impl LayerNorm {
    pub fn new(name: &str, d: usize, eps: f32) -> LayerNorm {
        LayerNorm {
            g: Param::filled(&format!("{name}.weight"), &[d], ParamKind::Norm, 1.0),
            b: Param::zeros(&format!("{name}.bias"), &[d], ParamKind::Norm),
            d,
            eps,
            y: Vec::new(),
            ones_column: false,
            stats: Vec::new(),
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
        let (g, b, eps) = (&self.g.w, &self.b.w, self.eps);
        par::for_rows2(&mut self.y[..rows * sy], sy, &mut self.stats[..rows * 2], 2, |r, y, st| {
            let xr = &x[r * d..(r + 1) * d];
            let mean = vec::sum(xr) / d as f32;
            let var = vec::sq_dev(xr, mean) / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            st[0] = mean;
            st[1] = rstd;
            for i in 0..d {
                y[i] = (xr[i] - mean) * rstd * g[i] + b[i];
            }
            if sy > d {
                y[d] = 1.0;
            }
        });
    }

    /// Exchange saved buffers with another layer (for forward-only reuse of memory).
    pub fn swap_activations(&mut self, other: &mut LayerNorm) {
        std::mem::swap(&mut self.y, &mut other.y);
        std::mem::swap(&mut self.stats, &mut other.stats);
    }

    pub fn backward(&mut self, x: &[f32], dy: &[f32], rows: usize, dx: &mut [f32]) {
        let d = self.d;
        let (g, stats) = (&self.g.w, &self.stats);
        let dxp = SendPtr(dx.as_mut_ptr());
        (0..rows).into_par_iter().with_min_len(64).for_each(|r| {
            let xr = &x[r * d..(r + 1) * d];
            let dyr = &dy[r * d..(r + 1) * d];
            let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
            // dxhat = dy * g; mean(dxhat) and mean(dxhat * xhat)
            // Eight running sums each, so the loop vectorises (a single sum is a serial chain).
            let (mut a1, mut a2) = ([0.0f32; 8], [0.0f32; 8]);
            for ((dc, xc), gc) in dyr.chunks(8).zip(xr.chunks(8)).zip(g.chunks(8)) {
                for k in 0..dc.len() {
                    let dxh = dc[k] * gc[k];
                    a1[k] += dxh;
                    a2[k] += dxh * (xc[k] - mean) * rstd;
                }
            }
            let (m1, m2) = (vec::fold8(a1) / d as f32, vec::fold8(a2) / d as f32);
            let out = unsafe { dxp.slice(r * d, d) };
            for i in 0..d {
                let xh = (xr[i] - mean) * rstd;
                out[i] = rstd * (dyr[i] * g[i] - m1 - xh * m2);
            }
        });
        if self.g.trainable {
            par::col_reduce(&mut self.g.g, rows, false, |r, cr, acc| {
                let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
                let base = r * d;
                for (k, c) in cr.enumerate() {
                    acc[k] += dy[base + c] * (x[base + c] - mean) * rstd;
                }
            });
        }
        if self.b.trainable {
            par::col_sum(&mut self.b.g, dy, rows, d, false);
        }
    }
}

impl Module for LayerNorm {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Param)) {
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
