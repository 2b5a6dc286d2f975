//! Element-wise activations (kernels/act.cu; engine/ops/act.rs): one thread per element.

use super::{flat, need, DevBuf, Gpu};

/// `name(x, y, n)` for two buffers of at least `n`.
fn unary(gpu: &Gpu, name: &str, x: &mut DevBuf<f32>, y: &DevBuf<f32>, n: usize) -> Result<(), String> {
    need(x, n, name)?;
    need(y, n, name)?;
    let args = [x.arg_mut(gpu), y.arg(gpu), (n as u64).into()];
    // SAFETY: (float* [n], const float* [n], u64); sizes checked.
    unsafe { gpu.launch(name, flat(gpu, n), 0, &args) }
}

/// out[n] = gelu(inp[n]) over the length of `inp`.
pub fn gelu_forward(gpu: &Gpu, out: &mut DevBuf<f32>, inp: &DevBuf<f32>) -> Result<(), String> {
    unary(gpu, "gelu_forward", out, inp, inp.len())
}

/// `d` holds dout on entry and dinp = dout · gelu'(inp) on return, over the length of `inp`.
pub fn gelu_backward_inplace(gpu: &Gpu, d: &mut DevBuf<f32>, inp: &DevBuf<f32>) -> Result<(), String> {
    unary(gpu, "gelu_backward_inplace", d, inp, inp.len())
}

/// out[n] = max(inp[n], 0) over the length of `inp`.
pub fn relu_forward(gpu: &Gpu, out: &mut DevBuf<f32>, inp: &DevBuf<f32>) -> Result<(), String> {
    unary(gpu, "relu_forward", out, inp, inp.len())
}

/// x = max(x, 0), in place.
pub fn relu_inplace(gpu: &Gpu, x: &mut DevBuf<f32>) -> Result<(), String> {
    let n = x.len();
    let args = [x.arg_mut(gpu), (n as u64).into()];
    // SAFETY: (float* [n], u64).
    unsafe { gpu.launch("relu_inplace", flat(gpu, n), 0, &args) }
}

/// `d` holds dout on entry and dinp on return: zero where the ReLU's output `out` is not
/// positive, over the length of `out`.
pub fn relu_backward_inplace(gpu: &Gpu, d: &mut DevBuf<f32>, out: &DevBuf<f32>) -> Result<(), String> {
    unary(gpu, "relu_backward_inplace", d, out, out.len())
}
