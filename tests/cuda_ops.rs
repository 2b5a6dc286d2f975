//! The CUDA launchers against the CPU ops, on a GPU: host → device → kernel → host for GELU
//! (forward and backward), LayerNorm forward and Σ x², each run twice for bit-identical results,
//! and the bf16 cuBLASLt product of matmul_forward against the f64 product of the rounded operands.
//! Skipped, saying why, where no GPU is usable (no driver, or no CUDA 13 libraries).

#![cfg(feature = "cuda")]

use mocov3::engine::cuda::{self, launch, CudaDevice, CudaTensor};
use mocov3::engine::ops;
use std::io::Write;

fn device(test: &str) -> Option<CudaDevice> {
    let skip = |why: String| {
        let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
    };
    if let Err(e) = cuda::probe() {
        skip(e.lines().next().unwrap_or_default().to_string());
        return None;
    }
    match CudaDevice::new(0) {
        Ok(d) => Some(d),
        Err(e) => {
            // The libraries load but no GPU opens (e.g. a driver without a device): a skip too.
            skip(format!("no usable GPU: {e}"));
            None
        }
    }
}

/// Values in [-4, 4) from a fixed sequence, with a tail (n not a multiple of the block).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn gelu_on_the_gpu_matches_the_cpu_op_and_repeats_bit_for_bit() {
    let Some(dev) = device("gelu_on_the_gpu_matches_the_cpu_op_and_repeats_bit_for_bit") else { return };
    let n = 100_003;
    let x = values(n, 1);
    let g = values(n, 2);
    let mut want = vec![0.0; n];
    ops::gelu_forward(&mut want, &x);
    let mut want_d = g.clone();
    ops::gelu_backward_inplace(&mut want_d, &x);

    let xd = CudaTensor::from_host(&dev, &x).unwrap();
    let mut out = CudaTensor::zeros(&dev, n).unwrap();
    launch::gelu_forward(&dev, &mut out, &xd).unwrap();
    let got = out.to_vec(&dev).unwrap();
    // The CPU's erf is an approximation within 5e-7; the GPU's erff is exact to an ulp or two.
    assert!(max_diff(&got, &want) < 2e-6, "gelu_forward: {}", max_diff(&got, &want));
    launch::gelu_forward(&dev, &mut out, &xd).unwrap();
    assert_eq!(out.to_vec(&dev).unwrap(), got, "gelu_forward differs between two runs");

    let mut d = CudaTensor::from_host(&dev, &g).unwrap();
    launch::gelu_backward_inplace(&dev, &mut d, &xd).unwrap();
    let got_d = d.to_vec(&dev).unwrap();
    assert!(max_diff(&got_d, &want_d) < 1e-5, "gelu_backward_inplace: {}", max_diff(&got_d, &want_d));
}

#[test]
fn layernorm_and_sum_sq_on_the_gpu_match_the_cpu_ops_and_repeat_bit_for_bit() {
    let Some(dev) = device("layernorm_and_sum_sq_on_the_gpu_match_the_cpu_ops_and_repeat_bit_for_bit") else {
        return;
    };
    let (rows, c) = (37, 389);
    let (x, w, b) = (values(rows * c, 3), values(c, 4), values(c, 5));
    for stride in [c, c + 1] {
        let (mut want, mut want_st) = (vec![0.0; rows * stride], vec![0.0; rows * 2]);
        ops::layernorm_forward(&mut want, &mut want_st, &x, &w, &b, rows, c, stride, 1e-6);
        let (xd, wd, bd) = (
            CudaTensor::from_host(&dev, &x).unwrap(),
            CudaTensor::from_host(&dev, &w).unwrap(),
            CudaTensor::from_host(&dev, &b).unwrap(),
        );
        let (mut out, mut st) =
            (CudaTensor::zeros(&dev, rows * stride).unwrap(), CudaTensor::zeros(&dev, rows * 2).unwrap());
        launch::layernorm_forward(&dev, &mut out, &mut st, &xd, &wd, &bd, rows, c, stride, 1e-6).unwrap();
        let got = out.to_vec(&dev).unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "layernorm_forward (stride {stride}): {}", max_diff(&got, &want));
        assert!(max_diff(&st.to_vec(&dev).unwrap(), &want_st) < 1e-5, "layernorm_forward stats");
        launch::layernorm_forward(&dev, &mut out, &mut st, &xd, &wd, &bd, rows, c, stride, 1e-6).unwrap();
        assert_eq!(out.to_vec(&dev).unwrap(), got, "layernorm_forward differs between two runs");
    }
    let big = values(1_000_003, 6);
    let want = ops::sum_sq_f64(&big);
    let bd = CudaTensor::from_host(&dev, &big).unwrap();
    let got = launch::sum_sq_f64(&dev, &bd).unwrap();
    assert!(((got - want) / want).abs() < 1e-12, "sum_sq_f64: {got} vs {want}");
    assert_eq!(launch::sum_sq_f64(&dev, &bd).unwrap().to_bits(), got.to_bits(), "sum_sq_f64 differs between runs");
}

/// f32 → bf16 → f32, round to nearest even (finite inputs).
fn bf16(v: f32) -> f32 {
    let u = v.to_bits();
    f32::from_bits(((u + 0x7fff + ((u >> 16) & 1)) >> 16) << 16)
}

#[test]
fn matmul_forward_through_cublaslt_matches_the_product_of_the_bf16_operands() {
    let Some(dev) = device("matmul_forward_through_cublaslt_matches_the_product_of_the_bf16_operands") else {
        return;
    };
    let (rows, c, oc) = (67, 129, 45);
    let (x, w, b) = (values(rows * c, 7), values(oc * c, 8), values(oc, 9));
    let (xd, wd, bd) = (
        CudaTensor::from_host(&dev, &x).unwrap(),
        CudaTensor::from_host(&dev, &w).unwrap(),
        CudaTensor::from_host(&dev, &b).unwrap(),
    );
    for with_bias in [false, true] {
        let mut out = CudaTensor::zeros(&dev, rows * oc).unwrap();
        launch::matmul_forward(&dev, &mut out, &xd, &wd, with_bias.then_some(&bd), rows, c, oc).unwrap();
        let got = out.to_vec(&dev).unwrap();
        for r in 0..rows {
            for o in 0..oc {
                let (mut want, mut mag) = (if with_bias { b[o] as f64 } else { 0.0 }, b[o].abs() as f64);
                for i in 0..c {
                    let p = bf16(x[r * c + i]) as f64 * bf16(w[o * c + i]) as f64;
                    want += p;
                    mag += p.abs();
                }
                // f32 accumulation: within k·ε of Σ|terms| (bf16 inputs would be off by ~4e-3).
                let g = got[r * oc + o] as f64;
                assert!((g - want).abs() <= 1e-5 * mag, "[{r}, {o}] (bias {with_bias}): {g} vs {want}");
            }
        }
    }
}
