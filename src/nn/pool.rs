//! Max pooling on NHWC activations (PyTorch's `MaxPool2d`, padding never wins); the global
//! average pool that ends a ResNet is [`ops::global_avg_forward`].

use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};

pub struct MaxPool2d {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub y: Tensor,
    /// Index (into the input) of each output's maximum.
    argmax: Vec<u32>,
    dims: (usize, usize, usize, usize),
}

impl MaxPool2d {
    /// The output of the last forward (its first rows are this call's; read it through this,
    /// not the field, so the buffer's storage can change).
    pub fn output(&self) -> &[f32] {
        &self.y
    }

    pub fn new(k: usize, stride: usize, pad: usize) -> MaxPool2d {
        MaxPool2d { k, stride, pad, y: Tensor::new(), argmax: Vec::new(), dims: (0, 0, 0, 0) }
    }

    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        ((h + 2 * self.pad - self.k) / self.stride + 1, (w + 2 * self.pad - self.k) / self.stride + 1)
    }

    pub fn forward(&mut self, x: &[f32], images: usize, h: usize, w: usize, c: usize) {
        let (oh, ow) = self.out_size(h, w);
        self.dims = (images, h, w, c);
        let per = oh * ow * c;
        ensure(&mut self.y, images * per);
        if self.argmax.len() < images * per {
            self.argmax.resize(images * per, 0);
        }
        ops::maxpool_forward(&mut self.y, &mut self.argmax, x, self.dims, self.k, self.stride, self.pad);
    }

    /// dx gets each output's gradient at the position of its maximum.
    pub fn backward(&self, dy: &[f32], dx: &mut [f32]) {
        let (_, h, w, c) = self.dims;
        let (oh, ow) = self.out_size(h, w);
        ops::maxpool_backward(dx, dy, &self.argmax, self.dims, oh * ow * c);
    }
}

impl crate::nn::Module for MaxPool2d {
    fn visit<'a>(&'a mut self, _f: &mut dyn FnMut(&'a mut crate::nn::Param)) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn max_pool_finite_differences_and_padding() {
        let (n, h, w, c) = (2, 5, 6, 3);
        let mut mp = MaxPool2d::new(3, 2, 1);
        let (oh, ow) = mp.out_size(h, w);
        assert_eq!((oh, ow), (3, 3));
        let ny = n * oh * ow * c;
        // Distinct values (normal draws) keep the argmax away from ties for the probe.
        check_layer(
            &mut mp,
            n * h * w * c,
            ny,
            |l, x| {
                l.forward(x, n, h, w, c);
                l.y[..ny].to_vec()
            },
            |l, _, dy, dx| l.backward(dy, dx),
            Probe { eps: 1e-4, tol: 2e-2, ..Probe::default() },
        );
        // All-negative input: padding must not win (PyTorch pads with -inf).
        let x = vec![-5.0f32; h * w];
        let mut one = MaxPool2d::new(3, 2, 1);
        one.forward(&x, 1, h, w, 1);
        assert!(one.y[..9].iter().all(|&v| v == -5.0));
    }

    #[test]
    fn global_average_pool_and_its_gradient() {
        let (n, hw, c) = (2, 4, 3);
        let x: Vec<f32> = (0..n * hw * c).map(|i| i as f32).collect();
        let mut y = vec![0.0; n * c];
        ops::global_avg_forward(&mut y, &x, n, hw, c);
        assert_eq!(y, vec![4.5, 5.5, 6.5, 16.5, 17.5, 18.5]);
        let mut dx = vec![0.0; n * hw * c];
        ops::global_avg_backward(&mut dx, &[4.0, 8.0, 0.0, 1.0, 1.0, 1.0], n, hw, c);
        assert_eq!(&dx[..3], &[1.0, 2.0, 0.0]);
        assert_eq!(&dx[21..], &[0.25, 0.25, 0.25]);
    }
}
