//! Vision Transformer as the official `vits.py` (timm 0.4.9 `VisionTransformer` with the MoCo v3
//! changes): pre-norm blocks, GELU MLP of ratio 4, qkv bias, LayerNorm eps 1e-6, one cls token,
//! 2D sin-cos (or learned, or no) position embedding, the official initialisation, and the
//! optional fixed random patch projection (`stop_grad_conv1`) or the conv stem of `vit_conv_*`
//! (`conv_stem`, see [`super::convstem`]). The feature is the cls token after the final LayerNorm.

use super::block::{Block, Scratch};
use super::convstem::{stem_grid, stem_stages, ConvStem, Embed};
use crate::engine::rng::Rng;
use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};
use crate::nn::posembed::{sincos_2d, PosEmbedKind};
use crate::nn::{Buffer, LayerNorm, Module, Param, ParamKind, PatchEmbed};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub img: usize,
    pub patch: usize,
    pub in_chans: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    pub pos: PosEmbedKind,
    pub stop_grad_conv1: bool,
    /// The convolutional stem of `vit_conv_*` instead of the patch projection (see
    /// [`super::convstem`]).
    #[serde(default)]
    pub conv_stem: bool,
    /// ViT-BN: BatchNorm instead of LayerNorm in front of every MLP (see [`super::block`]).
    #[serde(default)]
    pub mlp_bn: bool,
}

/// (dim, depth, heads) of the named sizes. `vit_small` has 12 heads in MoCo v3 (DeiT-S has 6).
pub fn arch_dims(name: &str) -> Option<(usize, usize, usize)> {
    Some(match name {
        "vit_tiny" => (192, 12, 3),
        "vit_small" => (384, 12, 12),
        "vit_base" => (768, 12, 12),
        // With the conv stem (one block fewer, for about the same compute).
        "vit_conv_small" => (384, 11, 12),
        "vit_conv_base" => (768, 11, 12),
        "vit_large" => (1024, 24, 16),
        "vit_huge" => (1280, 32, 16),
        _ => return None,
    })
}

pub const ARCHS: &[&str] =
    &["vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge", "vit_conv_small", "vit_conv_base"];

impl VitConfig {
    pub fn tokens(&self) -> usize {
        1 + (self.img / self.patch).pow(2)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.patch == 0 || !self.img.is_multiple_of(self.patch) {
            return Err(format!("image size {} must be a multiple of the patch size {}", self.img, self.patch));
        }
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(format!("dim {} must be divisible by the number of heads {}", self.dim, self.heads));
        }
        if self.pos == PosEmbedKind::Sincos && !self.dim.is_multiple_of(4) {
            return Err(format!("the 2D sin-cos position embedding needs dim divisible by 4 (dim {})", self.dim));
        }
        if self.conv_stem {
            let (s, g) = (stem_stages(self.patch), self.img / self.patch);
            let got = stem_grid(self.img, s);
            if self.patch < 2 || got != g {
                return Err(format!(
                    "the conv stem's {s} stride-2 stages take {} px to a {got}×{got} grid, not the {g}×{g} of patch {}: \
                     choose a patch size that is a power of two, or one the image size halves down to",
                    self.img, self.patch
                ));
            }
            if !self.dim.is_multiple_of(1 << (s - 1)) {
                return Err(format!("the conv stem needs dim divisible by {} (dim {})", 1 << (s - 1), self.dim));
            }
            if self.stop_grad_conv1 {
                return Err(
                    "stop_grad_conv1 freezes the patch projection, which the conv stem replaces (the official \
                            code ignores it there): set stop_grad_conv1=false"
                        .into(),
                );
            }
        }
        if self.depth == 0 || self.in_chans == 0 {
            return Err("depth and input channels must be at least 1".into());
        }
        Ok(())
    }
}

/// Which token outputs make an evaluation feature. Training always uses `Cls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitFeature {
    /// The cls token after the final norm: MoCo v3's feature, and its linear probe's.
    Cls,
    /// The cls token and the mean of the patch tokens, each after the final norm (`2·dim`): the
    /// probe DINO (Caron et al., 2021) uses for ViT-B.
    ClsAvg,
    /// The cls tokens of the last n blocks, each after the final norm (`n·dim`): DINO's probe for
    /// ViT-S (n = 4).
    LastCls(usize),
}

impl VitFeature {
    /// Width of the feature for a ViT of width `dim`.
    pub fn dim(self, dim: usize) -> usize {
        match self {
            VitFeature::Cls => dim,
            VitFeature::ClsAvg => 2 * dim,
            VitFeature::LastCls(n) => n * dim,
        }
    }
}

impl std::str::FromStr for VitFeature {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cls" => Ok(VitFeature::Cls),
            "cls+avg" => Ok(VitFeature::ClsAvg),
            _ => match s.strip_prefix("last").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n >= 1 => Ok(VitFeature::LastCls(n)),
                _ => Err(format!("unknown feature '{s}': expected cls, cls+avg or lastN (e.g. last4)")),
            },
        }
    }
}

impl std::fmt::Display for VitFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VitFeature::Cls => write!(f, "cls"),
            VitFeature::ClsAvg => write!(f, "cls+avg"),
            VitFeature::LastCls(n) => write!(f, "last{n}"),
        }
    }
}

pub struct Vit {
    pub cfg: VitConfig,
    pub cls_token: Param,
    /// `[1, tokens, dim]`; frozen for sin-cos, trainable when learned, absent for none.
    pub pos_embed: Option<Param>,
    pub patch_embed: Embed,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    /// Keep every block's activations for a backward pass. When false (the momentum encoder),
    /// blocks pass two sets of buffers along, so memory does not grow with depth.
    pub keep_activations: bool,
    tokens: Tensor,
    dtok: [Tensor; 2],
    /// The last block's cls rows, when it computed every token (ViT-BN).
    cls_rows: Tensor,
    scratch: Scratch,
}

impl Vit {
    pub fn new(cfg: &VitConfig, rng: &mut Rng) -> Vit {
        cfg.validate().expect("invalid ViT configuration");
        let (d, t) = (cfg.dim, cfg.tokens());
        let mut cls_token = Param::zeros("cls_token", &[1, 1, d], ParamKind::Token);
        let pos_embed = match cfg.pos {
            PosEmbedKind::Sincos => {
                let mut p = Param::zeros("pos_embed", &[1, t, d], ParamKind::Token);
                p.w = sincos_2d(cfg.img / cfg.patch, d, 10000.0).into();
                p.trainable = false;
                Some(p)
            }
            PosEmbedKind::Learned => {
                let mut p = Param::zeros("pos_embed", &[1, t, d], ParamKind::Token);
                p.init_trunc_normal(rng, 0.02);
                Some(p)
            }
            PosEmbedKind::None => None,
        };
        let mut blocks: Vec<Block> =
            (0..cfg.depth).map(|i| Block::new(i, d, cfg.heads, cfg.mlp_ratio, cfg.mlp_bn)).collect();
        // Official init: xavier-uniform for every Linear (qkv as three separate matrices), zero
        // biases; patch projection as a Linear of fan-in 3·p·p (the official code hard-codes 3
        // channels, which we keep for parity); cls token ~ N(0, 1e-6).
        for b in blocks.iter_mut() {
            let bound_qkv = (6.0 / (d + d) as f64).sqrt();
            b.qkv.w.init_uniform(rng, bound_qkv);
            for l in [&mut b.proj, &mut b.fc1, &mut b.fc2] {
                let bound = (6.0 / (l.inp + l.out) as f64).sqrt();
                l.w.init_uniform(rng, bound);
            }
        }
        let patch_embed = if cfg.conv_stem {
            Embed::Conv(ConvStem::new("patch_embed.proj", cfg.img, cfg.patch, cfg.in_chans, d, rng))
        } else {
            let mut pe = PatchEmbed::new("patch_embed.proj", cfg.img, cfg.patch, cfg.in_chans, d);
            let bound = (6.0 / (3 * cfg.patch * cfg.patch + d) as f64).sqrt();
            pe.proj.w.init_uniform(rng, bound);
            if cfg.stop_grad_conv1 {
                pe.proj.w.trainable = false;
                pe.proj.b.as_mut().unwrap().trainable = false;
            }
            Embed::Patch(pe)
        };
        cls_token.init_normal(rng, 1e-6);
        Vit {
            cfg: cfg.clone(),
            cls_token,
            pos_embed,
            patch_embed,
            blocks,
            norm: LayerNorm::new("norm", d, 1e-6),
            keep_activations: true,
            tokens: Tensor::new(),
            dtok: [Tensor::new(), Tensor::new()],
            cls_rows: Tensor::new(),
            scratch: Scratch::default(),
        }
    }

    /// Images `[batch, chans, img, img]` → features `[batch, dim]` (the returned slice).
    pub fn forward(&mut self, x: &[f32], batch: usize) -> &[f32] {
        self.forward_groups(x, batch, 1)
    }

    /// [`Vit::forward`] with the conv stem's BatchNorms normalising `groups` equal groups of
    /// images separately (the views of MoCo, as the official separate passes).
    pub fn forward_groups(&mut self, x: &[f32], batch: usize, groups: usize) -> &[f32] {
        let (d, t, n) = (self.cfg.dim, self.cfg.tokens(), self.blocks.len());
        self.embed(x, batch, groups);
        // Only the cls token's output is used: the last block computes that row alone (a ViT-BN
        // block needs every token; then the cls rows are taken from its output).
        let cls_only = self.last_cls_only();
        let mut rows = std::mem::take(&mut self.cls_rows);
        self.run_blocks(batch, cls_only, groups, |i, out, norm| {
            if i == n - 1 {
                norm.forward(cls_rows(out, batch, t, d, cls_only, &mut rows), batch);
            }
        });
        self.cls_rows = rows;
        &self.norm.output()[..batch * d]
    }

    /// An evaluation feature of `kind` for each image, `[batch, kind.dim(dim)]` (see
    /// [`VitFeature`]; `Cls` gives what [`Vit::forward`] does). Leaves the final norm's output
    /// holding something else: not for training.
    pub fn features(&mut self, x: &[f32], batch: usize, kind: VitFeature) -> Vec<f32> {
        let (d, t, n) = (self.cfg.dim, self.cfg.tokens(), self.blocks.len());
        let fd = kind.dim(d);
        let first = match kind {
            VitFeature::LastCls(k) => {
                assert!(
                    (1..=n).contains(&k),
                    "feature last{k} of a ViT with {n} blocks: check it with Backbone::feature_dim first"
                );
                n - k
            }
            _ => n - 1,
        };
        let avg = kind == VitFeature::ClsAvg;
        let mut f = vec![0.0f32; batch * fd];
        let mut cls = vec![0.0f32; batch * d];
        self.embed(x, batch, 1);
        let cls_last = !avg && self.last_cls_only();
        self.run_blocks(batch, cls_last, 1, |i, out, norm| {
            if i < first {
                return;
            }
            if avg {
                // The last block, all tokens: cls and the mean of the patch tokens, after the norm.
                norm.forward(&out[..batch * t * d], batch * t);
                for (b, fr) in f.chunks_mut(fd).enumerate() {
                    let y = &norm.output()[b * t * d..(b + 1) * t * d];
                    fr[..d].copy_from_slice(&y[..d]);
                    for row in y[d..].chunks(d) {
                        for (m, v) in fr[d..].iter_mut().zip(row) {
                            *m += v / (t - 1) as f32;
                        }
                    }
                }
                return;
            }
            // The cls rows (the last block computed only those), after the final norm.
            let stride = if i == n - 1 && cls_last { d } else { t * d };
            for (b, c) in cls.chunks_mut(d).enumerate() {
                c.copy_from_slice(&out[b * stride..b * stride + d]);
            }
            norm.forward(&cls, batch);
            let slot = (i - first) * d;
            for (fr, y) in f.chunks_mut(fd).zip(norm.y.chunks(d)) {
                fr[slot..slot + d].copy_from_slice(y);
            }
        });
        f
    }

    /// The attention of the cls token over every token in each head of the last block, as the
    /// last forward of `batch` images left it, `[batch, heads, tokens]` (each row sums to 1).
    pub fn last_cls_attention(&self, batch: usize) -> Vec<f32> {
        let (t, h) = (self.cfg.tokens(), self.cfg.heads);
        let p = &self.blocks[self.blocks.len() - 1].attn.p;
        if self.last_cls_only() {
            p[..batch * h * t].to_vec()
        } else {
            // Every query was computed: the cls query is row 0 of each head's t x t map.
            (0..batch * h).flat_map(|bh| p[bh * t * t..bh * t * t + t].iter().copied()).collect()
        }
    }

    /// Whether the last block computes the cls rows alone (not for ViT-BN).
    fn last_cls_only(&self) -> bool {
        !self.cfg.mlp_bn
    }

    /// Training (batch statistics) or evaluation mode of every BatchNorm (the conv stem's and
    /// ViT-BN's).
    pub fn set_training(&mut self, training: bool) {
        self.patch_embed.set_training(training);
        for b in self.blocks.iter_mut() {
            b.set_training(training);
        }
    }

    /// The token sequence of a batch: cls token and patch projections, plus the position
    /// embedding.
    fn embed(&mut self, x: &[f32], batch: usize, groups: usize) {
        let (d, t) = (self.cfg.dim, self.cfg.tokens());
        self.patch_embed.forward(x, batch, groups);
        ensure(&mut self.tokens, batch * t * d);
        let (pe, cls) = (self.patch_embed.out(), &self.cls_token.w);
        let pos = self.pos_embed.as_ref().map(|p| &p.w[..]);
        ops::tokens_forward(&mut self.tokens, pe, cls, pos, batch, t, d);
    }

    /// The blocks over the embedded tokens; after block i, `each(i, its output, final norm)`.
    /// The last block computes the cls rows alone when `last_cls_only`.
    fn run_blocks(
        &mut self,
        batch: usize,
        last_cls_only: bool,
        groups: usize,
        mut each: impl FnMut(usize, &[f32], &mut LayerNorm),
    ) {
        let (d, t) = (self.cfg.dim, self.cfg.tokens());
        let n = self.blocks.len();
        for i in 0..n {
            let (prev, rest) = self.blocks.split_at_mut(i);
            if !self.keep_activations && i >= 2 {
                // Block i-2 is done with: hand its buffers to block i.
                rest[0].swap_activations(&mut prev[i - 2]);
            }
            let input = if i == 0 { &self.tokens[..batch * t * d] } else { &prev[i - 1].output()[..batch * t * d] };
            rest[0].forward(input, batch, t, last_cls_only && i == n - 1, groups);
            each(i, &rest[0].out, &mut self.norm);
        }
        if !self.keep_activations {
            // Return the two live buffer sets to blocks 0 and 1 for the next call.
            for i in n.saturating_sub(2)..n {
                if i >= 2 {
                    let (a, b) = self.blocks.split_at_mut(i);
                    b[0].swap_activations(&mut a[i % 2]);
                }
            }
        }
    }

    /// Gradients of all trainable parameters given the gradient of the features.
    pub fn backward(&mut self, dfeat: &[f32], batch: usize) {
        assert!(self.keep_activations, "backward through a ViT that does not keep its activations");
        let (d, t) = (self.cfg.dim, self.cfg.tokens());
        let m = batch * t;
        for v in self.dtok.iter_mut() {
            ensure(v, m * d);
        }
        let [ga, gb] = &mut self.dtok;
        let (mut cur, mut next) = (&mut ga[..m * d], &mut gb[..m * d]);
        // Final norm on the cls rows, then the blocks, the last one for its cls rows only (a
        // ViT-BN one for every row, the other rows' gradient zero).
        let n = self.blocks.len();
        let cls_only = !self.cfg.mlp_bn;
        let rows = cls_rows(self.blocks[n - 1].output(), batch, t, d, cls_only, &mut self.cls_rows);
        if cls_only {
            self.norm.backward(rows, dfeat, batch, &mut cur[..batch * d]);
        } else {
            ensure(&mut self.scratch.d2, batch * d);
            self.norm.backward(rows, dfeat, batch, &mut self.scratch.d2[..batch * d]);
            cur.fill(0.0);
            for (b, g) in self.scratch.d2[..batch * d].chunks(d).enumerate() {
                cur[b * t * d..b * t * d + d].copy_from_slice(g);
            }
        }
        for i in (0..n).rev() {
            let (prev, rest) = self.blocks.split_at_mut(i);
            let input = if i == 0 { &self.tokens[..m * d] } else { &prev[i - 1].output()[..m * d] };
            rest[0].backward(input, cur, next, &mut self.scratch, batch, t, cls_only && i == n - 1);
            std::mem::swap(&mut cur, &mut next);
        }
        // `cur` is the gradient of the token sequence.
        let dt = &*cur;
        let dcls = self.cls_token.trainable.then_some(&mut self.cls_token.g[..]);
        let dpos = self.pos_embed.as_mut().filter(|p| p.trainable).map(|p| &mut p.g[..]);
        let np = t - 1;
        let dpatches = if self.patch_embed.trainable() {
            ensure(&mut self.scratch.hidden, batch * np * d);
            Some(&mut self.scratch.hidden[..batch * np * d])
        } else {
            None
        };
        ops::tokens_backward(dcls, dpos, dpatches, dt, batch, t, d);
        if self.patch_embed.trainable() {
            let dp = &self.scratch.hidden[..batch * np * d];
            self.patch_embed.backward(dp, batch);
        }
    }
}

/// The cls rows `[batch, d]` of a last block's output: the output itself after a `cls_only`
/// forward, else row 0 of each image's `t` rows, copied into `buf`.
fn cls_rows<'a>(out: &'a [f32], batch: usize, t: usize, d: usize, cls_only: bool, buf: &'a mut Tensor) -> &'a [f32] {
    if cls_only {
        return &out[..batch * d];
    }
    ensure(buf, batch * d);
    for (b, c) in buf[..batch * d].chunks_mut(d).enumerate() {
        c.copy_from_slice(&out[b * t * d..b * t * d + d]);
    }
    &buf[..batch * d]
}

impl Module for Vit {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        f(&mut self.cls_token);
        if let Some(p) = &mut self.pos_embed {
            f(p);
        }
        self.patch_embed.visit(f);
        for b in self.blocks.iter_mut() {
            b.visit(f);
        }
        self.norm.visit(f);
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        self.patch_embed.visit_buffers(f);
        for b in self.blocks.iter_mut() {
            b.visit_buffers(f);
        }
    }
}

#[cfg(test)]
mod tests;
