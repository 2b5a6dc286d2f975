//! Central finite-difference checks of a layer's backward (tests only).
//!
//! The scalar probed is L = Σ y ⊙ r for a fixed random r; the analytic gradients from
//! `backward(dy = r)` are compared with (L(θ+ε) − L(θ−ε)) / 2ε for every input element and for
//! up to `max_per_param` elements of every trainable parameter.

use super::param::Module;
use crate::engine::rng::Rng;

#[derive(Clone, Copy)]
pub struct Probe {
    pub eps: f32,
    /// Allowed error, relative to the largest numerical gradient of the tensor compared.
    pub tol: f64,
    pub check_input: bool,
    pub max_per_param: usize,
    pub seed: u64,
    pub x_scale: f32,
    /// For piecewise-linear functions (ReLU, max-pool): an element whose central difference
    /// straddles a kink may match one of its two one-sided differences instead (a wrong gradient
    /// matches none).
    pub kinks: bool,
    /// Smallest gradient scale the tolerance is taken relative to (for tensors whose gradient is
    /// tiny next to the rest of the model).
    pub min_scale: f64,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            eps: 1e-2,
            tol: 1e-2,
            check_input: true,
            max_per_param: 48,
            seed: 11,
            x_scale: 1.0,
            kinks: false,
            min_scale: 1e-3,
        }
    }
}

fn loss(y: &[f32], r: &[f32]) -> f64 {
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Compare analytic gradients with numeric candidates (central, then, with `kinks`, one-sided).
fn compare(what: &str, analytic: &[f64], numeric: &[[f64; 3]], p: &Probe) {
    let (tol, kinks) = (p.tol, p.kinks);
    let scale = numeric.iter().map(|n| n[0]).chain(analytic.iter().copied()).fold(p.min_scale, |m, v| m.max(v.abs()));
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        let cands = if kinks { &n[..] } else { &n[..1] };
        assert!(
            cands.iter().any(|c| (a - c).abs() <= tol * scale),
            "{what}[{i}]: analytic {a:.6} vs numeric {cands:?} (scale {scale:.4})"
        );
    }
}

/// Check `bwd` against finite differences of `fwd`. Returns the input used (for extra checks).
pub fn check_layer<L: Module>(
    layer: &mut L,
    nx: usize,
    ny: usize,
    mut fwd: impl FnMut(&mut L, &[f32]) -> Vec<f32>,
    mut bwd: impl FnMut(&mut L, &[f32], &[f32], &mut [f32]),
    probe: Probe,
) -> Vec<f32> {
    let mut rng = Rng::new(probe.seed);
    let mut x: Vec<f32> = (0..nx).map(|_| rng.normal() * probe.x_scale).collect();
    let r: Vec<f32> = (0..ny).map(|_| rng.normal()).collect();
    let y = fwd(layer, &x);
    assert_eq!(y.len(), ny);
    let mut dx = vec![0.0f32; nx];
    bwd(layer, &x, &r, &mut dx);

    // Analytic parameter gradients, copied out before the probing forwards overwrite nothing
    // (forward never touches gradients, but copy for clarity).
    let mut grads: Vec<(String, Vec<f32>, bool)> = Vec::new();
    layer.visit(&mut |p| grads.push((p.name.clone(), p.g.to_vec(), p.trainable)));

    let l0 = loss(&fwd(layer, &x), &r);
    let h = probe.eps as f64;
    if probe.check_input {
        let mut num = Vec::with_capacity(nx);
        for i in 0..nx {
            let v = x[i];
            x[i] = v + probe.eps;
            let lp = loss(&fwd(layer, &x), &r);
            x[i] = v - probe.eps;
            let lm = loss(&fwd(layer, &x), &r);
            x[i] = v;
            num.push([(lp - lm) / (2.0 * h), (lp - l0) / h, (l0 - lm) / h]);
        }
        let an: Vec<f64> = dx.iter().map(|&v| v as f64).collect();
        compare("input", &an, &num, &probe);
    }

    for (pi, (name, g, trainable)) in grads.iter().enumerate() {
        if !trainable {
            continue;
        }
        let n = g.len();
        let idx: Vec<usize> = if n <= probe.max_per_param {
            (0..n).collect()
        } else {
            (0..probe.max_per_param).map(|_| rng.below(n)).collect()
        };
        let mut num = Vec::new();
        let mut an = Vec::new();
        for &e in &idx {
            let set = |layer: &mut L, delta: f32| {
                let mut k = 0;
                layer.visit(&mut |p| {
                    if k == pi {
                        p.w[e] += delta;
                    }
                    k += 1;
                });
            };
            set(layer, probe.eps);
            let lp = loss(&fwd(layer, &x), &r);
            set(layer, -2.0 * probe.eps);
            let lm = loss(&fwd(layer, &x), &r);
            set(layer, probe.eps);
            num.push([(lp - lm) / (2.0 * h), (lp - l0) / h, (l0 - lm) / h]);
            an.push(g[e] as f64);
        }
        compare(name, &an, &num, &probe);
    }
    x
}
