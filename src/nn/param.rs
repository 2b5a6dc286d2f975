//! Parameters (values + gradients) and named buffers, and the visitor every module implements.

use crate::engine::rng::Rng;
use crate::engine::tensor::Tensor;

/// What a parameter is, for optimiser options such as excluding biases and norms from decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Bias,
    Norm,
    Token,
}

#[derive(Clone, Debug)]
pub struct Param {
    /// Name in the official checkpoint layout, without the encoder prefix
    /// (e.g. `blocks.0.attn.qkv.weight`).
    pub name: String,
    pub shape: Vec<usize>,
    pub w: Tensor,
    pub g: Tensor,
    pub trainable: bool,
    pub kind: ParamKind,
}

impl Param {
    pub fn zeros(name: &str, shape: &[usize], kind: ParamKind) -> Param {
        let n = shape.iter().product();
        Param {
            name: name.to_string(),
            shape: shape.to_vec(),
            w: Tensor::zeros(n),
            g: Tensor::zeros(n),
            trainable: true,
            kind,
        }
    }

    pub fn filled(name: &str, shape: &[usize], kind: ParamKind, v: f32) -> Param {
        let mut p = Param::zeros(name, shape, kind);
        p.w.fill(v);
        p
    }

    pub fn len(&self) -> usize {
        self.w.len()
    }

    pub fn is_empty(&self) -> bool {
        self.w.is_empty()
    }

    /// Uniform in [-bound, bound).
    pub fn init_uniform(&mut self, rng: &mut Rng, bound: f64) {
        for v in self.w.iter_mut() {
            *v = rng.uniform(-bound, bound) as f32;
        }
    }

    pub fn init_normal(&mut self, rng: &mut Rng, std: f32) {
        for v in self.w.iter_mut() {
            *v = rng.normal() * std;
        }
    }

    /// Normal truncated to [-2, 2] (absolute, as timm's `trunc_normal_`).
    pub fn init_trunc_normal(&mut self, rng: &mut Rng, std: f32) {
        for v in self.w.iter_mut() {
            loop {
                let x = rng.normal() * std;
                if (-2.0..=2.0).contains(&x) {
                    *v = x;
                    break;
                }
            }
        }
    }
}

/// A named non-trainable state tensor (BatchNorm running statistics).
pub struct Buffer<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: &'a mut Tensor,
}

/// Anything with parameters. The visiting order is fixed and is the order of the official
/// `state_dict` (so optimiser state and the momentum encoder line up by position).
pub trait Module {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param));
    fn visit_buffers(&mut self, _f: &mut dyn FnMut(Buffer)) {}

    /// Mutable references to every parameter, in visiting order.
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = Vec::new();
        self.visit(&mut |p| v.push(p));
        v
    }

    fn num_params(&mut self) -> usize {
        let mut n = 0;
        self.visit(&mut |p| n += p.len());
        n
    }
}
