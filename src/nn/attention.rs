//! The core of multi-head self-attention, softmax(Q Kᵀ · scale) V, on the packed `qkv` output of
//! a Linear layer laid out as timm's (`[rows, 3, heads, head_dim]`). The Linear layers around it
//! (qkv, proj) live in the transformer block; the kernels are [`ops::attention_forward`] and its
//! kin.

use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};

pub struct Attention {
    pub dim: usize,
    pub heads: usize,
    pub scale: f32,
    /// Softmax probabilities, `[batch, heads, tokens, tokens]`.
    pub p: Tensor,
    /// Output, `[batch * tokens, dim]` (heads side by side).
    pub o: Tensor,
}

impl Attention {
    /// The output of the last forward (its first rows are this call's; read it through this,
    /// not the field, so the buffer's storage can change).
    pub fn output(&self) -> &[f32] {
        &self.o
    }

    pub fn new(dim: usize, heads: usize) -> Attention {
        assert!(dim.is_multiple_of(heads), "dim {dim} not divisible by heads {heads}");
        Attention { dim, heads, scale: ops::attention_scale(dim, heads), p: Tensor::new(), o: Tensor::new() }
    }

    pub fn forward(&mut self, qkv: &[f32], batch: usize, t: usize) {
        let (d, h) = (self.dim, self.heads);
        ensure(&mut self.p, batch * h * t * t);
        ensure(&mut self.o, batch * t * d);
        ops::attention_forward(&mut self.o, &mut self.p, qkv, batch, t, d, h);
    }

    /// Attention for the cls query (token 0) of each image only: `o` becomes `[batch, dim]` and
    /// `p` `[batch, heads, tokens]`. Used by the last block, whose other outputs nobody reads.
    pub fn forward_cls(&mut self, qkv: &[f32], batch: usize, t: usize) {
        let (d, h) = (self.dim, self.heads);
        ensure(&mut self.p, batch * h * t);
        ensure(&mut self.o, batch * d);
        ops::attention_forward_cls(&mut self.o, &mut self.p, qkv, batch, t, d, h);
    }

    /// Backward of [`Attention::forward_cls`]: `do_` is `[batch, dim]`; writes the whole `dqkv`
    /// (zero for the queries of the other tokens).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_cls(
        &self,
        qkv: &[f32],
        do_: &[f32],
        dqkv: &mut [f32],
        scratch: &mut Tensor,
        batch: usize,
        t: usize,
    ) {
        ops::attention_backward_cls(dqkv, scratch, do_, qkv, &self.p, batch, t, self.dim, self.heads);
    }

    pub fn swap_activations(&mut self, other: &mut Attention) {
        std::mem::swap(&mut self.p, &mut other.p);
        std::mem::swap(&mut self.o, &mut other.o);
    }

    /// `do_` is the gradient of `o`; writes the gradient of `qkv` into `dqkv`. `scratch` is
    /// workspace (grown to `batch·heads·tokens²` floats), shared by all blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(&self, qkv: &[f32], do_: &[f32], dqkv: &mut [f32], scratch: &mut Tensor, batch: usize, t: usize) {
        ops::attention_backward(dqkv, scratch, do_, qkv, &self.p, batch, t, self.dim, self.heads);
    }
}

impl crate::nn::Module for Attention {
    fn visit<'a>(&'a mut self, _f: &mut dyn FnMut(&'a mut crate::nn::Param)) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn finite_differences() {
        let (b, t, d, h) = (2, 5, 8, 2);
        let mut a = Attention::new(d, h);
        check_layer(
            &mut a,
            b * t * 3 * d,
            b * t * d,
            |a, x| {
                a.forward(x, b, t);
                a.o[..b * t * d].to_vec()
            },
            |a, x, dy, dx| a.backward(x, dy, dx, &mut Tensor::new(), b, t),
            Probe { eps: 1e-3, ..Probe::default() },
        );
    }

    #[test]
    fn cls_only_matches_full_attention() {
        let (b, t, d, h) = (2, 5, 8, 2);
        let mut rng = crate::engine::rng::Rng::new(6);
        let qkv: Vec<f32> = (0..b * t * 3 * d).map(|_| rng.normal()).collect();
        let mut full = Attention::new(d, h);
        full.forward(&qkv, b, t);
        let mut cls = Attention::new(d, h);
        cls.forward_cls(&qkv, b, t);
        for bi in 0..b {
            for c in 0..d {
                assert!((full.o[bi * t * d + c] - cls.o[bi * d + c]).abs() < 1e-5);
            }
        }
        // Gradients agree when only the cls rows of the output receive a gradient.
        let dcls: Vec<f32> = (0..b * d).map(|_| rng.normal()).collect();
        let mut dfull = vec![0.0f32; b * t * d];
        for bi in 0..b {
            dfull[bi * t * d..bi * t * d + d].copy_from_slice(&dcls[bi * d..(bi + 1) * d]);
        }
        let mut g1 = vec![0.0f32; b * t * 3 * d];
        let mut g2 = vec![1.0f32; b * t * 3 * d];
        full.backward(&qkv, &dfull, &mut g1, &mut Tensor::new(), b, t);
        cls.backward_cls(&qkv, &dcls, &mut g2, &mut Tensor::new(), b, t);
        for (x, y) in g1.iter().zip(&g2) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn uniform_attention_averages_values() {
        // Q = 0 makes every score equal: each output row is the mean of V over tokens.
        let (t, d) = (3, 2);
        let mut qkv = vec![0.0f32; t * 3 * d];
        for i in 0..t {
            qkv[i * 3 * d + 2 * d] = i as f32;
            qkv[i * 3 * d + 2 * d + 1] = 10.0 * i as f32;
            qkv[i * 3 * d + d] = 5.0 * i as f32; // keys are irrelevant when Q = 0
        }
        let mut a = Attention::new(d, 1);
        a.forward(&qkv, 1, t);
        for i in 0..t {
            assert!((a.o[i * d] - 1.0).abs() < 1e-6 && (a.o[i * d + 1] - 10.0).abs() < 1e-5);
        }
    }
}
