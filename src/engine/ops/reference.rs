//! The op test suite: every op against a plain scalar loop (f64 where the op reduces), forward
//! and backward, on odd shapes whose sizes are not multiples of any SIMD width or task size, so
//! tails and the parallel split are exercised. A reduction must also give the same bits on one
//! thread and on three.
//!
//! Each case builds its inputs with [`Rng`], runs the op, and compares with [`close`]. A second
//! backend will run these same cases on its buffers once the buffer type carries a device (the
//! CPU is the only backend today; see ARCHITECTURE.md).

use super::*;
use crate::engine::rng::Rng;
use crate::engine::tensor::Tensor;

mod layout;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

/// `got` within `tol` of `want`, relative to max(1, |want|), element by element.
fn close(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() / w.abs().max(1.0);
        assert!(err <= tol, "{name}[{i}]: got {g}, want {w} (error {err:.2e} > {tol:.0e})");
    }
}

fn exact(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: got {g}, want {w}");
    }
}

fn on_threads<T>(n: usize, f: impl FnOnce() -> T + Send) -> T
where
    T: Send,
{
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(f)
}

#[test]
fn gelu_and_relu_match_their_formulas() {
    let mut rng = Rng::new(1);
    let n = 16384 * 2 + 37; // more than one parallel chunk, and a tail
    let x: Vec<f32> = randn(&mut rng, n).iter().map(|v| v * 3.0).collect();
    let dy = randn(&mut rng, n);
    let phi = |v: f64| 0.5 * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
    let pdf = |v: f64| (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mut y = vec![0.0; n];
    gelu_forward(&mut y, &x);
    close("gelu", &y, &x.iter().map(|&v| v as f64 * phi(v as f64)).collect::<Vec<_>>(), 1e-6);
    let mut d = dy.clone();
    gelu_backward_inplace(&mut d, &x);
    let want: Vec<f64> =
        x.iter().zip(&dy).map(|(&v, &g)| g as f64 * (phi(v as f64) + v as f64 * pdf(v as f64))).collect();
    close("gelu backward", &d, &want, 1e-5);

    let relu: Vec<f32> = x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
    relu_forward(&mut y, &x);
    exact("relu", &y, &relu);
    let mut z = x.clone();
    relu_inplace(&mut z);
    exact("relu in place", &z, &relu);
    let mut d = dy.clone();
    relu_backward_inplace(&mut d, &relu);
    let want: Vec<f32> = dy.iter().zip(&relu).map(|(&g, &r)| if r > 0.0 { g } else { 0.0 }).collect();
    exact("relu backward", &d, &want);
}

/// out[r, o] = Σ_k a[r, k] · w[o, k] (+ bias[o]) in f64.
fn ref_matmul(a: &[f32], w: &[f32], bias: Option<&[f32]>, rows: usize, c: usize, oc: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * oc];
    for r in 0..rows {
        for o in 0..oc {
            let s: f64 = (0..c).map(|k| a[r * c + k] as f64 * w[o * c + k] as f64).sum();
            out[r * oc + o] = s + bias.map_or(0.0, |b| b[o] as f64);
        }
    }
    out
}

#[test]
fn matmuls_match_triple_loops_forward_and_backward() {
    let mut rng = Rng::new(2);
    // Small odd shapes, and a long reduction over rows (the weight gradient's split k).
    for (rows, c, oc) in [(37, 19, 13), (1, 3, 1), (2051, 5, 7)] {
        let x = randn(&mut rng, rows * c);
        let w = randn(&mut rng, oc * c);
        let b = randn(&mut rng, oc);
        let dy = randn(&mut rng, rows * oc);
        let res = randn(&mut rng, rows * (oc + 2));
        let tag = format!("{rows}x{c}->{oc}");

        let mut y = vec![0.0; rows * oc];
        matmul_forward(&mut y, &x, &w, None, rows, c, oc);
        close(&format!("matmul {tag}"), &y, &ref_matmul(&x, &w, None, rows, c, oc), 1e-5);
        matmul_forward(&mut y, &x, &w, Some(&b), rows, c, oc);
        let with_bias = ref_matmul(&x, &w, Some(&b), rows, c, oc);
        close(&format!("matmul+bias {tag}"), &y, &with_bias, 1e-5);

        // Residual rows at a stride wider than the output.
        matmul_forward_residual(&mut y, &x, &w, Some(&b), &res, oc + 2, rows, c, oc);
        let want: Vec<f64> = (0..rows * oc).map(|i| with_bias[i] + res[(i / oc) * (oc + 2) + i % oc] as f64).collect();
        close(&format!("matmul residual {tag}"), &y, &want, 1e-5);

        // The ones-augmented input: same product, bias inside.
        let mut xa = vec![1.0f32; rows * (c + 1)];
        for r in 0..rows {
            xa[r * (c + 1)..r * (c + 1) + c].copy_from_slice(&x[r * c..(r + 1) * c]);
        }
        let mut wb = Tensor::new();
        matmul_forward_aug(&mut y, &mut wb, &xa, &w, &b, rows, c, oc);
        close(&format!("matmul aug {tag}"), &y, &with_bias, 1e-5);

        // Backward: dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy.
        let mut dx_want = vec![0.0f64; rows * c];
        let mut dw_want = vec![0.0f64; oc * c];
        let mut db_want = vec![0.0f64; oc];
        for r in 0..rows {
            for o in 0..oc {
                let g = dy[r * oc + o] as f64;
                db_want[o] += g;
                for k in 0..c {
                    dx_want[r * c + k] += g * w[o * c + k] as f64;
                    dw_want[o * c + k] += g * x[r * c + k] as f64;
                }
            }
        }
        let (mut dx, mut dw, mut db) = (vec![9.0; rows * c], vec![9.0; oc * c], vec![9.0; oc]);
        matmul_backward(Some(&mut dx), Some(&mut dw), Some(&mut db), &dy, &x, &w, rows, c, oc);
        close(&format!("matmul dx {tag}"), &dx, &dx_want, 1e-5);
        close(&format!("matmul dw {tag}"), &dw, &dw_want, 1e-4);
        close(&format!("matmul db {tag}"), &db, &db_want, 1e-4);
        let (mut dx, mut dw, mut db) = (vec![9.0; rows * c], vec![9.0; oc * c], vec![9.0; oc]);
        matmul_backward_aug(Some(&mut dx), Some(&mut dw), Some(&mut db), &mut wb, &dy, &xa, &w, rows, c, oc);
        close(&format!("matmul aug dx {tag}"), &dx, &dx_want, 1e-5);
        close(&format!("matmul aug dw {tag}"), &dw, &dw_want, 1e-4);
        close(&format!("matmul aug db {tag}"), &db, &db_want, 1e-4);
    }
}

#[test]
fn layernorm_matches_its_formula_forward_and_backward() {
    let mut rng = Rng::new(3);
    let (rows, c, eps) = (131, 23, 1e-6f32);
    let x: Vec<f32> = randn(&mut rng, rows * c).iter().map(|v| v * 2.0 + 0.5).collect();
    let (w, b, dy) = (randn(&mut rng, c), randn(&mut rng, c), randn(&mut rng, rows * c));
    let mut xhat = vec![0.0f64; rows * c];
    let mut stats_want = vec![0.0f64; rows * 2];
    for r in 0..rows {
        let xr = &x[r * c..(r + 1) * c];
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        stats_want[2 * r] = mean;
        stats_want[2 * r + 1] = rstd;
        for i in 0..c {
            xhat[r * c + i] = (xr[i] as f64 - mean) * rstd;
        }
    }
    for stride in [c, c + 1] {
        let mut y = vec![0.0; rows * stride];
        let mut stats = vec![0.0; rows * 2];
        layernorm_forward(&mut y, &mut stats, &x, &w, &b, rows, c, stride, eps);
        let want: Vec<f64> = (0..rows * stride)
            .map(|i| {
                let (r, k) = (i / stride, i % stride);
                if k == c {
                    1.0
                } else {
                    xhat[r * c + k] * w[k] as f64 + b[k] as f64
                }
            })
            .collect();
        close(&format!("layernorm stride {stride}"), &y, &want, 1e-5);
        close("layernorm stats", &stats, &stats_want, 1e-5);
        if stride != c {
            continue;
        }
        let (mut dx, mut dw, mut db) = (vec![0.0; rows * c], vec![9.0; c], vec![9.0; c]);
        layernorm_backward(&mut dx, Some(&mut dw), Some(&mut db), &dy, &x, &w, &stats, rows, c);
        let mut dx_want = vec![0.0f64; rows * c];
        let (mut dw_want, mut db_want) = (vec![0.0f64; c], vec![0.0f64; c]);
        for r in 0..rows {
            let dxh: Vec<f64> = (0..c).map(|i| dy[r * c + i] as f64 * w[i] as f64).collect();
            let m1 = dxh.iter().sum::<f64>() / c as f64;
            let m2 = (0..c).map(|i| dxh[i] * xhat[r * c + i]).sum::<f64>() / c as f64;
            for i in 0..c {
                dx_want[r * c + i] = stats_want[2 * r + 1] * (dxh[i] - m1 - xhat[r * c + i] * m2);
                dw_want[i] += dy[r * c + i] as f64 * xhat[r * c + i];
                db_want[i] += dy[r * c + i] as f64;
            }
        }
        close("layernorm dx", &dx, &dx_want, 1e-4);
        close("layernorm dw", &dw, &dw_want, 1e-4);
        close("layernorm db", &db, &db_want, 1e-4);
    }
}

#[test]
fn batchnorm_pieces_match_per_channel_loops() {
    let mut rng = Rng::new(4);
    // More than 256 channels (two channel blocks) and rows over several chunks; a sub-range of
    // rows as one view of a grouped batch.
    let (rows, c) = (301, 263);
    let range = 17..290;
    let x = randn(&mut rng, rows * c);
    let dy = randn(&mut rng, rows * c);
    let (mean, rstd) = (randn(&mut rng, c), randn(&mut rng, c).iter().map(|v| v.abs() + 0.5).collect::<Vec<_>>());
    let per_channel = |f: &dyn Fn(usize, usize) -> f64| -> Vec<f64> {
        (0..c).map(|k| range.clone().map(|r| f(r, k)).sum()).collect()
    };
    let mut partials = Tensor::new();
    let mut got = vec![9.0; c];
    batchnorm_sum(&mut partials, &mut got, &x, range.clone(), c);
    close("bn sum", &got, &per_channel(&|r, k| x[r * c + k] as f64), 1e-4);
    batchnorm_sq_dev(&mut partials, &mut got, &x, &mean, range.clone(), c);
    close("bn sq dev", &got, &per_channel(&|r, k| (x[r * c + k] as f64 - mean[k] as f64).powi(2)), 1e-4);
    let (mut sdy, mut sdyx) = (vec![9.0; c], vec![9.0; c]);
    batchnorm_grad_sums(&mut partials, &mut sdy, &mut sdyx, &dy, &x, &mean, &rstd, range.clone(), c, None);
    close("bn sum dy", &sdy, &per_channel(&|r, k| dy[r * c + k] as f64), 1e-4);
    let want = per_channel(&|r, k| dy[r * c + k] as f64 * (x[r * c + k] as f64 - mean[k] as f64) * rstd[k] as f64);
    close("bn sum dy·xhat", &sdyx, &want, 1e-4);
    // With a ReLU's output as the mask: dout taken as 0 where it is not positive (about half).
    let mask: Vec<f32> = randn(&mut rng, rows * c).iter().map(|v| v.max(0.0)).collect();
    let dm: Vec<f32> = dy.iter().zip(&mask).map(|(&d, &m)| if m > 0.0 { d } else { 0.0 }).collect();
    batchnorm_grad_sums(&mut partials, &mut sdy, &mut sdyx, &dy, &x, &mean, &rstd, range.clone(), c, Some(&mask));
    close("bn sum dy (masked)", &sdy, &per_channel(&|r, k| dm[r * c + k] as f64), 1e-4);
    let want = per_channel(&|r, k| dm[r * c + k] as f64 * (x[r * c + k] as f64 - mean[k] as f64) * rstd[k] as f64);
    close("bn sum dy·xhat (masked)", &sdyx, &want, 1e-4);

    let (a, s, cc) = (randn(&mut rng, c), randn(&mut rng, c), randn(&mut rng, c));
    let mut y = vec![0.0; rows * c];
    batchnorm_affine(&mut y, &x, &a, &s, rows, c, false);
    let want: Vec<f64> = (0..rows * c).map(|i| x[i] as f64 * a[i % c] as f64 + s[i % c] as f64).collect();
    close("bn affine", &y, &want, 1e-5);
    let mut yr = vec![0.0; rows * c];
    batchnorm_affine(&mut yr, &x, &a, &s, rows, c, true);
    exact("bn affine + relu", &yr, &y.iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
    batchnorm_backward_dx(&mut y, &dm, &x, &a, &s, &cc, rows, c, None);
    let mut ym = vec![0.0; rows * c];
    batchnorm_backward_dx(&mut ym, &dy, &x, &a, &s, &cc, rows, c, Some(&mask));
    exact("bn dx (masked)", &ym, &y);
    batchnorm_backward_dx(&mut y, &dy, &x, &a, &s, &cc, rows, c, None);
    let want: Vec<f64> = (0..rows * c)
        .map(|i| dy[i] as f64 * a[i % c] as f64 + x[i] as f64 * s[i % c] as f64 + cc[i % c] as f64)
        .collect();
    close("bn dx", &y, &want, 1e-5);
}

/// Attention in f64 on timm's packed layout: (out, probs) forward and dqkv backward.
fn ref_attention(qkv: &[f32], dout: &[f32], b: usize, t: usize, d: usize, h: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let hd = d / h;
    let scale = (hd as f64).powf(-0.5);
    let at = |bi: usize, i: usize, part: usize, hi: usize, j: usize| (bi * t + i) * 3 * d + part * d + hi * hd + j;
    let (mut out, mut probs, mut dqkv) = (vec![0.0; b * t * d], vec![0.0; b * h * t * t], vec![0.0; b * t * 3 * d]);
    for bi in 0..b {
        for hi in 0..h {
            let dot = |i: usize, pi: usize, j: usize, pj: usize| -> f64 {
                (0..hd).map(|k| qkv[at(bi, i, pi, hi, k)] as f64 * qkv[at(bi, j, pj, hi, k)] as f64).sum()
            };
            let mut p = vec![0.0f64; t * t];
            for i in 0..t {
                let s: Vec<f64> = (0..t).map(|j| dot(i, 0, j, 1) * scale).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for j in 0..t {
                    p[i * t + j] = (s[j] - m).exp() / z;
                }
            }
            probs[(bi * h + hi) * t * t..(bi * h + hi + 1) * t * t].copy_from_slice(&p);
            let go = |i: usize, k: usize| dout[(bi * t + i) * d + hi * hd + k] as f64;
            for i in 0..t {
                for k in 0..hd {
                    out[(bi * t + i) * d + hi * hd + k] =
                        (0..t).map(|j| p[i * t + j] * qkv[at(bi, j, 2, hi, k)] as f64).sum();
                }
                // dp_ij = dout_i · v_j; ds = p ⊙ (dp − Σ_j p dp)
                let dp: Vec<f64> =
                    (0..t).map(|j| (0..hd).map(|k| go(i, k) * qkv[at(bi, j, 2, hi, k)] as f64).sum()).collect();
                let sum: f64 = (0..t).map(|j| p[i * t + j] * dp[j]).sum();
                for j in 0..t {
                    let ds = p[i * t + j] * (dp[j] - sum) * scale;
                    for k in 0..hd {
                        dqkv[at(bi, i, 0, hi, k)] += ds * qkv[at(bi, j, 1, hi, k)] as f64;
                        dqkv[at(bi, j, 1, hi, k)] += ds * qkv[at(bi, i, 0, hi, k)] as f64;
                        dqkv[at(bi, j, 2, hi, k)] += p[i * t + j] * go(i, k);
                    }
                }
            }
        }
    }
    (out, probs, dqkv)
}

#[test]
fn attention_matches_a_scalar_softmax_forward_and_backward() {
    let mut rng = Rng::new(5);
    let (b, t, d, h) = (3, 7, 12, 3);
    let qkv = randn(&mut rng, b * t * 3 * d);
    let dout = randn(&mut rng, b * t * d);
    let (out_w, probs_w, dqkv_w) = ref_attention(&qkv, &dout, b, t, d, h);
    let (mut out, mut probs) = (vec![0.0; b * t * d], vec![0.0; b * h * t * t]);
    attention_forward(&mut out, &mut probs, &qkv, b, t, d, h);
    close("attention out", &out, &out_w, 1e-5);
    close("attention probs", &probs, &probs_w, 1e-5);
    let (mut dqkv, mut scratch) = (vec![9.0; b * t * 3 * d], Tensor::new());
    attention_backward(&mut dqkv, &mut scratch, &dout, &qkv, &probs, b, t, d, h);
    close("attention dqkv", &dqkv, &dqkv_w, 1e-4);

    // The cls-only pair: the cls rows of the full forward, and the full backward of a gradient
    // that is zero on every other row.
    let (mut oc, mut pc) = (vec![0.0; b * d], vec![0.0; b * h * t]);
    attention_forward_cls(&mut oc, &mut pc, &qkv, b, t, d, h);
    let cls_rows: Vec<f64> = (0..b * d).map(|i| out_w[(i / d) * t * d + i % d]).collect();
    close("attention cls out", &oc, &cls_rows, 1e-5);
    let cls_probs: Vec<f64> = (0..b * h * t).map(|i| probs_w[(i / t) * t * t + i % t]).collect();
    close("attention cls probs", &pc, &cls_probs, 1e-5);
    let dcls = randn(&mut rng, b * d);
    let mut dfull = vec![0.0f32; b * t * d];
    for bi in 0..b {
        dfull[bi * t * d..bi * t * d + d].copy_from_slice(&dcls[bi * d..(bi + 1) * d]);
    }
    let (_, _, want) = ref_attention(&qkv, &dfull, b, t, d, h);
    attention_backward_cls(&mut dqkv, &mut scratch, &dcls, &qkv, &pc, b, t, d, h);
    close("attention cls dqkv", &dqkv, &want, 1e-4);

    let mut row = randn(&mut rng, 37);
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
    let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    let want: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp() / z).collect();
    softmax_forward_inplace(&mut row);
    close("softmax", &row, &want, 1e-6);
}

#[test]
fn l2norm_and_crossentropy_match_their_formulas() {
    let mut rng = Rng::new(8);
    let (rows, d) = (53, 29);
    let mut x = randn(&mut rng, rows * d);
    x[3 * d..4 * d].fill(0.0); // a zero row: divided by the 1e-12 floor, not NaN
    let dy = randn(&mut rng, rows * d);
    let (mut y, mut norms) = (vec![0.0; rows * d], vec![0.0; rows]);
    l2norm_forward(&mut y, &mut norms, &x, rows, d);
    let nrm: Vec<f64> = (0..rows)
        .map(|r| x[r * d..(r + 1) * d].iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt().max(1e-12))
        .collect();
    close("l2norm", &y, &(0..rows * d).map(|i| x[i] as f64 / nrm[i / d]).collect::<Vec<_>>(), 1e-6);
    close("l2norm norms", &norms, &nrm, 1e-6);
    let mut z = x.clone();
    l2norm_inplace(&mut z, d);
    exact("l2norm in place", &z, &y);
    let mut dx = vec![9.0; rows * d];
    l2norm_backward(&mut dx, &dy, &y, &norms, rows, d);
    let mut want = vec![0.0f64; rows * d];
    for r in 0..rows {
        let yr: Vec<f64> = (0..d).map(|i| x[r * d + i] as f64 / nrm[r]).collect();
        let s: f64 = (0..d).map(|i| yr[i] * dy[r * d + i] as f64).sum();
        for i in 0..d {
            want[r * d + i] = (dy[r * d + i] as f64 - yr[i] * s) / nrm[r];
        }
    }
    close("l2norm backward", &dx, &want, 1e-5);

    let (rows, c, scale) = (37, 11, 0.3f32);
    let logits: Vec<f32> = randn(&mut rng, rows * c).iter().map(|v| v * 4.0).collect();
    let labels: Vec<u32> = (0..rows).map(|_| rng.below(c) as u32).collect();
    let mut g = logits.clone();
    let loss = crossentropy_softmax_inplace(&mut g, &labels, rows, c, scale);
    let (mut loss_want, mut grad_want) = (0.0f64, vec![0.0f64; rows * c]);
    for r in 0..rows {
        let row: Vec<f64> = logits[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        loss_want += lse - row[labels[r] as usize];
        for k in 0..c {
            grad_want[r * c + k] = scale as f64 * ((row[k] - lse).exp() - (k == labels[r] as usize) as u8 as f64);
        }
    }
    assert!((loss - loss_want).abs() < 1e-4 * loss_want.abs(), "cross-entropy: {loss} vs {loss_want}");
    close("cross-entropy gradient", &g, &grad_want, 1e-6);
}

#[test]
fn optimizer_updates_match_scalar_loops_bit_for_bit() {
    let mut rng = Rng::new(9);
    let n = 8192 * 3 + 5; // several parallel chunks and a tail
    let (w0, g, m0, v0) = (randn(&mut rng, n), randn(&mut rng, n), randn(&mut rng, n), randn(&mut rng, n));
    let v0: Vec<f32> = v0.iter().map(|v| v * v).collect();
    let s = AdamWStep { step_size: 1e-3, w1: 0.1, b2: 0.999, w2: 0.001, eps: 1e-8, bc2_sqrt: 0.05, decay: 0.9999 };
    let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
    adamw_update(&mut w, &g, &mut m, &mut v, s);
    let (mut wr, mut mr, mut vr) = (w0.clone(), m0.clone(), v0.clone());
    for i in 0..n {
        wr[i] *= s.decay;
        mr[i] += s.w1 * (g[i] - mr[i]);
        vr[i] = vr[i] * s.b2 + s.w2 * g[i] * g[i];
        wr[i] += -s.step_size * (mr[i] / (vr[i].sqrt() / s.bc2_sqrt + s.eps));
    }
    exact("adamw w", &w, &wr);
    exact("adamw m", &m, &mr);
    exact("adamw v", &v, &vr);

    let (wd, eta) = (1e-6f32, 0.001f64);
    let ratio = lars_trust_ratio(&w0, &g, wd, eta);
    let pn: f64 = w0.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let un: f64 = g.iter().zip(&w0).map(|(&g, &w)| ((g + wd * w) as f64).powi(2)).sum::<f64>().sqrt();
    assert_eq!(ratio, (eta * pn / un) as f32, "lars trust ratio");
    assert_eq!(lars_trust_ratio(&[0.0; 4], &g[..4], wd, eta), 1.0, "lars ratio of a zero weight");
    let (mut w, mut mu) = (w0.clone(), m0.clone());
    lars_update(&mut w, &g, &mut mu, 0.1, 0.9, wd, ratio);
    let (mut wr, mut mr) = (w0.clone(), m0.clone());
    for i in 0..n {
        mr[i] = 0.9 * mr[i] + (g[i] + wd * wr[i]) * ratio;
        wr[i] -= 0.1 * mr[i];
    }
    exact("lars w", &w, &wr);
    exact("lars mu", &mu, &mr);

    let n = 16384 + 3;
    let (mut k, q) = (w0[..n].to_vec(), g[..n].to_vec());
    ema_update(&mut k, &q, 0.99, 0.01);
    let want: Vec<f32> = w0[..n].iter().zip(&q).map(|(&k, &q)| k * 0.99 + q * 0.01).collect();
    exact("ema", &k, &want);
}

#[test]
fn token_assembly_and_reductions_match_scalar_loops() {
    let mut rng = Rng::new(10);
    let (b, t, d) = (3, 5, 7);
    let (patches, cls, pos) = (randn(&mut rng, b * (t - 1) * d), randn(&mut rng, d), randn(&mut rng, t * d));
    let mut tok = vec![0.0; b * t * d];
    tokens_forward(&mut tok, &patches, &cls, Some(&pos), b, t, d);
    for bi in 0..b {
        for ti in 0..t {
            for k in 0..d {
                let src = if ti == 0 { cls[k] } else { patches[(bi * (t - 1) + ti - 1) * d + k] };
                assert_eq!(tok[(bi * t + ti) * d + k], src + pos[ti * d + k], "tokens {bi} {ti} {k}");
            }
        }
    }
    let dt = randn(&mut rng, b * t * d);
    let (mut dcls, mut dpos, mut dp) = (vec![9.0; d], vec![9.0; t * d], vec![9.0; b * (t - 1) * d]);
    tokens_backward(Some(&mut dcls), Some(&mut dpos), Some(&mut dp), &dt, b, t, d);
    close("dcls", &dcls, &(0..d).map(|k| (0..b).map(|bi| dt[bi * t * d + k] as f64).sum()).collect::<Vec<_>>(), 1e-6);
    let want: Vec<f64> = (0..t * d).map(|i| (0..b).map(|bi| dt[bi * t * d + i] as f64).sum()).collect();
    close("dpos", &dpos, &want, 1e-6);
    let want: Vec<f32> = (0..b).flat_map(|bi| dt[(bi * t + 1) * d..(bi + 1) * t * d].to_vec()).collect();
    exact("dpatches", &dp, &want);

    let (mut x, y) = (randn(&mut rng, b * t * d), randn(&mut rng, b * d));
    let mut want = x.clone();
    for bi in 0..b {
        for k in 0..d {
            want[bi * t * d + k] += y[bi * d + k];
        }
    }
    add_rows_strided(&mut x, &y, b, t * d, d);
    exact("add_rows_strided", &x, &want);
    let v = randn(&mut rng, 1001);
    let want: f64 = v.iter().map(|&a| (a as f64).powi(2)).sum();
    assert!((sum_sq_f64(&v) - want).abs() < 1e-9 * want, "sum_sq_f64");
}

#[test]
fn reductions_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(11);
    let (rows, c) = (1500, 192);
    let x = randn(&mut rng, rows * c);
    let dy = randn(&mut rng, rows * c);
    let w = randn(&mut rng, c);
    let (b, t, d, h) = (4, 9, 24, 4);
    let qkv = randn(&mut rng, b * t * 3 * d);
    let run = |threads: usize| {
        on_threads(threads, || {
            let mut stats = vec![0.0; rows * 2];
            let mut y = vec![0.0; rows * c];
            layernorm_forward(&mut y, &mut stats, &x, &w, &w, rows, c, c, 1e-6);
            let (mut dx, mut dw, mut db) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
            layernorm_backward(&mut dx, Some(&mut dw), Some(&mut db), &dy, &x, &w, &stats, rows, c);
            let (mut part, mut sdy, mut sdyx) = (Tensor::new(), vec![0.0; c], vec![0.0; c]);
            batchnorm_grad_sums(&mut part, &mut sdy, &mut sdyx, &dy, &x, &w, &w, 0..rows, c, None);
            let mut wg = vec![0.0; c * c];
            matmul_backward(None, Some(&mut wg), None, &dy, &x, &w, rows, c, c);
            let (mut o, mut p) = (vec![0.0; b * t * d], vec![0.0; b * h * t * t]);
            attention_forward(&mut o, &mut p, &qkv, b, t, d, h);
            [dx, dw, db, sdy, sdyx, wg, o].concat()
        })
    };
    exact("one thread vs three", &run(3), &run(1));
}
