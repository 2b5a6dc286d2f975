//! Element-wise activations: GELU (exact erf form, PyTorch's default `nn.GELU()`) and ReLU.

use crate::engine::{fastmath, par};

/// out[n] = gelu(inp[n]).
pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    par::map2(&mut out[..inp.len()], inp, |o, i| fastmath::gelu_slice(i, o));
}

/// d[n] holds dout on entry and dinp on return: dinp = dout · gelu'(inp).
pub fn gelu_backward_inplace(d: &mut [f32], inp: &[f32]) {
    par::map2(&mut d[..inp.len()], inp, |o, i| fastmath::gelu_grad_mul(i, o));
}

/// out[n] = max(inp[n], 0).
pub fn relu_forward(out: &mut [f32], inp: &[f32]) {
    par::map2(&mut out[..inp.len()], inp, |o, i| {
        for (o, &v) in o.iter_mut().zip(i) {
            *o = v.max(0.0);
        }
    });
}

/// x[n] = max(x[n], 0), in place (torchvision's `inplace=True`).
pub fn relu_inplace(x: &mut [f32]) {
    par::map_inplace(x, |v| *v = v.max(0.0));
}

/// d[n] holds dout on entry and dinp on return: zero where the ReLU's output `out[n]` is not
/// positive (the backward needs only the output, so the ReLU may run in place).
pub fn relu_backward_inplace(d: &mut [f32], out: &[f32]) {
    let n = d.len();
    par::map2(d, &out[..n], |o, y| {
        for (o, &v) in o.iter_mut().zip(y) {
            if v <= 0.0 {
                *o = 0.0;
            }
        }
    });
}
