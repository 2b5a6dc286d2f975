//! Helpers shared by the integration tests (each test file that needs them has `mod common;`).
#![allow(dead_code)]

use mocov3::moco::MocoConfig;
use mocov3::models::backbone::BackboneConfig;
use mocov3::models::vit::VitConfig;
use mocov3::nn::posembed::PosEmbedKind;
use std::path::Path;

#[cfg(feature = "cuda")]
pub mod cuda;

/// The official checkpoint fixtures' model: a 1-block ViT of width `dim` on 16 px, patch 8, with
/// 32-wide heads and 8-d outputs (scripts/make_checkpoint_fixtures.py).
pub fn tiny(dim: usize) -> MocoConfig {
    MocoConfig {
        backbone: BackboneConfig::Vit(VitConfig {
            img: 16,
            patch: 8,
            in_chans: 3,
            dim,
            depth: 1,
            heads: 2,
            mlp_ratio: 4,
            pos: PosEmbedKind::Sincos,
            stop_grad_conv1: true,
            conv_stem: false,
            mlp_bn: false,
        }),
        mlp_dim: 32,
        out_dim: 8,
        t: 0.2,
    }
}

/// Every tensor of a native checkpoint by name: the model's, then the optimiser's state
/// (`optimizer.<state>.<parameter key>`).
pub fn checkpoint_tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let (mut m, mut opt, _) = mocov3::train::checkpoint::load(path).unwrap();
    let mut v = Vec::new();
    m.visit_tensors(&mut |name, _, d| v.push((name, d.clone())));
    let keys = m.trainable_keys();
    for (name, state) in opt.state_mut() {
        for (k, s) in keys.iter().zip(state.iter()) {
            v.push((format!("optimizer.{name}.{k}"), s.clone()));
        }
    }
    v
}

/// The lines of a run directory's `metrics.jsonl`, parsed: the step lines, or with `events` the
/// event lines (instability detections and actions, the kNN monitor).
pub fn metrics_lines(dir: &Path, events: bool) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("event").is_some() == events)
        .collect()
}

/// (step, loss) of every step line of a run directory's `metrics.jsonl`.
pub fn logged_steps(dir: &Path) -> Vec<(u64, f64)> {
    metrics_lines(dir, false).iter().map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())).collect()
}

/// [`checkpoint_tensors`] as bits, for bit-exact comparisons.
pub fn checkpoint_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    checkpoint_tensors(path).into_iter().map(|(n, d)| (n, d.iter().map(|x| x.to_bits()).collect())).collect()
}
