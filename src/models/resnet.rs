//! ResNets as torchvision's (`resnet18`, `resnet50`; `zero_init_residual` as the official MoCo v3
//! builds them), on NHWC activations, with a CIFAR variant (3×3 stride-1 stem, no max-pool). The
//! feature is the global average pool (the `fc` input). BatchNorms take a number of row groups,
//! so the two views of MoCo are normalised separately as in the official two passes.
//!
//! What is kept for the backward is what torchvision's autograd keeps: per stage the convolution's
//! output (the BN's input) and the BN's output after the in-place ReLU (the next convolution's
//! input and the ReLU's mask). A block's sum `relu(bn3 + identity)` is written in place over its
//! last BN's output, and the downsample's BN output, needed only for that sum, lives in a scratch
//! shared by every block. A ResNet that is never differentiated (the momentum encoder, feature
//! extraction: `keep_activations` false) keeps nothing: each block borrows its buffers from a
//! shared pool for its forward, and the block outputs alternate between two slots.

use crate::engine::rng::Rng;
use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};
use crate::nn::conv::{Conv2d, ConvScratch};
use crate::nn::convbn::ConvBn;
use crate::nn::pool::MaxPool2d;
use crate::nn::{BatchNorm1d, Buffer, Module, Param};

/// A ResNet stage (conv → BN → optional ReLU) with torchvision's init of the convolution:
/// `kaiming_normal_(mode='fan_out', nonlinearity='relu')`.
#[allow(clippy::too_many_arguments)]
fn stage(
    name: &str,
    bn_name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    relu: bool,
    rng: &mut Rng,
) -> ConvBn {
    let mut s = ConvBn::new(name, bn_name, cin, cout, k, stride, relu);
    s.conv.proj.w.init_normal(rng, (2.0 / (cout * k * k) as f32).sqrt());
    s
}

struct Block {
    /// The last stage's BN output is the block's output: relu(main + identity), in place.
    stages: Vec<ConvBn>,
    down: Option<ConvBn>,
    dims: (usize, usize, usize, usize, usize),
}

/// Swap each tensor with the slot of the same index (the slots grow to as many as needed); the
/// same call again swaps them back.
fn swap_slots(ts: Vec<&mut Tensor>, slots: &mut Vec<Tensor>) {
    if slots.len() < ts.len() {
        slots.resize_with(ts.len(), Tensor::new);
    }
    for (t, s) in ts.into_iter().zip(slots.iter_mut()) {
        std::mem::swap(t, s);
    }
}

impl Block {
    fn new(prefix: &str, cin: usize, width: usize, stride: usize, bottleneck: bool, rng: &mut Rng) -> Block {
        let n = |s: &str| format!("{prefix}.{s}");
        let (stages, cout) = if bottleneck {
            let cout = width * 4;
            (
                vec![
                    stage(&n("conv1"), &n("bn1"), cin, width, 1, 1, true, rng),
                    stage(&n("conv2"), &n("bn2"), width, width, 3, stride, true, rng),
                    stage(&n("conv3"), &n("bn3"), width, cout, 1, 1, false, rng),
                ],
                cout,
            )
        } else {
            (
                vec![
                    stage(&n("conv1"), &n("bn1"), cin, width, 3, stride, true, rng),
                    stage(&n("conv2"), &n("bn2"), width, width, 3, 1, false, rng),
                ],
                width,
            )
        };
        let down = (stride != 1 || cin != cout)
            .then(|| stage(&n("downsample.0"), &n("downsample.1"), cin, cout, 1, stride, false, rng));
        Block { stages, down, dims: (0, 0, 0, 0, 0) }
    }

    /// The block's output, `[n, oh, ow, cout]`.
    fn out(&self) -> &[f32] {
        self.stages.last().unwrap().out()
    }

    /// The buffer behind [`Block::out`].
    fn out_tensor(&mut self) -> &mut Tensor {
        &mut self.stages.last_mut().unwrap().bn.y
    }

    /// The buffers a forward writes and only the forward reads: the downsample's BN output; with
    /// `all`, every activation but the output (what a block that is never differentiated borrows).
    fn scratch(&mut self, all: bool) -> Vec<&mut Tensor> {
        let mut v = Vec::new();
        let last = self.stages.len() - 1;
        if all {
            for (i, st) in self.stages.iter_mut().enumerate() {
                v.push(&mut st.conv.proj.y);
                if i < last {
                    v.push(&mut st.bn.y);
                }
            }
        }
        if let Some(d) = &mut self.down {
            if all {
                v.push(&mut d.conv.proj.y);
            }
            v.push(&mut d.bn.y);
        }
        v
    }

    fn cout(&self) -> usize {
        self.stages.last().unwrap().conv.cout
    }

    fn forward(
        &mut self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        groups: usize,
        sc: &mut ConvScratch,
    ) -> (usize, usize) {
        // Buffers may be longer than this batch needs (a larger batch ran before).
        let x = &x[..n * h * w * self.stages[0].conv.cin];
        let (mut ch, mut cw) = (h, w);
        for i in 0..self.stages.len() {
            let (prev, rest) = self.stages.split_at_mut(i);
            let input = if i == 0 { x } else { prev[i - 1].out() };
            let cin = rest[0].conv.cin;
            (ch, cw) = rest[0].forward(&input[..n * ch * cw * cin], n, ch, cw, groups, sc);
        }
        let len = n * ch * cw * self.cout();
        let identity = match &mut self.down {
            Some(d) => {
                d.forward(x, n, h, w, groups, sc);
                &d.out()[..len]
            }
            None => &x[..len],
        };
        let sum = &mut self.stages.last_mut().unwrap().bn.y[..len];
        ops::add_assign(sum, identity);
        ops::relu_inplace(sum);
        self.dims = (n, h, w, ch, cw);
        (ch, cw)
    }

    /// `x`: the block's input in the forward.
    fn backward(&mut self, x: &[f32], dout: &[f32], dx: &mut [f32], s: &mut [Tensor; 3], sc: &mut ConvScratch) {
        let (n, h, w, oh, ow) = self.dims;
        let len = n * oh * ow * self.cout();
        let xin = n * h * w * self.stages[0].conv.cin;
        let [g, u, t] = s;
        ensure(g, len);
        g[..len].copy_from_slice(&dout[..len]);
        ops::relu_backward_inplace(&mut g[..len], &self.out()[..len]);
        // Identity path: the block output's gradient through the final ReLU.
        match &mut self.down {
            Some(d) => {
                ensure(u, len);
                u[..len].copy_from_slice(&g[..len]);
                d.backward(x, &mut u[..len], t, Some(&mut dx[..xin]), sc);
            }
            None => dx[..xin].copy_from_slice(&g[..len]),
        }
        // Main path, last stage first.
        let (mut cur, mut nxt) = (std::mem::take(g), std::mem::take(u));
        for i in (0..self.stages.len()).rev() {
            let (in_len, out_len) = (self.stage_in_len(i), self.stage_out_len(i));
            ensure(&mut nxt, in_len);
            let (prev, rest) = self.stages.split_at_mut(i);
            let input = if i == 0 { x } else { prev[i - 1].out() };
            rest[0].backward(&input[..in_len], &mut cur[..out_len], t, Some(&mut nxt[..in_len]), sc);
            std::mem::swap(&mut cur, &mut nxt);
        }
        ops::add_assign(&mut dx[..xin], &cur[..xin]);
        (*g, *u) = (cur, nxt);
    }

    fn stage_in_len(&self, i: usize) -> usize {
        let (n, h, w, _, _) = self.dims;
        let (mut ch, mut cw) = (h, w);
        for st in &self.stages[..i] {
            (ch, cw) = st.conv.out_size(ch, cw);
        }
        n * ch * cw * self.stages[i].conv.cin
    }

    fn stage_out_len(&self, i: usize) -> usize {
        let (n, h, w, _, _) = self.dims;
        let (mut ch, mut cw) = (h, w);
        for st in &self.stages[..=i] {
            (ch, cw) = st.conv.out_size(ch, cw);
        }
        n * ch * cw * self.stages[i].conv.cout
    }

    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        for st in self.stages.iter_mut() {
            st.visit(f);
        }
        if let Some(d) = &mut self.down {
            d.visit(f);
        }
    }

    fn bns(&mut self) -> Vec<&mut BatchNorm1d> {
        let mut v: Vec<&mut BatchNorm1d> = self.stages.iter_mut().map(|s| &mut s.bn).collect();
        if let Some(d) = &mut self.down {
            v.push(&mut d.bn);
        }
        v
    }
}

pub struct ResNet {
    stem: ConvBn,
    pool: Option<MaxPool2d>,
    blocks: Vec<Block>,
    /// Pooled features `[images, channels]`.
    pub feat: Tensor,
    pub dim: usize,
    /// Keep what the backward needs (true), or nothing (a ResNet never differentiated: see the
    /// module doc).
    pub keep_activations: bool,
    /// The buffers lent to one block at a time (see [`Block::scratch`]).
    pool_mid: Vec<Tensor>,
    /// The slots block outputs alternate between when nothing is kept (slot 1 first holds the
    /// stem's or the max-pool's output).
    pool_out: [Tensor; 2],
    /// Whether the last forward kept its activations.
    kept: bool,
    x_nhwc: Tensor,
    scratch: [Tensor; 3],
    dbuf: [Tensor; 2],
    conv_scratch: ConvScratch,
    dims: Vec<(usize, usize)>,
    /// Input height and width of the last forward.
    dims_in: (usize, usize),
    in_chans: usize,
}

impl ResNet {
    /// `layers`: blocks per stage ([2,2,2,2] for ResNet-18, [3,4,6,3] for ResNet-50); `width`:
    /// the first stage's width (64 in torchvision).
    pub fn new(
        layers: &[usize],
        bottleneck: bool,
        width: usize,
        in_chans: usize,
        cifar: bool,
        rng: &mut Rng,
    ) -> ResNet {
        let stem = if cifar {
            stage("conv1", "bn1", in_chans, width, 3, 1, true, rng)
        } else {
            stage("conv1", "bn1", in_chans, width, 7, 2, true, rng)
        };
        let mut blocks = Vec::new();
        let mut cin = width;
        for (li, &nb) in layers.iter().enumerate() {
            let wdt = width << li;
            for bi in 0..nb {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let b = Block::new(&format!("layer{}.{bi}", li + 1), cin, wdt, stride, bottleneck, rng);
                cin = b.cout();
                blocks.push(b);
            }
        }
        // zero_init_residual: the last BN of every block starts at gamma 0.
        for b in blocks.iter_mut() {
            b.stages.last_mut().unwrap().bn.gamma.as_mut().unwrap().w.fill(0.0);
        }
        ResNet {
            stem,
            pool: (!cifar).then(|| MaxPool2d::new(3, 2, 1)),
            blocks,
            feat: Tensor::new(),
            dim: cin,
            keep_activations: true,
            pool_mid: Vec::new(),
            pool_out: Default::default(),
            kept: false,
            x_nhwc: Tensor::new(),
            scratch: Default::default(),
            dbuf: Default::default(),
            conv_scratch: ConvScratch::default(),
            dims: Default::default(),
            dims_in: (0, 0),
            in_chans,
        }
    }

    pub fn resnet50(in_chans: usize, cifar: bool, rng: &mut Rng) -> ResNet {
        ResNet::new(&[3, 4, 6, 3], true, 64, in_chans, cifar, rng)
    }

    pub fn resnet18(in_chans: usize, cifar: bool, rng: &mut Rng) -> ResNet {
        ResNet::new(&[2, 2, 2, 2], false, 64, in_chans, cifar, rng)
    }

    pub fn in_chans(&self) -> usize {
        self.in_chans
    }

    /// BatchNorms in training mode (batch statistics, running stats updated) or eval mode.
    pub fn set_training(&mut self, training: bool) {
        self.stem.bn.training = training;
        for b in self.blocks.iter_mut() {
            for bn in b.bns() {
                bn.training = training;
            }
        }
    }

    /// Name prefixes of the stem, the first block and the last block (for gradient monitoring).
    pub fn part_prefixes(&self) -> [String; 3] {
        let last = self.blocks.len() - 1;
        let name =
            |i: usize| self.blocks[i].stages[0].conv.proj.w.name.rsplitn(3, '.').nth(2).unwrap().to_string() + ".";
        ["conv1.".into(), name(0), name(last)]
    }

    /// Multiply-adds of one image's forward through every convolution, and of the stem alone.
    pub fn conv_macs(&self, h: usize, w: usize) -> (f64, f64) {
        let macs = |c: &Conv2d, h: usize, w: usize| {
            let (oh, ow) = c.out_size(h, w);
            ((oh * ow * c.cout * c.cin * c.k * c.k) as f64, oh, ow)
        };
        let (stem, mut ch, mut cw) = macs(&self.stem.conv, h, w);
        if let Some(p) = &self.pool {
            (ch, cw) = p.out_size(ch, cw);
        }
        let mut total = stem;
        for b in &self.blocks {
            let (bh, bw) = (ch, cw);
            for st in &b.stages {
                let (m, oh, ow) = macs(&st.conv, ch, cw);
                total += m;
                (ch, cw) = (oh, ow);
            }
            if let Some(d) = &b.down {
                total += macs(&d.conv, bh, bw).0;
            }
        }
        (total, stem)
    }

    /// Images `[n, c, h, w]` (NCHW, as the data pipeline gives them) → features `[n, dim]`.
    pub fn forward(&mut self, x: &[f32], n: usize, h: usize, w: usize, groups: usize) -> &[f32] {
        let c = self.in_chans;
        ops::nchw_to_nhwc(&mut self.x_nhwc, x, n, c, h * w);
        self.dims.clear();
        self.dims_in = (h, w);
        let keep = self.keep_activations;
        self.kept = keep;
        // Without keeping: the stem's convolution output borrows scratch slot 0, its BN output
        // scratch slot 1 when the max-pool follows (whose output takes output slot 1), else
        // output slot 1 (it is the first block's input).
        let lend_stem = |s: &mut Self| {
            if s.pool_mid.len() < 2 {
                s.pool_mid.resize_with(2, Tensor::new);
            }
            std::mem::swap(&mut s.stem.conv.proj.y, &mut s.pool_mid[0]);
            let slot = if s.pool.is_some() { &mut s.pool_mid[1] } else { &mut s.pool_out[1] };
            std::mem::swap(&mut s.stem.bn.y, slot);
        };
        if !keep {
            lend_stem(self);
        }
        let sc = &mut self.conv_scratch;
        let (mut ch, mut cw) = self.stem.forward(&self.x_nhwc[..n * h * w * c], n, h, w, groups, sc);
        self.dims.push((ch, cw));
        if let Some(p) = &mut self.pool {
            if !keep {
                std::mem::swap(&mut p.y, &mut self.pool_out[1]);
            }
            p.forward(self.stem.out(), n, ch, cw, self.stem.conv.cout);
            (ch, cw) = p.out_size(ch, cw);
            self.dims.push((ch, cw));
        }
        if !keep && self.pool.is_some() {
            lend_stem(self);
        } else if !keep {
            // The stem's output is the first block's input; its convolution output goes back now.
            std::mem::swap(&mut self.stem.conv.proj.y, &mut self.pool_mid[0]);
        }
        for i in 0..self.blocks.len() {
            let (prev, rest) = self.blocks.split_at_mut(i);
            let b = &mut rest[0];
            swap_slots(b.scratch(!keep), &mut self.pool_mid);
            if !keep {
                std::mem::swap(b.out_tensor(), &mut self.pool_out[i % 2]);
            }
            let input: &[f32] = if i > 0 {
                prev[i - 1].out()
            } else if let Some(p) = &self.pool {
                p.output()
            } else {
                self.stem.out()
            };
            (ch, cw) = b.forward(input, n, ch, cw, groups, &mut self.conv_scratch);
            swap_slots(b.scratch(!keep), &mut self.pool_mid);
            if !keep {
                // The input is read for the last time: its buffer goes back to its slot.
                let slot = &mut self.pool_out[(i + 1) % 2];
                match (i, &mut self.pool) {
                    (0, Some(p)) => std::mem::swap(&mut p.y, slot),
                    (0, None) => std::mem::swap(&mut self.stem.bn.y, slot),
                    _ => std::mem::swap(prev[i - 1].out_tensor(), slot),
                }
            }
        }
        ensure(&mut self.feat, n * self.dim);
        let nb = self.blocks.len();
        let last = &mut self.blocks[nb - 1];
        ops::global_avg_forward(&mut self.feat, last.out(), n, ch * cw, self.dim);
        if !keep {
            std::mem::swap(last.out_tensor(), &mut self.pool_out[(nb - 1) % 2]);
        }
        &self.feat[..n * self.dim]
    }

    /// Gradients of every parameter from the gradient of the features.
    pub fn backward(&mut self, dfeat: &[f32]) {
        assert!(self.kept, "backward through a ResNet whose last forward did not keep its activations");
        let nb = self.blocks.len();
        let (n, _, _, oh, ow) = self.blocks[nb - 1].dims;
        let [da, db] = &mut self.dbuf;
        ensure(da, n * oh * ow * self.dim);
        ops::global_avg_backward(da, dfeat, n, oh * ow, self.dim);
        for i in (0..nb).rev() {
            let (bn, bh, bw, _, _) = self.blocks[i].dims;
            ensure(db, bn * bh * bw * self.blocks[i].stages[0].conv.cin);
            let (prev, rest) = self.blocks.split_at_mut(i);
            let input: &[f32] = if i > 0 {
                prev[i - 1].out()
            } else if let Some(p) = &self.pool {
                p.output()
            } else {
                self.stem.out()
            };
            rest[0].backward(input, da, db, &mut self.scratch, &mut self.conv_scratch);
            std::mem::swap(da, db);
        }
        // `da`: gradient of the first block's input (pool or stem output).
        let (sh, sw) = self.dims[0];
        let stem_len = n * sh * sw * self.stem.conv.cout;
        if let Some(p) = &self.pool {
            ensure(db, stem_len);
            p.backward(da, db);
            std::mem::swap(da, db);
        }
        let [t, ..] = &mut self.scratch;
        let x = &self.x_nhwc[..n * self.dims_in.0 * self.dims_in.1 * self.in_chans];
        self.stem.backward(x, &mut da[..stem_len], t, None, &mut self.conv_scratch);
    }
}

impl Module for ResNet {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        self.stem.visit(f);
        for b in self.blocks.iter_mut() {
            b.visit(f);
        }
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        self.stem.bn.visit_buffers(f);
        for b in self.blocks.iter_mut() {
            for bn in b.bns() {
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
    fn finite_differences_basic_and_bottleneck() {
        // With the max-pool stem on 8×8 images, every pooled value is positive, so a shift of a
        // stem channel passes unchanged into BatchNorms that remove it: those gradients are
        // exactly 0, and f32 finite differences of this model carry noise of about 0.03. There the
        // tolerance is taken against a floor of 1.0 (gradients elsewhere reach ~40); the CIFAR
        // variant checks the stem fully, and max pooling has its own check.
        for (bottleneck, cifar) in [(false, true), (true, false), (false, false)] {
            let mut rng = Rng::new(3);
            let mut net = ResNet::new(&[1, 1], bottleneck, 2, 2, cifar, &mut rng);
            // Non-zero last-BN gammas so every path carries gradient.
            net.visit(&mut |p| {
                if p.name.contains(".bn") && p.name.ends_with("weight") {
                    p.w.iter_mut().for_each(|v| *v = 0.7);
                }
            });
            let (n, h, w) = (4, 8, 8);
            let d = net.dim;
            check_layer(
                &mut net,
                n * 2 * h * w,
                n * d,
                |m, x| m.forward(x, n, h, w, 2).to_vec(),
                |m, _, dy, _| m.backward(dy),
                Probe {
                    eps: 2e-4,
                    tol: 3e-2,
                    check_input: false,
                    max_per_param: 12,
                    kinks: true,
                    min_scale: if cifar { 1e-3 } else { 1.0 },
                    ..Probe::default()
                },
            );
        }
    }

    /// Without keeping, the same features and running statistics bit for bit, at two batch sizes
    /// in a row, and no layer left holding an activation.
    #[test]
    fn forward_without_keeping_is_the_same() {
        for (bottleneck, cifar) in [(false, true), (true, false)] {
            let new = || {
                let mut net = ResNet::new(&[1, 2], bottleneck, 4, 3, cifar, &mut Rng::new(5));
                net.visit(&mut |p| {
                    if p.name.contains(".bn") && p.name.ends_with("weight") {
                        p.w.iter_mut().for_each(|v| *v = 0.7);
                    }
                });
                net
            };
            let (mut a, mut b) = (new(), new());
            b.keep_activations = false;
            let mut rng = Rng::new(9);
            for n in [4, 2] {
                let x: Vec<f32> = (0..n * 3 * 12 * 12).map(|_| rng.normal()).collect();
                let fa = a.forward(&x, n, 12, 12, 2).to_vec();
                let fb = b.forward(&x, n, 12, 12, 2).to_vec();
                assert!(fa.iter().zip(&fb).all(|(p, q)| p.to_bits() == q.to_bits()), "features differ");
            }
            let stats = |net: &mut ResNet| {
                let mut v = net.stem.bn.running_var.to_vec();
                for bl in net.blocks.iter_mut() {
                    for bn in bl.bns() {
                        v.extend(bn.running_mean.iter().chain(bn.running_var.iter()));
                    }
                }
                v
            };
            assert_eq!(stats(&mut a), stats(&mut b));
            let empty = |c: &ConvBn| c.conv.proj.y.is_empty() && c.bn.y.is_empty();
            assert!(empty(&b.stem) && b.pool.as_ref().is_none_or(|p| p.y.is_empty()));
            for bl in &b.blocks {
                assert!(bl.stages.iter().chain(&bl.down).all(empty), "a block kept a buffer");
            }
            assert!(!a.blocks.iter().any(|bl| bl.stages.iter().any(empty)), "the kept activations");
        }
    }

    #[test]
    fn torchvision_names_and_shapes() {
        let mut rng = Rng::new(0);
        let mut net = ResNet::resnet50(3, false, &mut rng);
        let mut names = Vec::new();
        let mut count = 0;
        net.visit(&mut |p| {
            names.push(p.name.clone());
            count += p.len();
        });
        assert_eq!(count, 23_508_032, "ResNet-50 without fc");
        assert!(names.contains(&"layer4.2.conv3.weight".to_string()));
        assert!(names.contains(&"layer1.0.downsample.1.bias".to_string()));
        assert_eq!(net.dim, 2048);
    }
}
