//! The MLP heads of MoCo v3 (`_build_mlp` in the official `builder.py`): every layer is a Linear
//! without bias; hidden layers are followed by BatchNorm1d (affine) + ReLU; the last one, when
//! `last_bn`, by BatchNorm1d without affine. Linear weights keep PyTorch's default init
//! (kaiming-uniform with a = √5, i.e. U(±1/√fan_in)), as the official code builds the heads after
//! the backbone's init. Module indices follow the official `nn.Sequential` (`0` Linear, `1` BN,
//! `2` ReLU, `3` Linear, ...), so checkpoint keys match.

use crate::engine::ensure;
use crate::engine::rng::Rng;
use crate::engine::tensor::Tensor;
use crate::nn::{BatchNorm1d, Buffer, Linear, Module, Param, Relu};

pub struct MlpLayer {
    pub linear: Linear,
    pub bn: Option<BatchNorm1d>,
    pub relu: Option<Relu>,
}

impl MlpLayer {
    fn out(&self) -> &[f32] {
        if let Some(r) = &self.relu {
            &r.y
        } else if let Some(b) = &self.bn {
            &b.y
        } else {
            &self.linear.y
        }
    }
}

pub struct Mlp {
    pub layers: Vec<MlpLayer>,
    pub out_dim: usize,
    d1: Tensor,
    d2: Tensor,
}

impl Mlp {
    pub fn new(
        prefix: &str,
        num_layers: usize,
        inp: usize,
        hidden: usize,
        out: usize,
        last_bn: bool,
        rng: &mut Rng,
    ) -> Mlp {
        let mut layers = Vec::new();
        let mut idx = 0;
        for l in 0..num_layers {
            let d1 = if l == 0 { inp } else { hidden };
            let d2 = if l == num_layers - 1 { out } else { hidden };
            let mut linear = Linear::new(&format!("{prefix}.{idx}"), d1, d2, false);
            linear.w.init_uniform(rng, 1.0 / (d1 as f64).sqrt());
            idx += 1;
            let (bn, relu) = if l < num_layers - 1 {
                let bn = BatchNorm1d::new(&format!("{prefix}.{idx}"), d2, true);
                idx += 2;
                (Some(bn), Some(Relu::default()))
            } else if last_bn {
                (Some(BatchNorm1d::new(&format!("{prefix}.{idx}"), d2, false)), None)
            } else {
                (None, None)
            };
            layers.push(MlpLayer { linear, bn, relu });
        }
        Mlp { layers, out_dim: out, d1: Tensor::new(), d2: Tensor::new() }
    }

    /// `x`: `[rows, in]`, the rows made of `groups` separately-normalised groups.
    pub fn forward(&mut self, x: &[f32], rows: usize, groups: usize) -> &[f32] {
        for i in 0..self.layers.len() {
            let (prev, rest) = self.layers.split_at_mut(i);
            let l = &mut rest[0];
            let input = if i == 0 { x } else { &prev[i - 1].out()[..rows * l.linear.inp] };
            l.linear.forward(input, rows);
            let n = rows * l.linear.out;
            if let Some(bn) = &mut l.bn {
                bn.forward(&l.linear.output()[..n], rows, groups);
                if let Some(r) = &mut l.relu {
                    r.forward(&bn.output()[..n]);
                }
            }
        }
        &self.layers.last().unwrap().out()[..rows * self.out_dim]
    }

    /// Backward from the gradient of the output; writes the input gradient into `dx`.
    pub fn backward(&mut self, x: &[f32], dy: &[f32], rows: usize, dx: &mut [f32]) {
        let maxw = self.layers.iter().map(|l| l.linear.out.max(l.linear.inp)).max().unwrap();
        ensure(&mut self.d1, rows * maxw);
        ensure(&mut self.d2, rows * maxw);
        let (mut g, mut s) = (&mut self.d1, &mut self.d2);
        let n = rows * self.out_dim;
        g[..n].copy_from_slice(&dy[..n]);
        for i in (0..self.layers.len()).rev() {
            let (prev, rest) = self.layers.split_at_mut(i);
            let l = &mut rest[0];
            let n = rows * l.linear.out;
            if let Some(r) = &l.relu {
                r.backward_inplace(&mut g[..n]);
            }
            if let Some(bn) = &mut l.bn {
                bn.backward(&l.linear.output()[..n], &g[..n], rows, &mut s[..n]);
                std::mem::swap(&mut g, &mut s);
            }
            let ni = rows * l.linear.inp;
            if i == 0 {
                l.linear.backward(x, &g[..n], rows, Some(&mut dx[..ni]));
            } else {
                l.linear.backward(&prev[i - 1].out()[..ni], &g[..n], rows, Some(&mut s[..ni]));
                std::mem::swap(&mut g, &mut s);
            }
        }
    }

    /// The output of the last forward, `[rows, out]`.
    pub fn output(&self, rows: usize) -> &[f32] {
        &self.layers.last().unwrap().out()[..rows * self.out_dim]
    }

    pub fn set_training(&mut self, training: bool) {
        for l in self.layers.iter_mut() {
            if let Some(bn) = &mut l.bn {
                bn.training = training;
            }
        }
    }
}

impl Module for Mlp {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        for l in self.layers.iter_mut() {
            l.linear.visit(f);
            if let Some(bn) = &mut l.bn {
                bn.visit(f);
            }
        }
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        for l in self.layers.iter_mut() {
            if let Some(bn) = &mut l.bn {
                bn.visit_buffers(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn finite_differences_with_two_groups() {
        let mut rng = Rng::new(1);
        let (rows, inp, hid, out) = (8, 5, 7, 4);
        for last_bn in [true, false] {
            let mut mlp = Mlp::new("head", 3, inp, hid, out, last_bn, &mut rng);
            check_layer(
                &mut mlp,
                rows * inp,
                rows * out,
                |m, x| m.forward(x, rows, 2).to_vec(),
                |m, x, dy, dx| m.backward(x, dy, rows, dx),
                Probe { eps: 1e-3, tol: 2e-2, ..Probe::default() },
            );
        }
    }

    #[test]
    fn official_key_names() {
        let mut rng = Rng::new(1);
        let mut mlp = Mlp::new("predictor", 2, 4, 8, 4, true, &mut rng);
        let mut names = Vec::new();
        mlp.visit(&mut |p| names.push(p.name.clone()));
        assert_eq!(names, ["predictor.0.weight", "predictor.1.weight", "predictor.1.bias", "predictor.3.weight"]);
        let mut bufs = Vec::new();
        mlp.visit_buffers(&mut |b| bufs.push(b.name));
        assert_eq!(bufs[3], "predictor.4.running_mean");
    }
}
