//! End-to-end pre-training on the synthetic set: bit-exact resume, divergence handling, and the
//! errors a user meets with bad input.

mod common;

use mocov3::train::checkpoint;
use mocov3::train::config::{merge_sets, preset, PretrainConfig};
use mocov3::train::pretrain::{run, RunOptions};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocov3-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small(out: &str, extra: &[&str]) -> PretrainConfig {
    let mut sets = vec!["max_steps_per_epoch=3".to_string(), "epochs=2".to_string()];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut c = merge_sets(&preset("tiny-synthetic").unwrap(), &sets).unwrap();
    c.out_dir = tmp(out);
    c
}

fn quiet() -> RunOptions {
    RunOptions { quiet: true, ..Default::default() }
}

/// A ResNet-18 (CIFAR stem) with LARS and τ 1.0 on the same small synthetic task.
const RESNET: &[&str] =
    &["arch=\"resnet18\"", "cifar_stem=true", "stop_grad_conv1=false", "optimizer=\"lars\"", "lr=0.3", "moco_t=1.0"];

/// Two epochs straight and one + resume + one give the same losses, weights, buffers and
/// optimiser state, bit for bit.
fn check_resume(name: &str, extra: &[&str]) {
    let straight = run(small(&format!("{name}-straight"), extra), &quiet()).unwrap();
    assert_eq!(straight.losses.len(), 6);

    let cfg = small(&format!("{name}-split"), extra);
    let first = run(cfg.clone(), &RunOptions { stop_after_epochs: Some(1), ..quiet() }).unwrap();
    assert_eq!(first.next_epoch, 1);
    // As if the run had gone on past its checkpoint (step 3) and been killed mid-line.
    let metrics = cfg.out_dir.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text += "{\"step\":4,\"loss\":9.0}\n{\"step\":5,\"lo";
    std::fs::write(&metrics, text).unwrap();
    let second = run(cfg, &RunOptions { resume: Some(first.checkpoint.clone()), ..quiet() }).unwrap();
    let resumed: Vec<u32> = first.losses.iter().chain(&second.losses).map(|l| l.to_bits()).collect();
    let want: Vec<u32> = straight.losses.iter().map(|l| l.to_bits()).collect();
    assert_eq!(resumed, want, "losses differ after resume");
    // The resumed run's log reads as the straight run's: same steps, same losses (the step
    // lines; event lines from the kNN curve may differ, as the monitor's queue refills).
    let logged = |r: &mocov3::train::pretrain::RunSummary| common::logged_steps(r.checkpoint.parent().unwrap());
    assert!(!logged(&straight).is_empty());
    assert_eq!(logged(&second), logged(&straight), "metrics.jsonl after resume");

    // And the final weights, buffers and optimiser state are identical.
    let (mut a, mut oa, sa) = checkpoint::load(&straight.checkpoint).unwrap();
    let (mut b, mut ob, sb) = checkpoint::load(&second.checkpoint).unwrap();
    assert_eq!((sa.epoch, sa.step), (sb.epoch, sb.step));
    assert_eq!(oa.steps(), ob.steps());
    assert_eq!(oa.steps(), 6);
    let state = |o: &mut mocov3::optim::Optimizer| -> Vec<Vec<Vec<f32>>> {
        o.state_mut().into_iter().map(|(_, v)| v.clone()).collect()
    };
    let (ta, tb) = (state(&mut oa), state(&mut ob));
    assert!(!ta.is_empty() && !ta[0].is_empty(), "optimiser state was saved");
    assert_eq!(ta, tb);
    let all = |m: &mut mocov3::moco::MoCo| {
        let mut v = Vec::new();
        m.visit_tensors(&mut |_, _, d| v.push(d.clone()));
        v
    };
    assert_eq!(all(&mut a), all(&mut b));
}

#[test]
fn resume_is_bit_exact() {
    check_resume("vit", &[]);
}

#[test]
fn resnet_with_lars_resumes_bit_exactly_with_the_monitor_on() {
    // The kNN monitor runs the backbone in eval mode in between: it must leave no trace.
    let mut extra = RESNET.to_vec();
    extra.extend(["knn_every=2", "knn_eval=40"]);
    check_resume("resnet", &extra);
}

#[test]
fn vit_bn_with_three_blocks_and_the_monitor_resumes_bit_exactly() {
    // Three blocks: the momentum encoder shares activation buffers between blocks (BatchNorms
    // included); the monitor runs the BatchNorms in evaluation mode.
    check_resume("vit-bn", &["vit_bn=true", "depth=3", "knn_every=2"]);
}

#[test]
fn prefetching_workers_give_the_same_run() {
    let sync = run(small("sync", &[]), &quiet()).unwrap();
    let pre = run(small("prefetch", &["loader_workers=2", "loader_depth=3"]), &quiet()).unwrap();
    let bits = |v: &[f32]| v.iter().map(|l| l.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&sync.losses), bits(&pre.losses));
}

#[test]
fn loss_falls_on_synthetic_data() {
    let c = small("falls", &["max_steps_per_epoch=30", "epochs=3", "warmup_epochs=0.3"]);
    let s = run(c, &quiet()).unwrap();
    let k = 10;
    let head: f32 = s.losses[..k].iter().sum::<f32>() / k as f32;
    let tail: f32 = s.losses[s.losses.len() - k..].iter().sum::<f32>() / k as f32;
    assert!(tail < head - 0.05, "loss did not fall: {head} -> {tail}");
}

#[test]
fn divergence_stops_with_a_clear_message_and_keeps_the_checkpoint() {
    // Epoch 1 runs at lr 0 (warm-up starts at zero) and is checkpointed; the huge rate then
    // blows the weights up and the run must stop, naming the checkpoint it kept.
    let c = small("nan", &["max_steps_per_epoch=1", "epochs=4", "warmup_epochs=1.0", "lr=1e30"]);
    let ckpt = c.out_dir.join("checkpoint.safetensors");
    let err = run(c, &quiet()).err().expect("the run should diverge");
    let msg = format!("{err:#}");
    assert!(msg.contains("diverged") && msg.contains("checkpoint.safetensors"), "{msg}");
    let (_, _, state) = checkpoint::load(&ckpt).expect("the last good checkpoint still loads");
    assert!(state.epoch >= 1);
}

#[test]
fn missing_dataset_and_corrupt_checkpoint_are_clear_errors() {
    // No download attempt from a test (tests/download.rs covers that path on loopback).
    std::env::set_var("MOCOV3_OFFLINE", "1");
    let empty = tmp("empty-data");
    std::fs::create_dir_all(&empty).unwrap();
    let mut c = small("missing", &["dataset=\"mnist\""]);
    c.data_dir = Some(empty.clone());
    let msg = format!("{:#}", run(c, &quiet()).err().unwrap());
    assert!(msg.contains("not found") && msg.contains(&empty.display().to_string()), "{msg}");

    let good = run(small("corrupt", &["epochs=1"]), &quiet()).unwrap();
    let bytes = std::fs::read(&good.checkpoint).unwrap();
    let bad = good.checkpoint.with_file_name("truncated.safetensors");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let msg = format!(
        "{:#}",
        run(small("corrupt2", &[]), &RunOptions { resume: Some(bad.clone()), ..quiet() }).err().unwrap()
    );
    assert!(msg.contains("truncated.safetensors") && msg.contains("corrupt or truncated"), "{msg}");

    // The header alone gives the state that a full load gives; damage is an error naming the file.
    let head = checkpoint::read_state(&good.checkpoint).unwrap();
    let (_, _, full) = checkpoint::load(&good.checkpoint).unwrap();
    assert_eq!((head.epoch, head.step, &head.config), (full.epoch, full.step, &full.config));
    for cut in [4, 40] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let msg = format!("{:#}", checkpoint::read_state(&bad).unwrap_err());
        assert!(msg.contains("truncated.safetensors") && msg.contains("corrupt or truncated"), "{msg}");
    }
}

#[test]
fn bad_shapes_in_config_are_errors() {
    let c = small("shapes", &["patch_size=5"]);
    let msg = format!("{:#}", run(c, &quiet()).err().unwrap());
    assert!(msg.contains("multiple of the patch size"), "{msg}");
}

/// Width of the ViT in a checkpoint.
fn vit_dim(ckpt: &std::path::Path) -> usize {
    checkpoint::read_state(ckpt).unwrap().config.dim.unwrap()
}

#[test]
fn knn_monitor_runs_and_logs() {
    let c = small("knn", &["max_steps_per_epoch=6", "knn_every=3", "knn_eval=64", "knn_bank=96", "knn_k=5"]);
    let metrics = c.out_dir.join("metrics.jsonl");
    let s = run(c, &quiet()).unwrap();
    let acc = s.last_knn.expect("the monitor ran");
    assert!((0.0..=100.0).contains(&acc));
    let text = std::fs::read_to_string(metrics).unwrap();
    let logged = text.lines().filter(|l| l.contains("knn_top1")).count();
    assert_eq!(logged, 4, "steps 3, 6, 9, 12 carry a kNN value:\n{text}");
    assert!(s.monitor_secs > 0.0 && s.monitor_secs < s.total_secs);
    // `mocov3 knn` scores the checkpoint with either encoder's backbone and any ViT feature,
    // plain or standardised.
    for (encoder, feature, std) in
        [("base", "cls", ""), ("momentum", "cls", ""), ("base", "cls+avg", "+standardized"), ("momentum", "last2", "")]
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mocov3"))
            .args(["knn", "--checkpoint", s.checkpoint.to_str().unwrap(), "--encoder", encoder])
            .args(["--feature", feature, "--train-limit", "256", "--test-limit", "64", "--threads", "1"])
            .args(if std.is_empty() { &[][..] } else { &["--standardize"][..] })
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(&format!("{encoder} encoder, feature {feature}")), "{stderr}");
        assert!(stdout.contains(&format!("knn dataset=synthetic features=checkpoint{std} k=20")), "{stdout}");
    }
    // `mocov3 extract` writes the chosen feature, L2-normalised, with the labels.
    let file = s.checkpoint.with_file_name("features-last2.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mocov3"))
        .args(["extract", "--checkpoint", s.checkpoint.to_str().unwrap(), "--split", "test"])
        .args(["--feature", "last2", "--threads", "1", "--out", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (f, l) = (st.tensor("features").unwrap(), st.tensor("labels").unwrap());
    let dim = 2 * vit_dim(&s.checkpoint);
    assert_eq!(f.shape(), [l.shape()[0], dim]);
    let rows: Vec<f32> = f.data().chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    for r in rows.chunks(dim) {
        assert!((r.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4);
    }
    // A feature the model cannot give is refused with the reason, as is a name that is none.
    for (feature, why) in [("last3", "this ViT has 2 blocks"), ("avg", "expected cls, cls+avg or lastN")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mocov3"))
            .args(["knn", "--checkpoint", s.checkpoint.to_str().unwrap(), "--feature", feature])
            .args(["--train-limit", "256", "--test-limit", "64", "--threads", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(why), "{feature}: {stderr}");
    }
}

#[test]
fn linear_probe_learns_and_leaves_the_backbone_unchanged() {
    use mocov3::eval::features::VitFeature;
    use mocov3::eval::lincls::{run as lincls, LinclsConfig};
    let s = run(small("lincls", &["max_steps_per_epoch=4", "epochs=1"]), &quiet()).unwrap();
    let (mut model, _, state) = checkpoint::load(&s.checkpoint).unwrap();
    let train = mocov3::data::load("synthetic", None, true).unwrap();
    let test = mocov3::data::load("synthetic", None, false).unwrap();
    let (mean, std) = train.channel_stats();
    let plain = mocov3::data::augment::Augment::crop_flip(state.config.img_size, 1.0, false, mean, std);
    let features = [
        (true, VitFeature::Cls, false),
        (false, VitFeature::Cls, false),
        (false, VitFeature::LastCls(2), false),
        (true, VitFeature::ClsAvg, false),
        (true, VitFeature::Cls, true),
    ];
    for (cached, feature, standardize) in features {
        let cfg = LinclsConfig {
            epochs: 3,
            batch: 64,
            lr: 1.0,
            momentum: 0.9,
            seed: 0,
            cached,
            crop_min: 1.0,
            lr_sweep: vec![],
            feature,
            standardize,
        };
        let r = lincls(&mut model.base.backbone, &train, &test, &plain, &cfg, |_| {}).unwrap().epochs;
        assert_eq!(r.len(), 3);
        // Ten stripe classes: chance is 10%; the features of a barely trained ViT separate them.
        // Random crops rescale the stripes, whose frequency is part of the class, so the
        // augmented run crops at full scale (flips and aspect jitter only): its head must then
        // score the plain test features as well as the cached one does (81% here; 34% when the
        // test features were normalised and the training features not).
        assert!(r.last().unwrap().top1 > 60.0, "cached={cached} feature={feature} std={standardize}: {:?}", r.last());
        assert!(r[2].lr < r[0].lr, "cosine schedule");
    }
    // With a list of lrs, the one chosen on held-out training features trains the final head.
    let cfg = LinclsConfig {
        epochs: 2,
        batch: 64,
        lr: 0.0,
        momentum: 0.9,
        seed: 0,
        cached: true,
        crop_min: 0.5,
        lr_sweep: vec![1e-7, 1.0],
        feature: VitFeature::Cls,
        standardize: false,
    };
    let r = lincls(&mut model.base.backbone, &train, &test, &plain, &cfg, |_| {}).unwrap();
    assert_eq!(r.sweep.len(), 2);
    assert_eq!(r.lr, 1.0, "{:?}", r.sweep);
    assert_eq!(r.epochs[0].lr, 1.0 * 64.0 / 256.0);
    assert!(r.epochs.last().unwrap().top1 > 40.0);
    let augmented = LinclsConfig { cached: false, ..cfg };
    assert!(lincls(&mut model.base.backbone, &train, &test, &plain, &augmented, |_| {}).is_err());
}

#[test]
fn a_resumed_run_refuses_a_new_schedule() {
    let cfg = small("resume-conflict", &[]);
    let first = run(cfg.clone(), &RunOptions { stop_after_epochs: Some(1), ..quiet() }).unwrap();
    let resume = |extra: &[&str]| {
        let ck = first.checkpoint.to_str().unwrap();
        let out = cfg.out_dir.to_str().unwrap();
        let mut args = vec!["pretrain", "--resume", ck, "--out", out, "--quiet", "--threads", "1"];
        args.extend(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_mocov3")).args(args).output().unwrap()
    };
    let out = resume(&["--epochs", "5", "--set", "moco_t=0.5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("epochs: the checkpoint has 2, asked 5"), "{err}");
    assert!(err.contains("moco_t: the checkpoint has 0.2, asked 0.5"), "{err}");
    let (_, _, state) = checkpoint::load(&first.checkpoint).unwrap();
    assert_eq!(state.epoch, 1, "the refused run left the checkpoint as it was");
    // Changing only how it runs is fine, and the run finishes its 2 epochs.
    let out = resume(&["--set", "log_every=1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(checkpoint::load(&first.checkpoint).unwrap().2.epoch, 2);
}

#[test]
fn lincls_rejects_a_crop_share_outside_0_1() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mocov3"))
        .args(["lincls", "--checkpoint", "missing.safetensors", "--crop-min", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--crop-min 1.5 is not a share of the image"), "{err}");
}

#[test]
fn mid_epoch_checkpoints_keep_the_last_k() {
    let c = small("keep", &["checkpoint_every_steps=2", "keep_checkpoints=2"]);
    let s = run(c.clone(), &quiet()).unwrap();
    let mut kept: Vec<String> = std::fs::read_dir(c.out_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    kept.sort();
    // Steps 2 (mid-epoch), 3 (epoch end), 4 (mid-epoch), 6 (end): the last two stay.
    assert_eq!(kept, ["step-000000004.safetensors", "step-000000006.safetensors"]);
    let mid = checkpoint::read_state(&c.out_dir.join("checkpoints/step-000000004.safetensors")).unwrap();
    assert_eq!((mid.epoch, mid.iter, mid.step), (1, 1, 4));
    // Resumed from the mid-epoch one, the run ends where the uninterrupted one did.
    let again = small("keep-resumed", &["checkpoint_every_steps=2"]);
    let r =
        run(again, &RunOptions { resume: Some(c.out_dir.join("checkpoints/step-000000004.safetensors")), ..quiet() })
            .unwrap();
    assert_eq!(r.losses.len(), 2);
    let bits = |l: &[f32]| l.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&r.losses), bits(&s.losses[4..]));
}
