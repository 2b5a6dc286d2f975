//! Matrix products (engine/ops/matmul.rs) through [`Gpu::gemm`]: in [`Precision::Bf16`] the
//! operands are cast to bf16 (kernels/cast.cu) into a [`MatmulWork`] and the product accumulates
//! in f32, the split of PyTorch's autocast; in [`Precision::Fp32`] the f32 operands go to the GEMM
//! as they are (full f32 products, TF32 off), for parity with the CPU. Outputs are f32.

use super::{ensure, fits_i32, flat, int, need, DevBuf, Gpu};
use crate::engine::cuda::gemm::Gemm;
use crate::engine::cuda::gpu::Operands;

/// How the GEMMs multiply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// bf16 operands, f32 accumulation (mixed precision).
    Bf16,
    /// f32 operands, f32 accumulation, no TF32.
    Fp32,
}

/// Workspace of the bf16 products: the two operands' bf16 copies.
#[derive(Default)]
pub struct MatmulWork {
    a: DevBuf<u16>,
    b: DevBuf<u16>,
}

/// The first `n` values of `inp` as bf16 bits into `out` (grown as needed).
pub fn cast_to_bf16(gpu: &Gpu, out: &mut DevBuf<u16>, inp: &DevBuf<f32>, n: usize) -> Result<(), String> {
    need(inp, n, "cast_f32_to_bf16: inp")?;
    ensure(gpu, out, n)?;
    let args = [out.arg_mut(gpu), inp.arg(gpu), (n as u64).into()];
    // SAFETY: (u16* [n], const float* [n], u64).
    unsafe { gpu.launch("cast_f32_to_bf16", flat(gpu, n), 0, &args) }
}

/// The first `n` bf16 values of `inp` as f32 into `out`.
pub fn cast_to_f32(gpu: &Gpu, out: &mut DevBuf<f32>, inp: &DevBuf<u16>, n: usize) -> Result<(), String> {
    need(inp, n, "cast_bf16_to_f32: inp")?;
    need(out, n, "cast_bf16_to_f32: out")?;
    let args = [out.arg_mut(gpu), inp.arg(gpu), (n as u64).into()];
    // SAFETY: (float* [n], const u16* [n], u64).
    unsafe { gpu.launch("cast_bf16_to_f32", flat(gpu, n), 0, &args) }
}

/// `c [m, n] = alpha · op(a) op(b) + beta · c` (see [`Gemm`]) in `prec`.
pub fn gemm(
    gpu: &Gpu,
    prec: Precision,
    work: &mut MatmulWork,
    g: Gemm,
    a: &DevBuf<f32>,
    b: &DevBuf<f32>,
    c: &mut DevBuf<f32>,
) -> Result<(), String> {
    if g.m == 0 || g.n == 0 {
        return Ok(());
    }
    match prec {
        Precision::Fp32 => gpu.gemm(g, Operands::F32(a, b), c),
        Precision::Bf16 => {
            cast_to_bf16(gpu, &mut work.a, a, g.m * g.k)?;
            cast_to_bf16(gpu, &mut work.b, b, g.k * g.n)?;
            gpu.gemm(g, Operands::Bf16(&work.a, &work.b), c)
        }
    }
}

fn product(m: usize, n: usize, k: usize, a_trans: bool, b_trans: bool, alpha: f32, beta: f32) -> Gemm {
    Gemm { m, n, k, a_trans, b_trans, alpha, beta }
}

/// out `[rows, oc]` = inp `[rows, c]` · weightᵀ (+ bias `[oc]`, written into every row first and
/// accumulated onto by the GEMM).
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    gpu: &Gpu,
    prec: Precision,
    work: &mut MatmulWork,
    out: &mut DevBuf<f32>,
    inp: &DevBuf<f32>,
    weight: &DevBuf<f32>,
    bias: Option<&DevBuf<f32>>,
    rows: usize,
    c: usize,
    oc: usize,
) -> Result<(), String> {
    need(out, rows * oc, "matmul_forward: out")?;
    if let Some(bias) = bias {
        need(bias, oc, "matmul_forward: bias")?;
        fits_i32(&[rows * oc], "matmul_forward")?;
        let args = [out.arg_mut(gpu), bias.arg(gpu), int(rows), int(oc)];
        // SAFETY: (float* [rows·oc], const float* [oc], int, int), sizes checked.
        unsafe { gpu.launch("fill_rows", flat(gpu, rows * oc), 0, &args)? };
    }
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    gemm(gpu, prec, work, product(rows, oc, c, false, true, 1.0, beta), inp, weight, out)
}

/// Backward of [`matmul_forward`]: `dinp` `[rows, c]` = dout · weight, `dweight` `[oc, c]` =
/// doutᵀ · inp and `dbias` `[oc]` = Σ_rows dout, each written when given. `partials` is the
/// bias sum's workspace.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    gpu: &Gpu,
    prec: Precision,
    work: &mut MatmulWork,
    partials: &mut DevBuf<f32>,
    dinp: Option<&mut DevBuf<f32>>,
    dweight: Option<&mut DevBuf<f32>>,
    dbias: Option<&mut DevBuf<f32>>,
    dout: &DevBuf<f32>,
    inp: &DevBuf<f32>,
    weight: &DevBuf<f32>,
    rows: usize,
    c: usize,
    oc: usize,
) -> Result<(), String> {
    if let Some(dx) = dinp {
        gemm(gpu, prec, work, product(rows, c, oc, false, false, 1.0, 0.0), dout, weight, dx)?;
    }
    if let Some(dw) = dweight {
        gemm(gpu, prec, work, product(oc, c, rows, true, false, 1.0, 0.0), dout, inp, dw)?;
    }
    if let Some(db) = dbias {
        super::col_sum(gpu, db, partials, dout, rows, oc, false)?;
    }
    Ok(())
}

/// out `[m, n]` = alpha · a `[m, k]` · bᵀ (b `[n, k]`), written.
#[allow(clippy::too_many_arguments)]
pub fn matmul_nt(
    gpu: &Gpu,
    prec: Precision,
    work: &mut MatmulWork,
    out: &mut DevBuf<f32>,
    a: &DevBuf<f32>,
    b: &DevBuf<f32>,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
) -> Result<(), String> {
    gemm(gpu, prec, work, product(m, n, k, false, true, alpha, 0.0), a, b, out)
}

/// out `[m, n]` = alpha · a `[m, k]` · b `[k, n]`, written.
#[allow(clippy::too_many_arguments)]
pub fn matmul_nn(
    gpu: &Gpu,
    prec: Precision,
    work: &mut MatmulWork,
    out: &mut DevBuf<f32>,
    a: &DevBuf<f32>,
    b: &DevBuf<f32>,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
) -> Result<(), String> {
    gemm(gpu, prec, work, product(m, n, k, false, false, alpha, 0.0), a, b, out)
}

/// out `[m, n]` = alpha · aᵀ · b with a `[k, m]` and b `[k, n]`, written.
#[allow(clippy::too_many_arguments)]
pub fn matmul_tn(
    gpu: &Gpu,
    prec: Precision,
    work: &mut MatmulWork,
    out: &mut DevBuf<f32>,
    a: &DevBuf<f32>,
    b: &DevBuf<f32>,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
) -> Result<(), String> {
    gemm(gpu, prec, work, product(m, n, k, true, false, alpha, 0.0), a, b, out)
}

/// [weight bias] as `wb` `[oc, c + 1]` (grown as needed): the weight of a product whose input
/// carries a last column of ones (LayerNorm with `out_stride = c + 1`).
pub fn matmul_aug_weight(
    gpu: &Gpu,
    wb: &mut DevBuf<f32>,
    weight: &DevBuf<f32>,
    bias: &DevBuf<f32>,
    oc: usize,
    c: usize,
) -> Result<(), String> {
    need(weight, oc * c, "matmul_aug_weight: weight")?;
    need(bias, oc, "matmul_aug_weight: bias")?;
    fits_i32(&[oc * (c + 1)], "matmul_aug_weight")?;
    ensure(gpu, wb, oc * (c + 1))?;
    let args = [wb.arg_mut(gpu), weight.arg(gpu), bias.arg(gpu), int(oc), int(c)];
    // SAFETY: (float* [oc·(c+1)], const float* [oc·c], const float* [oc], int, int).
    unsafe { gpu.launch("matmul_aug_weight", flat(gpu, oc * (c + 1)), 0, &args) }
}
