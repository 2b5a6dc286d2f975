//! `mocov3 report RUN_DIR`: the curves of a run (loss, learning rate, momentum, kNN accuracy,
//! gradient norms of the patch projection, first and last block, throughput, and the linear
//! probe when present) rendered as one PNG in the run directory.

pub mod attention;
pub mod font;
pub mod plot;
pub mod preview;

use anyhow::{bail, Context, Result};
use plot::{chart, Canvas, Series, COLORS};
use std::path::{Path, PathBuf};

fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}: line {} is not valid JSON", path.display(), i + 1))
        })
        .collect()
}

fn series(rows: &[serde_json::Value], x: &str, key: &str, label: &str, color: usize) -> Series {
    let points = rows.iter().filter_map(|r| Some((r.get(x)?.as_f64()?, r.get(key)?.as_f64()?))).collect();
    Series { label: label.into(), rgb: COLORS[color % COLORS.len()], points }
}

/// Render `report.png` into `run_dir` from its `metrics.jsonl` (and `lincls.jsonl` if present).
pub fn render(run_dir: &Path) -> Result<PathBuf> {
    let metrics = run_dir.join("metrics.jsonl");
    if !metrics.is_file() {
        bail!("{} not found: give the --out folder of a `mocov3 pretrain` run", metrics.display());
    }
    let rows = read_jsonl(&metrics)?;
    if rows.is_empty() {
        bail!("{} is empty: the run has not logged a step yet", metrics.display());
    }
    let lincls_path = run_dir.join("lincls.jsonl");
    let lincls = if lincls_path.is_file() { read_jsonl(&lincls_path)? } else { Vec::new() };
    let (pw, ph) = (560i64, 260i64);
    let panels = if lincls.is_empty() { 6 } else { 8 };
    let mut c = Canvas::new(2 * pw, (panels / 2) * ph);
    let at = |i: i64| ((i % 2) * pw, (i / 2) * ph);
    let charts: Vec<(&str, Vec<Series>, bool)> = vec![
        ("loss", vec![series(&rows, "step", "loss", "loss", 0)], false),
        ("knn top-1 (%) of the monitor", vec![series(&rows, "step", "knn_top1", "knn", 1)], false),
        ("learning rate", vec![series(&rows, "step", "lr", "lr", 0)], false),
        ("momentum m", vec![series(&rows, "step", "m", "m", 0)], false),
        (
            "gradient norms (log)",
            vec![
                series(&rows, "step", "grad_norm_patch", "patch", 0),
                series(&rows, "step", "grad_norm_first_block", "first", 1),
                series(&rows, "step", "grad_norm_last_block", "last", 2),
            ],
            true,
        ),
        ("images per second", vec![series(&rows, "step", "img_per_s", "img/s", 0)], false),
    ];
    for (i, (title, s, log)) in charts.iter().enumerate() {
        let (x, y) = at(i as i64);
        chart(&mut c, [x, y, pw, ph], title, s, *log);
    }
    if !lincls.is_empty() {
        let (x, y) = at(6);
        let s = vec![series(&lincls, "epoch", "top1", "top1", 0), series(&lincls, "epoch", "top5", "top5", 1)];
        chart(&mut c, [x, y, pw, ph], "linear probe accuracy (%) by epoch", &s, false);
        let (x, y) = at(7);
        let loss = [series(&lincls, "epoch", "train_loss", "loss", 0)];
        chart(&mut c, [x, y, pw, ph], "linear probe train loss", &loss, false);
    }
    let out = run_dir.join("report.png");
    c.save_png(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_curves_and_rejects_bad_input() {
        let dir = std::env::temp_dir().join(format!("mocov3-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let e = render(&dir).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl"), "{e}");
        let mut text = String::new();
        for s in 1..50 {
            text += &format!(
                "{{\"step\":{s},\"loss\":{},\"lr\":0.001,\"m\":0.99,\"grad_norm_patch\":0.5,\"grad_norm_first_block\":1.0,\"grad_norm_last_block\":0.1,\"img_per_s\":100.0}}\n",
                5.0 - s as f64 * 0.05
            );
        }
        std::fs::write(dir.join("metrics.jsonl"), &text).unwrap();
        let out = render(&dir).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let dec = png::Decoder::new(std::fs::File::open(&out).unwrap());
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (1120, 780));
        // The loss line is drawn in the first colour somewhere in the first panel.
        let blue = COLORS[0];
        let found = (0..260).any(|y| (0..560).any(|x| buf[((y * 1120 + x) * 3) as usize..][..3] == blue));
        assert!(found, "no curve pixels");
        std::fs::write(dir.join("metrics.jsonl"), "{not json\n").unwrap();
        let e = format!("{:#}", render(&dir).unwrap_err());
        assert!(e.contains("line 1"), "{e}");
    }
}
