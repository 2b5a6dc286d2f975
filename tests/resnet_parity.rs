//! ResNet step parity with the official PyTorch code: fixtures made by
//! `scripts/make_resnet_parity_fixtures.py` from the official `MoCo_ResNet` and `LARS` on
//! torchvision's ResNets (a CIFAR ResNet-18 and a ResNet-50). Both sides start from the same
//! hashed state (a formula computed exactly here and in the script: both encoders, different
//! from each other, the BN statistics and LARS's momentum buffers) and take one step on hashed
//! views with LARS at lr 2 and weight decay 0.05, m 0.5. Compared: the loss (1e-5 relative), the
//! gradients (1e-4 of each tensor's largest), and the weights, BN running statistics, momentum
//! encoder and LARS momentum buffers after it (1e-5), each tensor by sampled elements, its L2 norm
//! and a hashed projection of all of it; each tolerance plus twice the official float32 run's own
//! distance from float64 there (the fixture's `err` entries, see [`ROUNDING`]).
//!
//! Mutation-checked: LARS's weight decay or trust ratio applied to 1-d parameters fails all three
//! tests (88 and 220 differences).

use mocov3::moco::{MoCo, MocoConfig};
use mocov3::models::backbone::{BackboneConfig, ResNetConfig};
use mocov3::optim::{Lars, Optimizer};
use safetensors::SafeTensors;
use std::collections::HashMap;

fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3))
}

/// The script's `uniform`: n exact multiples of 2^-23 in [-1, 1).
fn uniform(name: &str, n: usize) -> Vec<f32> {
    let h = fnv1a64(name);
    (0..n as u64).map(|i| (splitmix64(h ^ splitmix64(i)) >> 40) as f32 * 2f32.powi(-23) - 1.0).collect()
}

/// The script's `hashed`: the starting value of a state_dict key, or of `mu:<key>`; `last_bn`
/// names the last BN of a residual block (bn2 or bn3), whose weights start small.
fn hashed(key: &str, shape: &[usize], last_bn: &str) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if key.ends_with("num_batches_tracked") {
        return vec![3.0];
    }
    let stats = key.ends_with("running_mean") || key.ends_with("running_var");
    let name = match (key.strip_prefix("base_encoder."), key.strip_prefix("momentum_encoder.")) {
        (Some(k), _) if !stats => k.to_string(),
        (_, Some(k)) if !stats => format!("momentum:{k}"),
        _ => key.to_string(),
    };
    let u = uniform(&name, n);
    let scale = |s: f64| -> Vec<f32> { u.iter().map(|v| v * s as f32).collect() };
    let fan_scale = || (3.0 / (n / shape[0]) as f64).sqrt();
    if key.starts_with("mu:") {
        if shape.len() > 1 {
            scale((0.001 * fan_scale()) as f32 as f64)
        } else {
            scale(0.01)
        }
    } else if key.ends_with("running_mean") {
        scale(0.1)
    } else if key.ends_with("running_var") {
        u.iter().map(|v| 1.0 + v * 0.5).collect()
    } else if shape.len() > 1 {
        scale(fan_scale())
    } else if key.contains("layer") && key.ends_with(&format!("{last_bn}.weight")) {
        scale(0.1)
    } else if key.ends_with(".weight") {
        u.iter().map(|v| 1.0 + v * 0.25).collect()
    } else {
        scale(0.1)
    }
}

struct Fixture {
    /// Every tensor of the file, read once.
    tensors: HashMap<String, Vec<f32>>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn open(name: &str) -> Fixture {
        let path = format!("{}/tests/fixtures/parity_{name}.safetensors", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let floats = |d: &[u8]| d.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let tensors = st.tensors().into_iter().map(|(k, t)| (k, floats(t.data()))).collect();
        Fixture { tensors, meta }
    }

    fn get(&self, k: &str) -> f64 {
        self.meta[k].parse().unwrap_or_else(|_| panic!("metadata {k}"))
    }

    fn floats(&self, key: &str) -> &[f32] {
        self.tensors.get(key).unwrap_or_else(|| panic!("fixture lacks {key}"))
    }

    /// How many tensors' names start with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.tensors.keys().filter(|k| k.starts_with(prefix)).count()
    }

    fn cfg(&self) -> MocoConfig {
        let backbone = BackboneConfig::ResNet(ResNetConfig {
            depth: self.get("depth") as usize,
            cifar: self.meta["cifar"] == "True",
            img: self.get("img") as usize,
            in_chans: 3,
        });
        MocoConfig {
            backbone,
            mlp_dim: self.get("mlp_dim") as usize,
            out_dim: self.get("dim") as usize,
            t: self.get("t") as f32,
        }
    }

    /// `[x1; x2]`.
    fn views(&self) -> Vec<f32> {
        let (n, img) = (self.get("batch") as usize, self.get("img") as usize);
        let mut x = uniform("x1", n * 3 * img * img);
        x.extend(uniform("x2", n * 3 * img * img));
        x
    }

    /// `[L2 norm, hashed projection, max |x|]` of `<what>.<key>`.
    fn stat(&self, what: &str, key: &str) -> [f64; 3] {
        let s = self.floats(&format!("{what}.stat.{key}"));
        [s[0] as f64, s[1] as f64, s[2] as f64]
    }

    /// How far the official float32 result is from the float64 one: `[max |x32 − x64|, the same
    /// for the L2 norm, for the projection]` of `<what>.<key>`.
    fn err(&self, what: &str, key: &str) -> [f64; 3] {
        let s = self.floats(&format!("{what}.err.{key}"));
        [s[0] as f64, s[1] as f64, s[2] as f64]
    }

    /// Check tensor `data` against `<what>.*.<key>`: sampled elements within `tol` of
    /// max(|value|, 1) (of the tensor's largest value with `of_max`) plus `slack.0`, the L2 norm
    /// and the hashed projection within `tol` of the norm plus `slack.1`; each plus [`ROUNDING`]
    /// times the official float32 run's own distance from float64 there.
    #[allow(clippy::too_many_arguments)]
    fn compare(
        &self,
        what: &str,
        key: &str,
        data: &[f32],
        tol: f64,
        of_max: bool,
        slack: (f64, f64),
        bad: &mut Vec<String>,
    ) {
        let (idx, val) = (self.floats(&format!("{what}.idx.{key}")), self.floats(&format!("{what}.val.{key}")));
        let [l2, proj, max] = self.stat(what, key);
        let err = self.err(what, key).map(|e| ROUNDING * e);
        for (&i, &b) in idx.iter().zip(val) {
            let (a, b) = (data[i as usize] as f64, b as f64);
            let t = if key.ends_with("num_batches_tracked") {
                0.0
            } else if of_max {
                tol * max.max(1e-3) + slack.0 + err[0]
            } else {
                tol * b.abs().max(1.0) + slack.0 + err[0]
            };
            if (a - b).abs() > t {
                bad.push(format!(
                    "{what} {key}[{i}]: {a} vs official {b} (float32 vs float64 there: {})",
                    err[0] / ROUNDING
                ));
                return;
            }
        }
        let u = uniform(&format!("sign:{key}"), data.len());
        let ours_l2 = data.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        let ours_proj: f64 = data.iter().zip(&u).map(|(&v, &w)| v as f64 * w as f64).sum();
        // The f32 rounding of the stored statistics is 6e-8 relative.
        let t = tol * l2 + slack.1;
        if (ours_l2 - l2).abs() > t + err[1] + 1e-7 * l2 {
            bad.push(format!("{what} {key}: L2 norm {ours_l2} vs official {l2}"));
        } else if (ours_proj - proj).abs() > t + err[2] + 1e-7 * proj.abs() {
            bad.push(format!("{what} {key}: projection {ours_proj} vs official {proj} (norm {l2})"));
        }
    }
}

/// How many times the official float32 run's distance from its float64 twin (per tensor, in the
/// fixture) a difference may add to the fixed tolerances: two float32 implementations that sum in
/// other orders each sit about that far from the exact result, and near-zero ReLU inputs and
/// BatchNorms over a few values (a 32 px ResNet-50 normalises its last stage over 8 values) make
/// that distance large in places (up to 4% of a gradient's largest value in this ResNet-50).
const ROUNDING: f64 = 2.0;

/// The model and LARS at the fixture's starting point: every tensor and momentum buffer hashed
/// from its key.
fn start(fx: &Fixture) -> (MoCo, Lars) {
    let mut model = MoCo::new(&fx.cfg(), 0);
    let last_bn = if fx.get("depth") == 50.0 { "bn3" } else { "bn2" };
    model.visit_tensors(&mut |key, shape, data| *data = hashed(&key, shape, last_bn));
    let mut opt = Lars::new(fx.get("wd"));
    let keys = model.trainable_keys();
    let shapes: Vec<Vec<usize>> = model.trainable_params().iter().map(|p| p.shape.clone()).collect();
    opt.mu = keys.iter().zip(&shapes).map(|(k, s)| hashed(&format!("mu:{k}"), s, last_bn)).collect();
    (model, opt)
}

/// Take the step; returns the loss.
fn step(fx: &Fixture, model: &mut MoCo, opt: &mut Lars) -> f32 {
    let loss = model.forward_backward(&fx.views(), fx.get("batch") as usize, fx.get("m"));
    opt.update(&mut model.trainable_params(), fx.get("lr"));
    loss
}

/// The gradients' tolerance: 1e-4 of each tensor's largest value. Near-zero ReLU inputs and
/// BatchNorms over a few values make two correct float32 implementations differ there.
const GRAD_TOL: f64 = 1e-4;

/// Everything after the step against the fixture: the state (weights, buffers, both encoders)
/// at 1e-5, plus what the gradients' tolerance becomes through the update (lr times it, of the
/// momentum buffer's scale); when given, the gradients and the LARS buffers (which carry the
/// gradients' tolerance).
fn compare_final(fx: &Fixture, model: &mut MoCo, mu: Option<&[Vec<f32>]>, name: &str) {
    let mut bad = Vec::new();
    let mut seen = 0;
    let keys = model.trainable_keys();
    let lr = fx.get("lr");
    model.visit_tensors(&mut |key, _, data| {
        let slack = if keys.contains(&key) {
            let [l2, _, max] = fx.stat("mu", &key);
            (lr * GRAD_TOL * max, lr * GRAD_TOL * l2)
        } else {
            (0.0, 0.0)
        };
        fx.compare("final", &key, data, 1e-5, false, slack, &mut bad);
        seen += 1;
    });
    let grads: Vec<Vec<f32>> = model.trainable_params().iter().map(|p| p.g.to_vec()).collect();
    if let Some(mu) = mu {
        for ((key, g), mu) in keys.iter().zip(&grads).zip(mu) {
            fx.compare("grad", key, g, GRAD_TOL, true, (0.0, 0.0), &mut bad);
            fx.compare("mu", key, mu, GRAD_TOL, true, (0.0, 0.0), &mut bad);
        }
    }
    assert_eq!(seen, fx.count("final.idx."), "{name}: every official tensor has a counterpart");
    assert_eq!(keys.len(), fx.count("grad.idx."), "{name}: the same parameters are trainable");
    assert!(bad.is_empty(), "{name}: {} differences:\n{}", bad.len(), bad.join("\n"));
}

/// The loss within 1e-5 relative (plus the rounding allowance).
fn check_loss(fx: &Fixture, loss: f32, name: &str) {
    let (want, err) = (fx.floats("loss")[0] as f64, fx.floats("loss.err")[0] as f64);
    let d = (loss as f64 - want).abs();
    assert!(d < 1e-5 * want.abs() + ROUNDING * err, "{name}: loss {loss} vs official {want}");
}

fn check(name: &str) {
    let fx = Fixture::open(name);
    let (mut model, mut opt) = start(&fx);
    let loss = step(&fx, &mut model, &mut opt);
    check_loss(&fx, loss, name);
    compare_final(&fx, &mut model, Some(&opt.mu), name);
}

#[test]
fn parity_resnet18_cifar() {
    check("resnet18_cifar");
}

#[test]
fn parity_resnet50() {
    check("resnet50");
}

/// `mocov3 step` on a ResNet: the starting state written as an official
/// checkpoint with its LARS buffers, the last step's views as safetensors, one step by the tool,
/// and its official-layout output compared with the official code's result.
fn check_step_tool(name: &str) {
    use mocov3::interop::{official, step, writer};
    let fx = Fixture::open(name);
    let (mut model, opt) = start(&fx);
    let dir = std::env::temp_dir().join(format!("mocov3-steptool-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.pth.tar");
    let o = Optimizer::Lars(opt);
    writer::save(&input, &official::to_official_with(&mut model, 1, name, Some((&o, fx.get("lr"))))).unwrap();
    let (n, img) = (fx.get("batch") as usize, fx.get("img") as usize);
    let x = fx.views();
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let half = bytes.len() / 2;
    let shape = vec![n, 3, img, img];
    let views = dir.join("views.safetensors");
    let t1 = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), &bytes[..half]).unwrap();
    let t2 = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes[half..]).unwrap();
    safetensors::tensor::serialize_to_file(vec![("x1", t1), ("x2", t2)], &None, &views).unwrap();
    let out = dir.join("out.pth.tar");
    let args = step::StepArgs {
        heads: 0,
        pos: mocov3::nn::posembed::PosEmbedKind::Sincos,
        stop_grad_conv1: false,
        lr: fx.get("lr"),
        wd: fx.get("wd"),
        m: fx.get("m"),
        t: fx.get("t") as f32,
    };
    let loss = step::run(&input, &views, &out, &args).unwrap();
    check_loss(&fx, loss, name);
    let mut after = MoCo::new(&fx.cfg(), 5);
    let mut o2 = Optimizer::Lars(Lars::new(0.0));
    official::load_into(&out, &mut after, &mut o2).unwrap();
    let Optimizer::Lars(o2) = o2 else { unreachable!() };
    let mut bad = Vec::new();
    for (key, mu) in after.trainable_keys().iter().zip(&o2.mu) {
        fx.compare("mu", key, mu, GRAD_TOL, true, (0.0, 0.0), &mut bad);
    }
    assert!(bad.is_empty(), "{name}: step tool: {}", bad.join("\n"));
    compare_final(&fx, &mut after, None, name);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn step_tool_resnet18_cifar() {
    check_step_tool("resnet18_cifar");
}
