//! The ViT's token embedding: the patch projection (`PatchEmbed`) or the convolutional stem of
//! the official `vit_conv_small` / `vit_conv_base` (`ConvStem` in `vits.py`, after Xiao et al.,
//! "Early Convolutions Help Transformers See Better").
//!
//! The official stem is 4 × [conv 3×3 stride 2, padding 1, no bias → BN → ReLU] with channels
//! 3 → D/8 → D/4 → D/2 → D, then a 1×1 convolution (with bias) to D: a 16× reduction for patch 16.
//! Here the number of stride-2 stages is ⌈log₂ patch⌉ (4 for patch 16, 3 for the 28-px presets'
//! patch 7, which takes 28 → 14 → 7 → 4), the channels double up to D the same way, and the
//! grid must come out as img / patch so the token count is the patch grid's. Checkpoint keys
//! are the official `patch_embed.proj.{0,1,3,4,…}` of the `nn.Sequential`. The stem keeps
//! PyTorch's default convolution init (kaiming-uniform, a = √5: bound 1/√fan_in, bias likewise):
//! the official xavier re-init touches only `PatchEmbed`.

use crate::engine::rng::Rng;
use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};
use crate::nn::conv::{Conv2d, ConvScratch};
use crate::nn::convbn::ConvBn;
use crate::nn::{Buffer, Module, Param, PatchEmbed};

/// Stride-2 stages of a conv stem standing for patches of `patch` pixels: ⌈log₂ patch⌉.
pub fn stem_stages(patch: usize) -> usize {
    (usize::BITS - patch.saturating_sub(1).leading_zeros()) as usize
}

/// Side of the grid after `stages` stride-2 3×3 convolutions with padding 1 on `img` pixels.
pub fn stem_grid(img: usize, stages: usize) -> usize {
    (0..stages).fold(img, |s, _| s.div_ceil(2))
}

pub struct ConvStem {
    pub stages: Vec<ConvBn>,
    /// The final 1×1 convolution; its output `proj.proj.y`, `[images, grid, grid, dim]`, is the
    /// patch tokens in row-major grid order.
    pub proj: Conv2d,
    chans: usize,
    img: usize,
    x_nhwc: Tensor,
    sc: ConvScratch,
    tmp: Tensor,
    dbuf: [Tensor; 2],
    /// Output side after each stage.
    sides: Vec<usize>,
    batch: usize,
}

impl ConvStem {
    pub fn new(prefix: &str, img: usize, patch: usize, chans: usize, dim: usize, rng: &mut Rng) -> ConvStem {
        let s = stem_stages(patch);
        let mut stages = Vec::with_capacity(s);
        let mut cin = chans;
        for i in 0..s {
            let cout = dim >> (s - 1 - i);
            let mut st =
                ConvBn::new(&format!("{prefix}.{}", 3 * i), &format!("{prefix}.{}", 3 * i + 1), cin, cout, 3, 2, true);
            st.conv.proj.w.init_uniform(rng, 1.0 / ((cin * 9) as f64).sqrt());
            stages.push(st);
            cin = cout;
        }
        let mut proj = Conv2d::new(&format!("{prefix}.{}", 3 * s), dim, dim, 1, 1, 0, true);
        let bound = 1.0 / (dim as f64).sqrt();
        proj.proj.w.init_uniform(rng, bound);
        proj.proj.b.as_mut().unwrap().init_uniform(rng, bound);
        ConvStem {
            stages,
            proj,
            chans,
            img,
            x_nhwc: Tensor::new(),
            sc: ConvScratch::default(),
            tmp: Tensor::new(),
            dbuf: Default::default(),
            sides: Vec::new(),
            batch: 0,
        }
    }

    /// `x`: images `[batch, chans, img, img]`; BN statistics per each of `groups` equal groups of
    /// images. Output in `proj.proj.y`.
    pub fn forward(&mut self, x: &[f32], batch: usize, groups: usize) {
        let (c, s) = (self.chans, self.img);
        assert_eq!(x.len(), batch * c * s * s, "conv stem: image shape");
        ops::nchw_to_nhwc(&mut self.x_nhwc, x, batch, c, s * s);
        self.batch = batch;
        self.sides.clear();
        let mut side = s;
        for i in 0..self.stages.len() {
            let (prev, rest) = self.stages.split_at_mut(i);
            let input = if i == 0 { &self.x_nhwc[..] } else { prev[i - 1].out() };
            let len = batch * side * side * rest[0].conv.cin;
            side = rest[0].forward(&input[..len], batch, side, side, groups, &mut self.sc).0;
            self.sides.push(side);
        }
        let last = self.stages.last().unwrap();
        self.proj.forward(&last.out()[..batch * side * side * self.proj.cin], batch, side, side, &mut self.sc);
    }

    /// Gradients of the stem's parameters from the gradient of its output tokens.
    pub fn backward(&mut self, dy: &[f32]) {
        let n = self.batch;
        let side = *self.sides.last().unwrap();
        let [da, db] = &mut self.dbuf;
        let len = n * side * side * self.proj.cin;
        ensure(da, len);
        let last = self.stages.last().unwrap().out();
        self.proj.backward(&last[..len], dy, Some(&mut da[..len]), &mut self.sc);
        for i in (0..self.stages.len()).rev() {
            let out_len = n * self.sides[i] * self.sides[i] * self.stages[i].conv.cout;
            let in_side = if i == 0 { self.img } else { self.sides[i - 1] };
            let in_len = n * in_side * in_side * self.stages[i].conv.cin;
            let (prev, rest) = self.stages.split_at_mut(i);
            let (input, dx) = if i == 0 {
                (&self.x_nhwc[..in_len], None)
            } else {
                ensure(db, in_len);
                (&prev[i - 1].out()[..in_len], Some(&mut db[..in_len]))
            };
            rest[0].backward(input, &mut da[..out_len], &mut self.tmp, dx, &mut self.sc);
            std::mem::swap(da, db);
        }
    }
}

impl Module for ConvStem {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        for s in self.stages.iter_mut() {
            s.visit(f);
        }
        self.proj.visit(f);
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        for s in self.stages.iter_mut() {
            s.visit_buffers(f);
        }
    }
}

/// How a ViT turns an image into patch tokens (one per ViT: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum Embed {
    Patch(PatchEmbed),
    Conv(ConvStem),
}

impl Embed {
    /// `x`: images `[batch, chans, img, img]`; BatchNorms (the conv stem's) per each of `groups`
    /// equal groups of images.
    pub fn forward(&mut self, x: &[f32], batch: usize, groups: usize) {
        match self {
            Embed::Patch(p) => p.forward(x, batch),
            Embed::Conv(c) => c.forward(x, batch, groups),
        }
    }

    /// The patch tokens of the last forward, `[batch * patches, dim]`.
    pub fn out(&self) -> &[f32] {
        match self {
            Embed::Patch(p) => &p.proj.y,
            Embed::Conv(c) => &c.proj.proj.y,
        }
    }

    pub fn backward(&mut self, dy: &[f32], batch: usize) {
        match self {
            Embed::Patch(p) => p.backward(dy, batch),
            Embed::Conv(c) => c.backward(dy),
        }
    }

    /// Whether any of its parameters trains (the patch projection is frozen by
    /// `stop_grad_conv1`, either by `freeze-patch`, which freezes every stem parameter).
    pub fn trainable(&self) -> bool {
        match self {
            Embed::Patch(p) => p.proj.w.trainable,
            // Trained unless an instability action froze it (`on_spike = "freeze-patch"`).
            Embed::Conv(c) => c.proj.proj.w.trainable,
        }
    }

    /// Training (batch statistics) or evaluation mode of the conv stem's BatchNorms.
    pub fn set_training(&mut self, training: bool) {
        if let Embed::Conv(c) = self {
            for s in c.stages.iter_mut() {
                s.bn.training = training;
            }
        }
    }
}

impl Module for Embed {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        match self {
            Embed::Patch(p) => p.visit(f),
            Embed::Conv(c) => c.visit(f),
        }
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        if let Embed::Conv(c) = self {
            c.visit_buffers(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn stages_grid_and_official_names() {
        assert_eq!((stem_stages(16), stem_stages(7), stem_stages(4), stem_stages(8)), (4, 3, 2, 3));
        assert_eq!((stem_grid(224, 4), stem_grid(28, 3), stem_grid(28, 2), stem_grid(32, 3)), (14, 4, 7, 4));
        let mut stem = ConvStem::new("patch_embed.proj", 224, 16, 3, 384, &mut Rng::new(0));
        let mut names = Vec::new();
        stem.visit(&mut |p| names.push(format!("{} {:?}", p.name, p.shape)));
        stem.visit_buffers(&mut |b| names.push(b.name));
        let want = [
            "patch_embed.proj.0.weight [48, 3, 3, 3]",
            "patch_embed.proj.1.weight [48]",
            "patch_embed.proj.1.bias [48]",
            "patch_embed.proj.3.weight [96, 48, 3, 3]",
            "patch_embed.proj.4.weight [96]",
            "patch_embed.proj.4.bias [96]",
            "patch_embed.proj.6.weight [192, 96, 3, 3]",
            "patch_embed.proj.7.weight [192]",
            "patch_embed.proj.7.bias [192]",
            "patch_embed.proj.9.weight [384, 192, 3, 3]",
            "patch_embed.proj.10.weight [384]",
            "patch_embed.proj.10.bias [384]",
            "patch_embed.proj.12.weight [384, 384, 1, 1]",
            "patch_embed.proj.12.bias [384]",
            "patch_embed.proj.1.running_mean",
        ];
        assert_eq!(names[..want.len()], want.map(String::from));
        assert_eq!(names.len(), 14 + 4 * 3);
    }

    #[test]
    fn finite_differences_with_view_groups() {
        // 7 px → 4 → 2: two stages of patch 4 (grid 2 = ceil-halving twice), two channels, two
        // groups of two images normalised separately.
        let mut rng = Rng::new(5);
        let mut stem = ConvStem::new("p", 7, 4, 2, 8, &mut rng);
        for s in stem.stages.iter_mut() {
            s.bn.gamma.as_mut().unwrap().init_normal(&mut rng, 1.0);
            s.bn.beta.as_mut().unwrap().init_normal(&mut rng, 0.5);
        }
        let n = 4;
        check_layer(
            &mut stem,
            n * 2 * 49,
            n * 4 * 8,
            |m, x| {
                m.forward(x, n, 2);
                m.proj.proj.y.to_vec()
            },
            |m, _, dy, _| m.backward(dy),
            Probe { eps: 1e-3, tol: 2e-2, check_input: false, max_per_param: 24, kinks: true, ..Probe::default() },
        );
    }
}
