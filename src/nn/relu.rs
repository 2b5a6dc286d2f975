//! ReLU.

use crate::engine::{ensure, par};

#[derive(Default)]
pub struct Relu {
    pub y: Vec<f32>,
}

impl Relu {
    pub fn forward(&mut self, x: &[f32]) {
        ensure(&mut self.y, x.len());
        par::map2(&mut self.y[..x.len()], x, |o, i| {
            for (o, &v) in o.iter_mut().zip(i) {
                *o = v.max(0.0);
            }
        });
    }

    /// dx = dy where the output was positive; `d` holds dy on entry, dx on return.
    pub fn backward_inplace(&self, d: &mut [f32]) {
        let n = d.len();
        par::map2(d, &self.y[..n], |o, y| {
            for (o, &v) in o.iter_mut().zip(y) {
                if v <= 0.0 {
                    *o = 0.0;
                }
            }
        });
    }
}

impl crate::nn::Module for Relu {
    fn visit(&mut self, _f: &mut dyn FnMut(&mut crate::nn::Param)) {}
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
