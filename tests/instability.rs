//! The instability actions (`on_spike`) on a gradient spike injected into the patch projection
//! (`inject_spike`), end to end on the synthetic set: each action does what it says, is logged,
//! and a run with actions resumes bit-exactly.

mod common;

use mocov3::train::checkpoint;
use mocov3::train::config::{merge_sets, preset, PretrainConfig};
use mocov3::train::pretrain::{run, RunOptions, RunSummary};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocov3-instab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// 2 epochs of 6 steps of the tiny ViT with a learned patch projection, a 6-step median window,
/// a checkpoint kept after every step, and `extra` settings.
fn cfg(out: &str, extra: &[&str]) -> PretrainConfig {
    let mut sets: Vec<String> = [
        "max_steps_per_epoch=6",
        "epochs=2",
        "batch_size=16",
        "threads=1",
        "stop_grad_conv1=false",
        "knn_every=0",
        "spike_window=6",
        "checkpoint_every_steps=1",
        "keep_checkpoints=100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut c = merge_sets(&preset("tiny-synthetic").unwrap(), &sets).unwrap();
    c.out_dir = tmp(out);
    c
}

fn quiet() -> RunOptions {
    RunOptions { quiet: true, ..Default::default() }
}

/// The event lines of a run's metrics.jsonl.
fn events(r: &RunSummary) -> Vec<Value> {
    common::metrics_lines(r.checkpoint.parent().unwrap(), true)
}

fn kept(r: &RunSummary, step: u64) -> PathBuf {
    r.checkpoint.with_file_name("checkpoints").join(format!("step-{step:09}.safetensors"))
}

/// The named tensors of a checkpoint whose names start with `prefix`.
fn tensors(path: &Path, prefix: &str) -> Vec<(String, Vec<u32>)> {
    common::checkpoint_bits(path).into_iter().filter(|(n, _)| n.starts_with(prefix)).collect()
}

/// The straight run and the one stopped after an epoch and resumed end in the same bits
/// (weights, buffers, optimiser state) and the same instability state.
fn resumes_bit_exactly(name: &str, extra: &[&str]) -> RunSummary {
    let straight = run(cfg(&format!("{name}-straight"), extra), &quiet()).unwrap();
    let c = cfg(&format!("{name}-split"), extra);
    let first = run(c.clone(), &RunOptions { stop_after_epochs: Some(1), ..quiet() }).unwrap();
    let second = run(c, &RunOptions { resume: Some(first.checkpoint.clone()), ..quiet() }).unwrap();
    assert_eq!(common::checkpoint_bits(&straight.checkpoint), common::checkpoint_bits(&second.checkpoint));
    let (_, _, a) = checkpoint::load(&straight.checkpoint).unwrap();
    let (_, _, b) = checkpoint::load(&second.checkpoint).unwrap();
    assert_eq!(a.control, b.control, "instability state after resume");
    assert_eq!(events(&straight), events(&second), "events after resume");
    straight
}

#[test]
fn an_injected_spike_is_found_in_the_patch_projection_and_only_logged_by_default() {
    let r = run(cfg("log", &["inject_spike=[8]"]), &quiet()).unwrap();
    let ev = events(&r);
    assert!(ev.iter().any(|e| e["event"] == "grad_spike" && e["step"] == 8 && e["layer"] == "patch_embed"), "{ev:?}");
    assert!(!ev.iter().any(|e| e["event"] == "action"), "{ev:?}");
    // Without the injection, no spike at all on this short smooth run.
    let calm = run(cfg("calm", &[]), &quiet()).unwrap();
    assert!(!events(&calm).iter().any(|e| e["step"] == 8 && e["layer"] == "patch_embed"));
}

#[test]
fn freeze_patch_stops_the_patch_projection_for_the_rest_of_the_run_and_resumes_bit_exactly() {
    let r = resumes_bit_exactly("freeze", &["on_spike=\"freeze-patch\"", "inject_spike=[4]"]);
    let ev = events(&r);
    let actions: Vec<&Value> = ev.iter().filter(|e| e["event"] == "action").collect();
    assert_eq!(actions.len(), 1, "{ev:?}");
    assert_eq!((actions[0]["action"].as_str(), actions[0]["step"].as_u64()), (Some("freeze-patch"), Some(4)));
    let patch = "base_encoder.patch_embed.";
    // From step 3's weights on, the patch projection never moves; the blocks do.
    assert_eq!(tensors(&kept(&r, 3), patch), tensors(&r.checkpoint, patch));
    assert_ne!(tensors(&kept(&r, 3), "base_encoder.blocks."), tensors(&r.checkpoint, "base_encoder.blocks."));
    let (m, _, state) = checkpoint::load(&r.checkpoint).unwrap();
    assert_eq!(state.control.frozen, Some(("patch_embed".to_string(), 4)));
    let mut m = m;
    assert!(!m.trainable_keys().iter().any(|k| k.starts_with(patch)));
}

#[test]
fn clip_scales_the_patch_gradient_down_to_v_times_its_median() {
    let r = run(cfg("clip", &["on_spike=\"clip:2\"", "inject_spike=[8]"]), &quiet()).unwrap();
    let ev = events(&r);
    let spike = ev.iter().find(|e| e["event"] == "grad_spike" && e["step"] == 8).unwrap();
    let act = ev.iter().find(|e| e["event"] == "action").unwrap();
    assert_eq!((act["action"].as_str(), act["step"].as_u64()), (Some("clip"), Some(8)));
    let (norm, median) = (spike["norm"].as_f64().unwrap(), spike["median"].as_f64().unwrap());
    let (to, factor) = (act["to"].as_f64().unwrap(), act["factor"].as_f64().unwrap());
    assert!((to - 2.0 * median).abs() <= 1e-12 * to && (factor * norm - to).abs() <= 1e-9 * to, "{act}");
    // Under AdamW a spike's harm is the second moment it leaves (it stalls the layer for
    // hundreds of steps): clipped, it stays near its usual size.
    let free = run(cfg("clip-free", &["inject_spike=[8]"]), &quiet()).unwrap();
    let v = |r: &RunSummary| {
        let t = common::checkpoint_tensors(&kept(r, 8));
        let name = "optimizer.exp_avg_sq.base_encoder.patch_embed.proj.weight";
        t.into_iter().find(|(n, _)| n == name).unwrap().1.iter().map(|&x| x as f64).sum::<f64>()
    };
    assert!(v(&free) > 1e4 * v(&r), "second moment: clipped {} vs free {}", v(&r), v(&free));
}

#[test]
fn clip_resumes_bit_exactly() {
    // The clip factor comes from the running median, which the checkpoint carries: a median read
    // back one bit off would change the weights.
    let r = resumes_bit_exactly("clip-resume", &["on_spike=\"clip:2\"", "inject_spike=[4, 9]"]);
    let n = events(&r).iter().filter(|e| e["event"] == "action" && e["action"] == "clip").count();
    assert_eq!(n, 2);
}

#[test]
fn skip_leaves_the_trained_weights_of_the_spiking_step_untouched() {
    let r = run(cfg("skip", &["on_spike=\"skip\"", "inject_spike=[8]"]), &quiet()).unwrap();
    assert!(events(&r).iter().any(|e| e["event"] == "action" && e["action"] == "skip" && e["step"] == 8));
    // The parameters (not the BatchNorm statistics, which the forward pass updates).
    let params = |step| -> Vec<(String, Vec<u32>)> {
        tensors(&kept(&r, step), "base_encoder.")
            .into_iter()
            .filter(|(n, _)| !n.contains("running_") && !n.contains("num_batches"))
            .collect()
    };
    assert!(params(7) == params(8), "the skipped step changed the parameters");
    assert!(params(8) != params(9));
    // The momentum encoder moved as on every step; the optimiser took one step fewer.
    assert_ne!(tensors(&kept(&r, 7), "momentum_encoder."), tensors(&kept(&r, 8), "momentum_encoder."));
    let (_, opt, _) = checkpoint::load(&r.checkpoint).unwrap();
    assert_eq!(opt.steps(), 11);
}

#[test]
fn rollback_restores_the_last_snapshot_lowers_the_lr_and_resumes_bit_exactly() {
    let r = resumes_bit_exactly("rollback", &["on_spike=\"rollback:0.25\"", "snapshot_every=4", "inject_spike=[10]"]);
    let act = events(&r).into_iter().find(|e| e["event"] == "action").unwrap();
    assert_eq!(
        (act["action"].as_str(), act["step"].as_u64(), act["to_step"].as_u64()),
        (Some("rollback"), Some(10), Some(8))
    );
    // Step 10 ends where step 8 ended: both encoders, the predictor and the optimiser state.
    assert_eq!(common::checkpoint_bits(&kept(&r, 8)), common::checkpoint_bits(&kept(&r, 10)));
    let (_, opt, state) = checkpoint::load(&r.checkpoint).unwrap();
    assert_eq!(state.control.lr_scale, 0.25);
    assert_eq!(opt.steps(), 10);
    // No snapshot after a spike until a clean stretch: step 12 followed the spike at 10.
    assert_eq!(state.control.snapshot.map(|s| s.0), Some(8));
}
