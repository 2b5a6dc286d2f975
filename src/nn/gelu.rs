//! GELU with the exact erf form, as PyTorch's default `nn.GELU()` (erf evaluated by the
//! vectorisable `engine::fastmath`).

use crate::engine::tensor::Tensor;
use crate::engine::{ensure, ops};

pub use crate::engine::fastmath::{gelu, gelu_grad};

#[derive(Default)]
pub struct Gelu {
    pub y: Tensor,
}

impl Gelu {
    /// The output of the last forward (its first rows are this call's; read it through this,
    /// not the field, so the buffer's storage can change).
    pub fn output(&self) -> &[f32] {
        &self.y
    }

    pub fn forward(&mut self, x: &[f32]) {
        ensure(&mut self.y, x.len());
        ops::gelu_forward(&mut self.y, x);
    }

    pub fn swap_activations(&mut self, other: &mut Gelu) {
        std::mem::swap(&mut self.y, &mut other.y);
    }

    /// `d` holds dy on entry and dx on return.
    pub fn backward_inplace(x: &[f32], d: &mut [f32]) {
        ops::gelu_backward_inplace(d, x);
    }
}

impl crate::nn::Module for Gelu {
    fn visit<'a>(&'a mut self, _f: &mut dyn FnMut(&'a mut crate::nn::Param)) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{check_layer, Probe};

    #[test]
    fn values_and_finite_differences() {
        // torch.nn.functional.gelu(torch.tensor([-1., 0.5, 2.]))
        for (x, want) in [(-1.0f32, -0.158_655_25f32), (0.5, 0.345_731_14), (2.0, 1.954_499_7)] {
            assert!((gelu(x) - want).abs() < 1e-6, "{x}");
        }
        let n = 40;
        check_layer(
            &mut Gelu::default(),
            n,
            n,
            |l, x| {
                l.forward(x);
                l.y[..n].to_vec()
            },
            |_, x, dy, dx| {
                dx.copy_from_slice(dy);
                Gelu::backward_inplace(x, dx);
            },
            Probe { eps: 1e-3, x_scale: 2.0, ..Probe::default() },
        );
    }
}
