//! Matrix products of the Linear layers, PyTorch's layout: `out = inp · weightᵀ + bias` with
//! `weight` `[oc, c]`. The bias may ride inside the product as the last column of a
//! ones-augmented input, the residual connection inside the GEMM's accumulation, and the weight
//! gradient (a long reduction over the batch rows) is split over k (see
//! [`crate::engine::gemm::sgemm_long_k`]).

use crate::engine::gemm::{sgemm, sgemm_long_k, Mat};
use crate::engine::tensor::Tensor;
use crate::engine::{ensure, par};

/// out `[rows, oc]` = inp `[rows, c]` · weightᵀ (+ bias `[oc]`).
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    c: usize,
    oc: usize,
) {
    assert_eq!(inp.len(), rows * c, "matmul_forward: input shape");
    let y = &mut out[..rows * oc];
    if let Some(b) = bias {
        par::for_rows(y, oc, |_, row| row.copy_from_slice(b));
    }
    sgemm(rows, oc, c, Mat::rows(inp, c), Mat::trans(weight, c), y, oc, 1.0, bias.is_some(), true);
}

/// out `[rows, oc]` = [inp 1] `[rows, c + 1]` · [weight bias]ᵀ: the bias taken inside the product
/// from an input with a last column of ones (as [`super::layernorm_forward`] writes it with
/// `out_stride = c + 1`), so the output is written once instead of filled with the bias and then
/// accumulated into (about 15% of this layer's time at the ViT's shapes). `wb` `[oc, c + 1]` is
/// workspace.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_aug(
    out: &mut [f32],
    wb: &mut Tensor,
    inp_aug: &[f32],
    weight: &[f32],
    bias: &[f32],
    rows: usize,
    c: usize,
    oc: usize,
) {
    let ia = c + 1;
    assert_eq!(inp_aug.len(), rows * ia, "matmul_forward_aug: input shape (with ones column)");
    ensure(wb, oc * ia);
    for (r, row) in wb.chunks_mut(ia).enumerate() {
        row[..c].copy_from_slice(&weight[r * c..(r + 1) * c]);
        row[c] = bias[r];
    }
    sgemm(rows, oc, ia, Mat::rows(inp_aug, ia), Mat::trans(wb, ia), &mut out[..rows * oc], oc, 1.0, false, true);
}

/// Backward of [`matmul_forward_aug`]: `dinp` `[rows, c]` written when given; `dweight` `[oc, c]`
/// and `dbias` `[oc]` written when given, the bias gradient coming out of the weight-gradient
/// product as its last column (Σ_rows dout · 1) instead of a separate column sum. `wb` is
/// workspace.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_aug(
    dinp: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    wb: &mut Tensor,
    dout: &[f32],
    inp_aug: &[f32],
    weight: &[f32],
    rows: usize,
    c: usize,
    oc: usize,
) {
    let ia = c + 1;
    let dy = &dout[..rows * oc];
    if let Some(dx) = dinp {
        sgemm(rows, c, oc, Mat::rows(dy, oc), Mat::rows(weight, c), &mut dx[..rows * c], c, 1.0, false, true);
    }
    if dweight.is_none() && dbias.is_none() {
        return;
    }
    ensure(wb, oc * ia);
    sgemm_long_k(oc, ia, rows, Mat::trans(dy, oc), Mat::rows(inp_aug, ia), wb, ia, 1.0);
    let (mut dw, mut db) = (dweight, dbias);
    for (r, row) in wb.chunks(ia).enumerate().take(oc) {
        if let Some(dw) = dw.as_deref_mut() {
            dw[r * c..(r + 1) * c].copy_from_slice(&row[..c]);
        }
        if let Some(db) = db.as_deref_mut() {
            db[r] = row[c];
        }
    }
}

/// out `[rows, oc]` = res + inp · weightᵀ (+ bias), with row r of `res` at `res[r * res_stride..]`:
/// the residual connection folded into the GEMM's accumulation (no separate output buffer or
/// add pass).
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_residual(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    res: &[f32],
    res_stride: usize,
    rows: usize,
    c: usize,
    oc: usize,
) {
    assert_eq!(inp.len(), rows * c, "matmul_forward_residual: input shape");
    let out = &mut out[..rows * oc];
    par::for_rows(out, oc, |r, row| {
        let rr = &res[r * res_stride..r * res_stride + oc];
        match bias {
            Some(b) => row.iter_mut().zip(rr).zip(b).for_each(|((y, &v), &bb)| *y = v + bb),
            None => row.copy_from_slice(rr),
        }
    });
    sgemm(rows, oc, c, Mat::rows(inp, c), Mat::trans(weight, c), out, oc, 1.0, true, true);
}

/// Backward of [`matmul_forward`]: `dinp` `[rows, c]`, `dweight` `[oc, c]` and `dbias` `[oc]`,
/// each written when given.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    rows: usize,
    c: usize,
    oc: usize,
) {
    let dy = &dout[..rows * oc];
    if let Some(dx) = dinp {
        sgemm(rows, c, oc, Mat::rows(dy, oc), Mat::rows(weight, c), &mut dx[..rows * c], c, 1.0, false, true);
    }
    if let Some(dw) = dweight {
        sgemm_long_k(oc, c, rows, Mat::trans(dy, oc), Mat::rows(inp, c), dw, c, 1.0);
    }
    if let Some(db) = dbias {
        par::col_sum(db, dy, rows, oc, false);
    }
}

/// out `[m, n]` = alpha · a `[m, k]` · bᵀ (b `[n, k]`), written (similarities of normalised rows:
/// the contrastive logits, the kNN scores).
pub fn matmul_nt(out: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, alpha: f32) {
    sgemm(m, n, k, Mat::rows(&a[..m * k], k), Mat::trans(&b[..n * k], k), &mut out[..m * n], n, alpha, false, true);
}

/// out `[m, n]` = alpha · a `[m, k]` · b `[k, n]`, written.
pub fn matmul_nn(out: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, alpha: f32) {
    sgemm(m, n, k, Mat::rows(&a[..m * k], k), Mat::rows(&b[..k * n], n), &mut out[..m * n], n, alpha, false, true);
}

/// out `[m, n]` = alpha · aᵀ · b with a `[k, m]` and b `[k, n]`, written (a weight gradient with
/// a short reduction; [`matmul_backward`] splits long ones).
pub fn matmul_tn(out: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, alpha: f32) {
    sgemm(m, n, k, Mat::trans(&a[..k * m], m), Mat::rows(&b[..k * n], n), &mut out[..m * n], n, alpha, false, true);
}
