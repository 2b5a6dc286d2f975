//! `mocov3 quickstart`, the README's first command, end to end on a small Fashion-MNIST-shaped
//! dataset the test writes (IDX files): pre-training, kNN and linear probes of the model (cls,
//! and cls + mean patch token) and of raw pixels, the report, the summary; then the check that
//! refuses to score a run directory holding another configuration.

use mocov3::data::idx::encode;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocov3-quickstart-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Ten classes of 28×28 grey images: class k has a bright bar at rows 2k+2..2k+5 over noise.
fn write_split(dir: &Path, prefix: &str, n: usize, seed: u64) {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let (mut px, mut labels) = (Vec::with_capacity(n * 784), Vec::with_capacity(n));
    for i in 0..n {
        let k = i % 10;
        labels.push(k as u8);
        for r in 0..28 {
            for _ in 0..28 {
                let bar = (2 * k + 2..2 * k + 5).contains(&r);
                px.push(if bar { 180 + (next() % 60) as u8 } else { (next() % 50) as u8 });
            }
        }
    }
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), encode(&[n, 28, 28], &px)).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), encode(&[n], &labels)).unwrap();
}

fn quickstart(data: &Path, out: &Path, epochs: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mocov3"))
        .args(["quickstart", "--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--epochs", epochs, "--lincls-epochs", "20", "--lincls-lr", "0.3,3", "--threads", "1"])
        .output()
        .unwrap()
}

#[test]
fn quickstart_pretrains_scores_and_summarises() {
    let dir = tmp("run");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_split(&data, "train", 600, 1);
    write_split(&data, "t10k", 200, 2);
    let out = dir.join("run");
    let r = quickstart(&data, &out, "4");
    let (stdout, stderr) = (String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));
    assert!(r.status.success(), "{stderr}");
    assert!(stdout.contains("ViT (4 epochs)") && stdout.contains("weighted kNN (k 20, T 0.07)"), "{stdout}");
    assert!(stdout.contains("the same, standardised features"), "{stdout}");
    assert!(stdout.contains("cls + mean patch token (DINO's probe, 256-d)"), "{stdout}");
    for f in ["checkpoint.safetensors", "metrics.jsonl", "report.png", "quickstart.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quickstart.json")).unwrap()).unwrap();
    assert_eq!(s["epochs"], 4);
    let score = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {s}"));
    for k in ["knn_top1", "knn_top1_cls_avg", "linear_top1_best", "linear_top1_cls_avg_last", "linear_top1_pixels_best"]
    {
        assert!((0.0..=100.0).contains(&score(k)), "{k}: {s}");
    }
    // The bars are plain in the pixels, and in the features of the barely trained model (8
    // steps; chance is 10%). After so few steps the conv-stem ViT's features differ little from
    // image to image (each dimension varies by a few percent of its size): plain to the cosine
    // kNN, and to the linear probe once it standardises each dimension (100% here; about 60%
    // when it read the L2-normalised features as they are, which 20 epochs barely move along).
    for k in [
        "knn_top1",
        "knn_top1_cls_avg",
        "knn_top1_pixels",
        "knn_top1_standardized",
        "knn_top1_cls_avg_standardized",
        "knn_top1_pixels_standardized",
        "linear_top1_pixels_best",
        "linear_top1_best",
        "linear_top1_cls_avg_best",
    ] {
        assert!(score(k) > 90.0, "{k}: {s}");
    }
    assert!([0.3, 3.0].contains(&score("linear_lr")) && [0.3, 3.0].contains(&score("linear_lr_cls_avg")), "{s}");
    assert_eq!(s["linear_standardized"], true);
    assert!(score("pretrain_seconds") > 0.0, "{s}");
    // The same command on the finished run scores it again without pre-training.
    let r = quickstart(&data, &out, "4");
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success() && stdout.contains("no pre-training"), "{stdout}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quickstart.json")).unwrap()).unwrap();
    assert!(again["pretrain_seconds"].is_null(), "{again}");
    assert_eq!(again["knn_top1"], s["knn_top1"]);
    // The same directory with another schedule is refused, and the finished run is kept.
    let before = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let r = quickstart(&data, &out, "3");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && stderr.contains("another configuration") && stderr.contains("epochs"), "{stderr}");
    assert_eq!(std::fs::read(out.join("checkpoint.safetensors")).unwrap(), before);
    let _ = std::fs::remove_dir_all(&dir);
}
