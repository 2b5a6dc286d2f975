//! `mocov3 study` end to end on a tiny synthetic budget: every run trains and is scored, the
//! report holds each run with its spikes (one injected into each learned patch projection) and
//! the figures, and a second invocation reuses the finished runs and redoes only a missing one.

use mocov3::train::config::{merge_sets, preset};
use mocov3::train::study::{run, StudyOptions};

#[test]
fn the_study_runs_reports_and_reuses_its_runs() {
    let out = std::env::temp_dir().join(format!("mocov3-study-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let sets: Vec<String> = [
        "max_steps_per_epoch=6",
        "batch_size=16",
        "threads=1",
        "knn_every=3",
        "knn_eval=128",
        "spike_window=6",
        "inject_spike=[5]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let base = merge_sets(&preset("tiny-synthetic").unwrap(), &sets).unwrap();
    let opts = StudyOptions {
        out: out.clone(),
        base,
        budget: None,
        epochs: Some(1),
        lincls_epochs: 2,
        quiet: true,
        report_only: false,
    };
    let report = run(&opts).unwrap();
    let md = std::fs::read_to_string(&report).unwrap();
    let rows: Vec<&str> =
        md.lines().filter(|l| l.starts_with("| lr-") || l.starts_with("| pe-") || l.starts_with("| batch-")).collect();
    // 7 runs in the table of all runs (and again in their experiments' tables).
    for name in ["lr-x0.25", "lr-x1", "lr-x4", "lr-x4-fixed-patch", "batch-x4", "pe-learned", "pe-none"] {
        let row = rows.iter().find(|r| r.starts_with(&format!("| {name} |"))).unwrap_or_else(|| panic!("{name}: {md}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // kNN and linear are scored percentages.
        for c in [cells[6], cells[7]] {
            let v: f64 = c.parse().unwrap_or_else(|_| panic!("{name}: {row}"));
            assert!((0.0..=100.0).contains(&v), "{row}");
        }
        // The injected spike is counted in each run's first layer (block 0 when the patch
        // projection is fixed), not in its last block.
        let (first, last): (usize, usize) = (cells[8].parse().unwrap(), cells[9].parse().unwrap());
        assert!(first >= 1 && last == 0, "{row}");
        assert!(row.ends_with("| done |"), "{row}");
    }
    assert!(md.contains("sin-cos 76.5, learned 76.1, none 74.9"));
    for png in ["knn.png", "grads.png"] {
        assert!(std::fs::metadata(out.join(png)).unwrap().len() > 1000, "{png}");
    }
    // Again: every run reused (its checkpoint untouched), one whose result was lost redone.
    let ckpt = out.join("lr-x1/checkpoint.safetensors");
    let before = std::fs::metadata(&ckpt).unwrap().modified().unwrap();
    std::fs::remove_file(out.join("pe-none/result.json")).unwrap();
    run(&opts).unwrap();
    assert_eq!(std::fs::metadata(&ckpt).unwrap().modified().unwrap(), before);
    assert!(out.join("pe-none/result.json").is_file());
    let _ = std::fs::remove_dir_all(&out);
}
