//! Step parity with the official PyTorch code: fixtures made by `scripts/make_parity_fixtures.py`
//! from the official `vits.py` and `moco/builder.py`: a tiny ViT after two AdamW warm-up steps
//! with m 0.5 and weight decay 5 (so the momentum encoder, the BN buffers and the AdamW moments
//! all differ from their initial values), then one compared step. From the same state and views,
//! our step must give the same loss (1e-5 relative), the same gradients (1e-4 of each tensor's
//! largest) and the same weights, buffers and momentum encoder after it (1e-5).

use mocov3::moco::{MoCo, MocoConfig};
use mocov3::models::backbone::BackboneConfig;
use mocov3::models::vit::VitConfig;
use mocov3::nn::posembed::PosEmbedKind;
use mocov3::optim::AdamW;
use safetensors::SafeTensors;
use std::collections::HashMap;

fn floats(st: &SafeTensors, key: &str) -> Vec<f32> {
    let t = st.tensor(key).unwrap_or_else(|_| panic!("fixture lacks {key}"));
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Elements whose gradient is exactly zero in exact arithmetic (the key part of every qkv bias,
/// the final norm's bias): in f32 they are rounding noise that AdamW turns into ±lr steps, in
/// PyTorch and here alike, so their values are not comparable.
fn noise_elements(key: &str, dim: usize) -> Option<std::ops::Range<usize>> {
    let k = key.split_once('.').map(|x| x.1).unwrap_or(key);
    if k.ends_with("attn.qkv.bias") {
        Some(dim..2 * dim)
    } else if k == "norm.bias" {
        Some(0..dim)
    } else {
        None
    }
}

/// The fixture's model: the tiny ViT of the generator (patch 16 with the conv stem, whose official
/// form asserts it; patch 8 otherwise) with its heads.
fn fixture_model(meta: &HashMap<String, String>) -> MocoConfig {
    let conv_stem = meta.get("conv_stem").is_some_and(|v| v == "True");
    MocoConfig {
        backbone: BackboneConfig::Vit(VitConfig {
            img: 32,
            patch: if conv_stem { 16 } else { 8 },
            in_chans: 3,
            dim: 64,
            depth: 2,
            heads: 4,
            mlp_ratio: 4,
            pos: if meta["learned_pe"] == "True" { PosEmbedKind::Learned } else { PosEmbedKind::Sincos },
            stop_grad_conv1: meta["stop_grad_conv1"] == "True",
            conv_stem,
            mlp_bn: false,
        }),
        mlp_dim: 128,
        out_dim: 32,
        t: meta["t"].parse().unwrap(),
    }
}

fn check(name: &str) {
    let dir = std::env::var("PARITY_DIR").unwrap_or(format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{dir}/parity_{name}.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: HashMap<String, String> = meta.metadata().clone().unwrap();
    let get = |k: &str| meta[k].parse::<f64>().unwrap();
    let (lr, wd, m, n) = (get("lr"), get("wd"), get("m"), get("batch") as usize);
    let dim = 64;
    let cfg = fixture_model(&meta);
    let mut model = MoCo::new(&cfg, 0);
    let mut loaded = 0;
    model.visit_tensors(&mut |key, shape, data| {
        let t = st.tensor(&format!("init.{key}")).unwrap_or_else(|_| panic!("fixture lacks init.{key}"));
        assert_eq!(t.shape(), shape, "{key}");
        *data = floats(&st, &format!("init.{key}"));
        loaded += 1;
    });
    let n_keys = st.names().iter().filter(|k| k.starts_with("init.")).count();
    assert_eq!(loaded, n_keys, "every official tensor has a counterpart");
    let mut opt = AdamW::new(wd);
    opt.step = get("adam_step") as u64;
    let keys = model.trainable_keys();
    opt.exp_avg = keys.iter().map(|k| floats(&st, &format!("adam.exp_avg.{k}"))).collect();
    opt.exp_avg_sq = keys.iter().map(|k| floats(&st, &format!("adam.exp_avg_sq.{k}"))).collect();
    let official_grads = st.names().iter().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(keys.len(), official_grads, "the same parameters are trainable");

    let mut x = floats(&st, "x1");
    x.extend(floats(&st, "x2"));
    let loss = model.forward_backward(&x, n, m);
    let want = floats(&st, "loss")[0];
    assert!(((loss - want) / want).abs() < 1e-5, "{name}: loss {loss} vs official {want}");
    let mut bad = Vec::new();
    for (key, p) in keys.iter().zip(model.trainable_params()) {
        let want = floats(&st, &format!("grad.{key}"));
        let scale = want.iter().fold(1e-3f32, |a, v| a.max(v.abs()));
        let skip = noise_elements(key, dim);
        let mut worst = (0.0f32, 0usize);
        for (i, (a, b)) in p.g.iter().zip(&want).enumerate() {
            let tol = if skip.as_ref().is_some_and(|r| r.contains(&i)) { 1e-5 } else { 1e-4 * scale };
            let e = (a - b).abs() / tol;
            if e > worst.0 {
                worst = (e, i);
            }
        }
        if worst.0 > 1.0 {
            let i = worst.1;
            bad.push(format!("grad {key}[{i}]: {} vs official {} (scale {scale})", p.g[i], want[i]));
        }
    }
    assert!(bad.is_empty(), "{name}: gradients differ:\n{}", bad.join("\n"));
    opt.update(&mut model.trainable_params(), lr);
    model.visit_tensors(&mut |key, _, data| {
        let want = floats(&st, &format!("final.{key}"));
        let skip = noise_elements(&key, dim);
        for (i, (a, b)) in data.iter().zip(&want).enumerate() {
            if skip.as_ref().is_some_and(|r| r.contains(&i)) {
                assert!((a - b).abs() <= 2.0 * lr as f32, "{name}: {key}[{i}] {a} vs {b}");
                continue;
            }
            let tol = if key.ends_with("num_batches_tracked") { 0.0 } else { 1e-5 * b.abs().max(1.0) };
            assert!((a - b).abs() <= tol, "{name}: final {key}[{i}] {a} vs official {b}");
        }
    });
}

#[test]
fn parity_sincos() {
    check("sincos");
}

#[test]
fn parity_stop_grad_conv1() {
    check("stopgrad");
}

#[test]
fn parity_learned_pe() {
    check("learned");
}

#[test]
fn parity_conv_stem() {
    check("convstem");
}

/// `mocov3 step` end to end: the fixture's state written as an official checkpoint (with its
/// AdamW state), the views as safetensors, one step by the tool, and its official-layout output
/// read back and compared with the official code's result.
fn check_step_tool(name: &str) {
    use mocov3::interop::{official, step, writer};
    let path = format!("{}/tests/fixtures/parity_{name}.safetensors", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: HashMap<String, String> = meta.metadata().clone().unwrap();
    let get = |k: &str| meta[k].parse::<f64>().unwrap();
    let cfg = fixture_model(&meta);
    let vit = cfg.backbone.vit().unwrap().clone();
    let mut model = MoCo::new(&cfg, 0);
    model.visit_tensors(&mut |key, _, data| *data = floats(&st, &format!("init.{key}")));
    let mut opt = AdamW::new(get("wd"));
    opt.step = get("adam_step") as u64;
    let keys = model.trainable_keys();
    opt.exp_avg = keys.iter().map(|k| floats(&st, &format!("adam.exp_avg.{k}"))).collect();
    opt.exp_avg_sq = keys.iter().map(|k| floats(&st, &format!("adam.exp_avg_sq.{k}"))).collect();
    let dir = std::env::temp_dir().join(format!("mocov3-steptool-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.pth.tar");
    writer::save(
        &input,
        &official::to_official_with(
            &mut model,
            1,
            "vit_test",
            Some((&mocov3::optim::Optimizer::AdamW(opt.clone()), get("lr"))),
        ),
    )
    .unwrap();
    let (x1, x2) = (st.tensor("x1").unwrap(), st.tensor("x2").unwrap());
    let views = dir.join("views.safetensors");
    safetensors::tensor::serialize_to_file(vec![("x1", x1), ("x2", x2)], &None, &views).unwrap();
    let out = dir.join("out.pth.tar");
    let args = step::StepArgs {
        heads: 4,
        pos: vit.pos,
        stop_grad_conv1: vit.stop_grad_conv1,
        lr: get("lr"),
        wd: get("wd"),
        m: get("m"),
        t: get("t") as f32,
    };
    let loss = step::run(&input, &views, &out, &args).unwrap();
    let want = floats(&st, "loss")[0];
    assert!(((loss - want) / want).abs() < 1e-5, "{name}: step tool loss {loss} vs official {want}");
    let mut after = MoCo::new(&cfg, 5);
    let mut opt2 = mocov3::optim::Optimizer::AdamW(AdamW::new(0.0));
    official::load_into(&out, &mut after, &mut opt2).unwrap();
    assert_eq!(opt2.steps(), get("adam_step") as u64 + 1);
    after.visit_tensors(&mut |key, _, data| {
        let want = floats(&st, &format!("final.{key}"));
        let skip = noise_elements(&key, 64);
        for (i, (a, b)) in data.iter().zip(&want).enumerate() {
            let tol = if skip.as_ref().is_some_and(|r| r.contains(&i)) {
                2.0 * get("lr") as f32
            } else {
                1e-5 * b.abs().max(1.0)
            };
            assert!((a - b).abs() <= tol, "{name}: step tool {key}[{i}] {a} vs official {b}");
        }
    });
}

#[test]
fn step_tool_sincos() {
    check_step_tool("sincos");
}

#[test]
fn step_tool_learned_pe() {
    check_step_tool("learned");
}

#[test]
fn step_tool_conv_stem() {
    check_step_tool("convstem");
}
