//! ReLU.

use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};

#[derive(Default)]
pub struct Relu {
    pub y: Tensor,
}

impl Relu {
    /// The output of the last forward (its first rows are this call's; read it through this,
    /// not the field, so the buffer's storage can change).
    pub fn output(&self) -> &[f32] {
        &self.y
    }

    pub fn forward(&mut self, x: &[f32]) {
        ensure(&mut self.y, x.len());
        ops::relu_forward(&mut self.y, x);
    }

    /// dx = dy where the output was positive; `d` holds dy on entry, dx on return.
    pub fn backward_inplace(&self, d: &mut [f32]) {
        ops::relu_backward_inplace(d, &self.y);
    }
}

impl crate::nn::Module for Relu {
    fn visit<'a>(&'a mut self, _f: &mut dyn FnMut(&'a mut crate::nn::Param)) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn finite_differences() {
        let n = 30;
        // Inputs are normal with scale 1; ε = 1e-3 stays clear of the kink for this seed.
        check_layer(
            &mut Relu::default(),
            n,
            n,
            |l, x| {
                l.forward(x);
                l.y[..n].to_vec()
            },
            |l, _, dy, dx| {
                dx.copy_from_slice(dy);
                l.backward_inplace(dx);
            },
            Probe { eps: 1e-3, ..Probe::default() },
        );
    }
}
