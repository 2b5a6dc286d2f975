//! conv → BatchNorm (→ ReLU) on NHWC activations: a stage of a ResNet block or stem, and of the
//! ViT's convolutional stem. The ReLU runs in place on the BN's output (as torchvision's
//! `inplace=True`), fused into the BN's passes both ways (the BN's backward needs only its input,
//! and the ReLU's only its output). The convolution has no bias (the BN
//! follows) and keeps the zero init of [`Conv2d::new`]: the model initialises it.

use super::conv::{Conv2d, ConvScratch};
use super::param::{Buffer, Module, Param};
use super::BatchNorm1d;
use crate::engine::ensure;
use crate::engine::tensor::Tensor;

pub struct ConvBn {
    pub conv: Conv2d,
    /// With `relu` set when a ReLU follows.
    pub bn: BatchNorm1d,
}

impl ConvBn {
    /// A `k`×`k` convolution of stride `stride` and padding `k / 2`, named `name`, then a BN named
    /// `bn_name`.
    pub fn new(name: &str, bn_name: &str, cin: usize, cout: usize, k: usize, stride: usize, relu: bool) -> ConvBn {
        let mut bn = BatchNorm1d::new(bn_name, cout, true);
        bn.relu = relu;
        ConvBn { conv: Conv2d::new(name, cin, cout, k, stride, k / 2, false), bn }
    }

    /// The stage's output, `[images, oh, ow, cout]`.
    pub fn out(&self) -> &[f32] {
        &self.bn.y
    }

    /// `x`: `[n, h, w, cin]`; BN statistics per each of `groups` equal groups of images. Returns
    /// the output size.
    pub fn forward(
        &mut self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        groups: usize,
        sc: &mut ConvScratch,
    ) -> (usize, usize) {
        self.conv.forward(x, n, h, w, sc);
        let (oh, ow) = self.conv.out_size(h, w);
        let rows = n * oh * ow;
        let c = self.conv.cout;
        self.bn.forward(&self.conv.proj.y[..rows * c], rows, groups);
        (oh, ow)
    }

    /// `d` holds the gradient of the stage's output (not changed); `x` is the stage's input; writes
    /// the input gradient when `dx` is given.
    pub fn backward(
        &mut self,
        x: &[f32],
        d: &mut [f32],
        tmp: &mut Tensor,
        dx: Option<&mut [f32]>,
        sc: &mut ConvScratch,
    ) {
        let n = d.len();
        ensure(tmp, n);
        let rows = n / self.conv.cout;
        self.bn.backward(&self.conv.proj.y[..n], d, rows, &mut tmp[..n]);
        self.conv.backward(x, &tmp[..n], dx, sc);
    }
}

impl Module for ConvBn {
    fn visit<'a>(&'a mut self, f: &mut dyn FnMut(&'a mut Param)) {
        self.conv.visit(f);
        self.bn.visit(f);
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(Buffer)) {
        self.bn.visit_buffers(f);
    }
}
