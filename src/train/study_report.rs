//! The report of `mocov3 study` (see `crate::train::study`): `report.md` with a table per
//! experiment and figures: the kNN curves with dips marked (`knn.png`), and per run the first-
//! and last-layer gradient norms with their spikes marked (`grads.png`), with the lags between.

use super::study::{read_log, Plan, RunResult};
use crate::report::plot::{chart_marked, Canvas, Series, COLORS};
use anyhow::Result;
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What a run's log says about instability.
#[derive(Default)]
struct Events {
    /// Spikes of the first layer and of the last layers: (step, norm).
    first: Vec<(f64, f64)>,
    last: Vec<(f64, f64)>,
    lags: Vec<u64>,
    /// Dips of the kNN curve: (step, accuracy at its start), and their depths (points).
    dips: Vec<(f64, f64)>,
    depths: Vec<f64>,
    /// Instability actions taken.
    actions: usize,
}

/// The events of a run's log (`rows`), its first layer being the one the detector watches first:
/// the patch projection, or block 0 when the projection is fixed; its last block read from the
/// step lines' per-layer norms (`steps`).
fn events(rows: &[Value], steps: &[Value], fixed_patch: bool) -> Events {
    let mut e = Events::default();
    let is_first = |l: &str| l == "patch_embed" || l == "conv1" || (fixed_patch && l == "blocks.0");
    let (names, _) = layer_norms(steps);
    let top = names.iter().filter_map(|n| n.strip_prefix("blocks.")?.parse::<usize>().ok()).max();
    let top = top.map(|t| format!("blocks.{t}"));
    for r in rows {
        let step = r["step"].as_f64().unwrap_or(0.0);
        match r["event"].as_str().unwrap_or("") {
            "grad_spike" => {
                let l = r["layer"].as_str().unwrap_or("");
                let v = (step, r["norm"].as_f64().unwrap_or(0.0));
                if is_first(l) {
                    e.first.push(v);
                } else if Some(l) == top.as_deref() || l == "norm" || l.starts_with("layer4") {
                    e.last.push(v);
                }
            }
            "spike_lag" => e.lags.extend(r["lag"].as_u64()),
            "knn_dip" => e.dips.push((step, r["acc"].as_f64().unwrap_or(0.0))),
            "knn_recovered" => e.depths.extend(r["depth"].as_f64()),
            "action" => e.actions += 1,
            _ => {}
        }
    }
    e
}

/// The per-layer gradient norms of every logged step, in the network's order (patch
/// projection and tokens, blocks by index, final norm), as (names, rows of norms).
fn layer_norms(steps: &[Value]) -> (Vec<String>, Vec<(u64, Vec<f64>)>) {
    let Some(first) = steps.iter().find_map(|r| r["grad_norms"].as_object()) else {
        return (Vec::new(), Vec::new());
    };
    let key = |n: &str| match n.strip_prefix("blocks.").and_then(|i| i.parse::<usize>().ok()) {
        Some(i) => 1 + i,
        None if n == "norm" => usize::MAX,
        None => 0,
    };
    let mut names: Vec<String> = first.keys().cloned().collect();
    names.sort_by_key(|n| (key(n), n.clone()));
    let rows = steps
        .iter()
        .filter_map(|r| {
            let m = r["grad_norms"].as_object()?;
            let v: Option<Vec<f64>> = names.iter().map(|n| m.get(n)?.as_f64()).collect();
            Some((r["step"].as_u64()?, v?))
        })
        .collect();
    (names, rows)
}

/// Spikes re-detected from the logged norms at `threshold` (the window of the run), and the
/// largest ratio of the first and of the last block's norm to their running median.
struct Offline {
    first: usize,
    last: usize,
    lags: Vec<u64>,
    max_first: f64,
    max_last: f64,
}

fn offline(steps: &[Value], threshold: f64, window: usize) -> Option<Offline> {
    let (names, rows) = layer_norms(steps);
    let first = names
        .iter()
        .position(|n| n == "patch_embed")
        .or_else(|| names.iter().position(|n| n.starts_with("blocks.")))?;
    let last = names.iter().rposition(|n| n.starts_with("blocks."))?;
    let mut det = super::detect::SpikeDetector::new(names.len(), window, threshold, first, last);
    let (mut nf, mut nl) = (0, 0);
    let mut hist: [std::collections::VecDeque<f64>; 2] = Default::default();
    let (mut max_first, mut max_last) = (0.0f64, 0.0f64);
    for (step, v) in &rows {
        for s in det.observe(*step, v) {
            if s.layer == first {
                nf += 1;
            } else if s.layer == last {
                nl += 1;
            }
        }
        for (h, (i, m)) in hist.iter_mut().zip([(first, &mut max_first), (last, &mut max_last)]) {
            if h.len() >= window / 2 {
                let med = super::detect::median(h);
                if med > 0.0 {
                    *m = m.max(v[i] / med);
                }
            }
            h.push_back(v[i]);
            if h.len() > window {
                h.pop_front();
            }
        }
    }
    Some(Offline { first: nf, last: nl, lags: det.lags.iter().map(|l| l.lag).collect(), max_first, max_last })
}

fn series(rows: &[Value], key: &str, label: &str, color: usize, per_epoch: f64) -> Series {
    let points =
        rows.iter().filter_map(|r| Some((r.get("step")?.as_f64()? / per_epoch, r.get(key)?.as_f64()?))).collect();
    Series { label: label.into(), rgb: COLORS[color % COLORS.len()], points }
}

fn marks(points: &[(f64, f64)], label: &str, color: usize, per_epoch: f64) -> Series {
    Series {
        label: label.into(),
        rgb: COLORS[color % COLORS.len()],
        points: points.iter().map(|&(s, v)| (s / per_epoch, v)).collect(),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// The threshold and window of the offline re-detection.
const OFFLINE: f64 = 3.0;
const WINDOW: usize = 100;

/// Each experiment: its key, its section title, its chart's title.
const GROUPS: [(&str, &str, &str); 4] = [
    ("lr", "Learning rate (learned patch projection, sin-cos PE)", "lr sweep"),
    ("patch", "Learned against fixed random patch projection at the largest lr", "learned vs fixed patch"),
    ("batch", "Batch size (lr scaled by batch / 256)", "batch"),
    ("pe", "Position embedding", "position embedding"),
];

/// Write `report.md`, `knn.png` and `grads.png` into `out`.
pub fn write(out: &Path, results: &[RunResult], plan: &Plan, secs: f64) -> Result<PathBuf> {
    let mut logs = Vec::new();
    for r in results {
        let (ev, steps) = read_log(&out.join(&r.name)).unwrap_or_default();
        logs.push((events(&ev, &steps, r.fixed_patch), steps));
    }
    let per_epoch = |r: &RunResult| r.steps_per_epoch.max(1) as f64;
    // kNN curves, one panel per experiment, dips marked.
    let (pw, ph) = (560i64, 260i64);
    let mut c = Canvas::new(2 * pw, 2 * ph);
    for (gi, (g, _, title)) in GROUPS.iter().enumerate() {
        let (mut s, mut m) = (Vec::new(), Vec::new());
        for (i, (r, (ev, steps))) in
            results.iter().zip(&logs).filter(|(r, _)| r.groups.iter().any(|x| x == g)).enumerate()
        {
            s.push(series(steps, "knn_top1", &r.name, i, per_epoch(r)));
            if !ev.dips.is_empty() {
                m.push(marks(&ev.dips, "", i, per_epoch(r)));
            }
        }
        let at = [(gi as i64 % 2) * pw, (gi as i64 / 2) * ph, pw, ph];
        chart_marked(&mut c, at, &format!("kNN (%): {title}"), &s, &m, false);
    }
    c.save_png(&out.join("knn.png"))?;
    // Gradient norms of the first layer and the last block per run, spikes marked.
    let rows = results.len().div_ceil(2) as i64;
    let mut c = Canvas::new(2 * pw, rows.max(1) * ph);
    for (i, (r, (ev, steps))) in results.iter().zip(&logs).enumerate() {
        let first = if r.fixed_patch { "grad_norm_first_block" } else { "grad_norm_patch" };
        let s = vec![
            series(steps, first, if r.fixed_patch { "block 0" } else { "patch" }, 0, per_epoch(r)),
            series(steps, "grad_norm_last_block", "last", 1, per_epoch(r)),
        ];
        let m: Vec<Series> = [(&ev.first, 0), (&ev.last, 1)]
            .into_iter()
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, k)| marks(p, "spikes", k, per_epoch(r)))
            .collect();
        let at = [(i as i64 % 2) * pw, (i as i64 / 2) * ph, pw, ph];
        chart_marked(&mut c, at, &format!("{}: grad norm", r.name), &s, &m, true);
    }
    c.save_png(&out.join("grads.png"))?;

    let mut md = String::new();
    writeln!(md, "# MoCo v3 instability study\n")?;
    let train: f64 = results.iter().map(|r| r.train_seconds).sum();
    let score: f64 = results.iter().map(|r| r.score_seconds).sum();
    writeln!(
        md,
        "{} runs of {} epochs each ({}). The runs took {:.1} min of training and {:.1} min of scoring; this \
         invocation {:.1} min.\n",
        results.len(),
        plan.epochs,
        plan.note,
        train / 60.0,
        score / 60.0,
        secs / 60.0
    )?;
    writeln!(md, "kNN: weighted k=20, T=0.07 on frozen cls features of the test split; linear: a probe on cached,")?;
    writeln!(md, "standardised features, its lr chosen on held-out training images. Spikes: a layer's gradient norm")?;
    writeln!(md, "above the threshold times its running median; the lag runs from a spike of the first layer to the")?;
    writeln!(md, "next one of the last layers. Dips: the dense kNN monitor more than the threshold below its best.\n")?;
    writeln!(md, "![kNN curves](knn.png)\n")?;
    writeln!(md, "kNN monitor curves by epoch; crosses mark where a dip starts.\n")?;
    writeln!(md, "![gradient norms](grads.png)\n")?;
    writeln!(
        md,
        "Gradient norms (log scale) by epoch of the first layer (the patch projection, or block 0 when it is"
    )?;
    writeln!(md, "fixed) and of the last block; crosses mark detected spikes.\n")?;
    let header = "| run | lr | batch | patch proj. | PE | kNN | linear | first-layer spikes | last-layer spikes | lags (steps) | \
                  dips (depth) | train min | status |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";
    let row = |r: &RunResult, ev: &Events| {
        let lags = if ev.lags.is_empty() {
            "-".into()
        } else {
            ev.lags.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ")
        };
        let depths: Vec<String> = ev.depths.iter().map(|d| format!("{d:.1}")).collect();
        let open = ev.dips.len().saturating_sub(depths.len());
        let depths = depths.into_iter().chain((0..open).map(|_| "open".to_string())).collect::<Vec<_>>();
        let dips = if ev.dips.is_empty() { "0".into() } else { format!("{} ({})", ev.dips.len(), depths.join(", ")) };
        format!(
            "| {} | {:.2e} | {} | {} | {} | {} | {} | {} | {} | {lags} | {dips} | {:.1} | {} |",
            r.name,
            r.lr,
            r.batch,
            if r.fixed_patch { "fixed random" } else { "learned" },
            r.pos_embed,
            pct(r.knn_top1),
            pct(r.linear_top1),
            ev.first.len(),
            ev.last.len(),
            r.train_seconds / 60.0,
            r.status.split(':').next().unwrap_or("")
        )
    };
    writeln!(md, "## All runs\n\n{header}")?;
    for (r, (ev, _)) in results.iter().zip(&logs) {
        writeln!(md, "{}", row(r, ev))?;
    }
    for (g, title, _) in GROUPS {
        writeln!(md, "\n## {title}\n\n{header}")?;
        for (r, (ev, _)) in results.iter().zip(&logs).filter(|(r, _)| r.groups.iter().any(|x| x == g)) {
            writeln!(md, "{}", row(r, ev))?;
        }
        if g == "pe" {
            writeln!(
                md,
                "\nThe paper (ViT-B/16, 300 epochs, ImageNet, linear probe): sin-cos 76.5, learned 76.1, none 74.9."
            )?;
        }
    }
    writeln!(md, "\n## Spikes at a lower threshold\n")?;
    writeln!(
        md,
        "Re-detected from every step's logged per-layer norms at {OFFLINE}x the running median ({WINDOW}-step"
    )?;
    writeln!(md, "window), and the largest ratio of each layer's norm to its running median over the run.\n")?;
    writeln!(md, "| run | first layer: spikes | last block: spikes | lags (steps) | first layer: max ratio | last block: max ratio |")?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for (r, (_, steps)) in results.iter().zip(&logs) {
        let Some(o) = offline(steps, OFFLINE, WINDOW) else { continue };
        let lags = if o.lags.is_empty() {
            "-".into()
        } else {
            o.lags.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ")
        };
        writeln!(md, "| {} | {} | {} | {lags} | {:.1} | {:.1} |", r.name, o.first, o.last, o.max_first, o.max_last)?;
    }
    for r in results.iter().filter(|r| r.status != "done") {
        writeln!(md, "\n- {}: {}", r.name, r.status)?;
    }
    let path = out.join("report.md");
    std::fs::write(&path, md)?;
    Ok(path)
}
