//! The pre-norm transformer block of timm 0.4.9 (`x + attn(norm1(x))`, then
//! `x + mlp(norm2(x))`), with the residual additions folded into the GEMMs.
//!
//! `cls_only` runs the block for the cls token's output alone: keys and values still come from
//! every token, but the attention query, the projection and the MLP run on one row per image.
//! The ViT uses it for its last block, whose other outputs are never read, so it computes the
//! same feature with about a twelfth less work in a 12-block model.
//!
//! ViT-BN (the paper's §6.3: "replacing LN with BN in the ViT backbone's MLP blocks (i.e.,
//! excluding self-attention blocks)") has a BatchNorm in place of `norm2`: per-channel statistics
//! over every token of the batch (each MoCo view on its own, SyncBN over processes), eps 1e-6 as
//! the official code's pre-release `vits.py`. Its statistics need every token, so such a block
//! never runs `cls_only`.

use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};
use crate::nn::batchnorm::BatchNorm1d;
use crate::nn::{Attention, Buffer, Gelu, LayerNorm, Linear, Module, Param};

/// The norm in front of the MLP: LayerNorm (ViT) or BatchNorm (ViT-BN). One per block, so the
/// size difference of the two does not matter.
#[allow(clippy::large_enum_variant)]
pub enum MlpNorm {
    Ln(LayerNorm),
    Bn(BatchNorm1d),
}

pub struct Block {
    pub norm1: LayerNorm,
    pub qkv: Linear,
    pub attn: Attention,
    pub proj: Linear,
    pub norm2: MlpNorm,
    pub fc1: Linear,
    pub act: Gelu,
    pub fc2: Linear,
    /// x + attention branch.
    pub res1: Tensor,
    /// res1 + MLP branch: the block's output (`[batch, dim]` after a `cls_only` forward).
    pub out: Tensor,
}

/// Gradient buffers shared by all blocks (used one block at a time).
#[derive(Default)]
pub struct Scratch {
    pub d1: Tensor,
    pub d2: Tensor,
    pub hidden: Tensor,
    pub qkv: Tensor,
    pub attn: Tensor,
}

impl Block {
    /// The output of the last forward (its first rows are this call's; read it through this,
    /// not the field, so the buffer's storage can change).
    pub fn output(&self) -> &[f32] {
        &self.out
    }

    /// Block `i`; with `bn`, a ViT-BN block (BatchNorm before the MLP).
    pub fn new(i: usize, dim: usize, heads: usize, mlp_ratio: usize, bn: bool) -> Block {
        let n = |s: &str| format!("blocks.{i}.{s}");
        // norm1 and norm2 feed qkv and fc1 only: their outputs carry a ones column so those two
        // layers take their bias inside the matrix product (Linear::forward_aug).
        let norm = |s: &str| {
            let mut l = LayerNorm::new(&n(s), dim, 1e-6);
            l.ones_column = true;
            l
        };
        Block {
            norm1: norm("norm1"),
            qkv: Linear::new(&n("attn.qkv"), dim, 3 * dim, true),
            attn: Attention::new(dim, heads),
            proj: Linear::new(&n("attn.proj"), dim, dim, true),
            norm2: if bn {
                let mut b = BatchNorm1d::new(&n("norm2"), dim, true);
                b.eps = 1e-6;
                MlpNorm::Bn(b)
            } else {
                MlpNorm::Ln(norm("norm2"))
            },
            fc1: Linear::new(&n("mlp.fc1"), dim, mlp_ratio * dim, true),
            act: Gelu::default(),
            fc2: Linear::new(&n("mlp.fc2"), mlp_ratio * dim, dim, true),
            res1: Tensor::new(),
            out: Tensor::new(),
        }
    }

    /// Rows the attention output (and everything after it) has.
    fn rows(batch: usize, t: usize, cls_only: bool) -> usize {
        if cls_only {
            batch
        } else {
            batch * t
        }
    }

    /// `groups`: equal groups of images whose ViT-BN statistics are separate (the MoCo views).
    pub fn forward(&mut self, x: &[f32], batch: usize, t: usize, cls_only: bool, groups: usize) {
        assert!(!(cls_only && self.is_bn()), "a ViT-BN block needs every token: it cannot run cls_only");
        let m = batch * t;
        let d = self.norm1.d;
        let h = self.fc1.out;
        let r = Block::rows(batch, t, cls_only);
        self.norm1.forward(x, m);
        self.qkv.forward_aug(&self.norm1.output()[..m * (d + 1)], m);
        if cls_only {
            self.attn.forward_cls(&self.qkv.output()[..m * 3 * d], batch, t);
        } else {
            self.attn.forward(&self.qkv.output()[..m * 3 * d], batch, t);
        }
        // res1 = x + proj(o), reading x's cls rows only when cls_only.
        ensure(&mut self.res1, r * d);
        let stride = if cls_only { t * d } else { d };
        self.proj.forward_residual(&self.attn.output()[..r * d], r, x, stride, &mut self.res1);
        match &mut self.norm2 {
            MlpNorm::Ln(n) => {
                n.forward(&self.res1[..r * d], r);
                self.fc1.forward_aug(&n.output()[..r * (d + 1)], r);
            }
            MlpNorm::Bn(n) => {
                n.forward(&self.res1[..r * d], r, groups);
                self.fc1.forward(&n.output()[..r * d], r);
            }
        }
        self.act.forward(&self.fc1.output()[..r * h]);
        ensure(&mut self.out, r * d);
        self.fc2.forward_residual(&self.act.output()[..r * h], r, &self.res1, d, &mut self.out);
    }

    /// Gradient of the block's input (all tokens) into `dx`, given that of its output.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        x: &[f32],
        dout: &[f32],
        dx: &mut [f32],
        s: &mut Scratch,
        batch: usize,
        t: usize,
        cls_only: bool,
    ) {
        let m = batch * t;
        let d = self.norm1.d;
        let h = self.fc1.out;
        let r = Block::rows(batch, t, cls_only);
        ensure(&mut s.d1, m * d);
        ensure(&mut s.d2, m * d);
        ensure(&mut s.hidden, r * h);
        ensure(&mut s.qkv, m * 3 * d);
        let (d1, d2) = (&mut s.d1[..m * d], &mut s.d2[..r * d]);
        let hid = &mut s.hidden[..r * h];
        // MLP branch: out = res1 + fc2(gelu(fc1(norm2(res1))))
        self.fc2.backward(&self.act.output()[..r * h], &dout[..r * d], r, Some(hid));
        Gelu::backward_inplace(&self.fc1.output()[..r * h], hid);
        match &mut self.norm2 {
            MlpNorm::Ln(n) => {
                self.fc1.backward_aug(&n.output()[..r * (d + 1)], hid, r, Some(&mut d1[..r * d]));
                n.backward(&self.res1[..r * d], &d1[..r * d], r, d2);
            }
            MlpNorm::Bn(n) => {
                self.fc1.backward(&n.output()[..r * d], hid, r, Some(&mut d1[..r * d]));
                n.backward(&self.res1[..r * d], &d1[..r * d], r, d2);
            }
        }
        ops::add_assign(d2, &dout[..r * d]); // d2 = d res1
                                             // Attention branch: res1 = x + proj(attn(qkv(norm1(x))))
        self.proj.backward(&self.attn.output()[..r * d], d2, r, Some(&mut d1[..r * d]));
        let dq = &mut s.qkv[..m * 3 * d];
        let qkv = &self.qkv.output()[..m * 3 * d];
        if cls_only {
            self.attn.backward_cls(qkv, &d1[..r * d], dq, &mut s.attn, batch, t);
        } else {
            self.attn.backward(qkv, &d1[..r * d], dq, &mut s.attn, batch, t);
        }
        self.qkv.backward_aug(&self.norm1.output()[..m * (d + 1)], dq, m, Some(d1));
        self.norm1.backward(x, d1, m, dx);
        if cls_only {
            ops::add_rows_strided(dx, d2, batch, t * d, d);
        } else {
            ops::add_assign(dx, d2);
        }
    }

    /// Exchange every saved activation with another block (forward-only memory reuse).
    pub fn swap_activations(&mut self, o: &mut Block) {
        self.norm1.swap_activations(&mut o.norm1);
        self.qkv.swap_activations(&mut o.qkv);
        self.attn.swap_activations(&mut o.attn);
        self.proj.swap_activations(&mut o.proj);
        match (&mut self.norm2, &mut o.norm2) {
            (MlpNorm::Ln(a), MlpNorm::Ln(b)) => a.swap_activations(b),
            (MlpNorm::Bn(a), MlpNorm::Bn(b)) => a.swap_activations(b),
            _ => unreachable!("blocks of one ViT share their norm kind"),
        }
        self.fc1.swap_activations(&mut o.fc1);
        self.act.swap_activations(&mut o.act);
        self.fc2.swap_activations(&mut o.fc2);
        std::mem::swap(&mut self.res1, &mut o.res1);
        std::mem::swap(&mut self.out, &mut o.out);
    }
}

impl Module for Block {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        self.norm1.visit(f);
        self.qkv.visit(f);
        self.proj.visit(f);
        match &mut self.norm2 {
            MlpNorm::Ln(n) => n.visit(f),
            MlpNorm::Bn(n) => n.visit(f),
        }
        self.fc1.visit(f);
        self.fc2.visit(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        if let MlpNorm::Bn(n) = &mut self.norm2 {
            n.visit_buffers(f);
        }
    }
}

impl Block {
    /// A ViT-BN block.
    pub fn is_bn(&self) -> bool {
        matches!(self.norm2, MlpNorm::Bn(_))
    }

    /// Training (batch statistics) or evaluation mode of a ViT-BN block's BatchNorm.
    pub fn set_training(&mut self, training: bool) {
        if let MlpNorm::Bn(n) = &mut self.norm2 {
            n.training = training;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::Rng;
    use crate::nn::gradcheck::{check_layer, Probe};

    fn block(seed: u64) -> Block {
        block_of(seed, false)
    }

    fn block_of(seed: u64, bn: bool) -> Block {
        let mut b = Block::new(0, 8, 2, 2, bn);
        let mut rng = Rng::new(seed);
        b.visit(&mut |p| p.init_normal(&mut rng, 0.4));
        b
    }

    #[test]
    fn finite_differences_full_and_cls_only() {
        let (bt, t, d) = (2, 3, 8);
        for cls_only in [false, true] {
            let ny = if cls_only { bt * d } else { bt * t * d };
            let mut s = Scratch::default();
            check_layer(
                &mut block(1),
                bt * t * d,
                ny,
                |b, x| {
                    b.forward(x, bt, t, cls_only, 1);
                    b.out[..ny].to_vec()
                },
                |b, x, dy, dx| b.backward(x, dy, dx, &mut s, bt, t, cls_only),
                Probe { eps: 1e-3, ..Probe::default() },
            );
        }
    }

    #[test]
    fn cls_only_equals_the_cls_rows_of_the_full_block() {
        let (bt, t, d) = (3, 4, 8);
        let mut rng = Rng::new(5);
        let x: Vec<f32> = (0..bt * t * d).map(|_| rng.normal()).collect();
        let (mut a, mut b) = (block(2), block(2));
        a.forward(&x, bt, t, false, 1);
        b.forward(&x, bt, t, true, 1);
        for i in 0..bt {
            for c in 0..d {
                assert!((a.out[i * t * d + c] - b.out[i * d + c]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn vit_bn_block_finite_differences_with_two_view_groups() {
        // 4 images of 3 tokens in two groups (the views), each normalised on its own.
        let (bt, t, d) = (4, 3, 8);
        let mut s = Scratch::default();
        let mut b = block_of(3, true);
        assert!(b.is_bn());
        check_layer(
            &mut b,
            bt * t * d,
            bt * t * d,
            |b, x| {
                b.forward(x, bt, t, false, 2);
                b.out[..bt * t * d].to_vec()
            },
            |b, x, dy, dx| b.backward(x, dy, dx, &mut s, bt, t, false),
            Probe { eps: 1e-3, ..Probe::default() },
        );
        // The groups matter: one group of four images gives other outputs.
        let mut rng = Rng::new(9);
        let x: Vec<f32> = (0..bt * t * d).map(|_| rng.normal()).collect();
        let (mut a, mut c) = (block_of(3, true), block_of(3, true));
        a.forward(&x, bt, t, false, 2);
        c.forward(&x, bt, t, false, 1);
        assert!(a.out[..bt * t * d].iter().zip(&c.out[..bt * t * d]).any(|(p, q)| (p - q).abs() > 1e-4));
    }
}
