//! Metrics as JSON lines (one object per logged step), appended and flushed as they come.

use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

pub struct MetricsLog {
    file: std::fs::File,
}

#[derive(Serialize, Clone, Debug)]
pub struct StepMetrics {
    pub step: u64,
    pub epoch: f64,
    pub loss: f32,
    pub lr: f64,
    pub m: f64,
    /// L2 norms of the gradients of the patch projection (0 when frozen), the first and the last
    /// transformer block: where the paper sees instability appear first.
    pub grad_norm_patch: f64,
    pub grad_norm_first_block: f64,
    pub grad_norm_last_block: f64,
    pub img_per_s: f64,
    /// kNN top-1 (%) of the held-out subset against the queue, on the steps the monitor runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_top1: Option<f64>,
    /// L2 norm of the gradient of every layer (`blocks.N`, `patch_embed`, ...), in order.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_map")]
    pub grad_norms: Vec<(String, f64)>,
}

/// (name, value) pairs as a JSON object, in their order.
fn as_map<S: serde::Serializer>(v: &[(String, f64)], s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, x) in v {
        m.serialize_entry(k, x)?;
    }
    m.end()
}

impl MetricsLog {
    pub fn open(path: &Path, truncate: bool) -> Result<MetricsLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(path)
            .with_context(|| format!("cannot open metrics file {}", path.display()))?;
        Ok(MetricsLog { file })
    }

    /// Reopen the log of a run resumed from the checkpoint written after `step`: the lines of
    /// steps past it (logged by the interrupted run after its last checkpoint, and logged again
    /// by the resumed one) are dropped, as are lines superseded by an earlier resume and a line
    /// cut short by a crash, so the log reads as one run. Rewritten through a temporary file.
    pub fn resume(path: &Path, step: u64) -> Result<MetricsLog> {
        if path.exists() {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let tmp = path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, kept_lines(&text, step))
                .and_then(|_| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot rewrite metrics file {}", path.display()))?;
        }
        Self::open(path, false)
    }

    pub fn write<T: Serialize>(&mut self, m: &T) -> Result<()> {
        let line = serde_json::to_string(m)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()?;
        Ok(())
    }
}

/// The lines of a log that a run resumed after `step` keeps: steps never go back (a line below
/// the one before starts a restarted segment, which replaces the lines it overlaps; so does a
/// line of a kind its step already holds: one metrics line per step, one of each event), none
/// may lie past `step`, and lines that do not parse are dropped. A step may hold its metrics
/// line and several event lines.
fn kept_lines(text: &str, step: u64) -> String {
    let mut kept: Vec<(u64, String, &str)> = Vec::new();
    for line in text.lines() {
        let Some(v) = serde_json::from_str::<serde_json::Value>(line).ok() else {
            continue;
        };
        let Some(s) = v.get("step").and_then(|s| s.as_u64()) else {
            continue;
        };
        let kind = format!("{}/{}/{}", v["event"], v["layer"], v["action"]);
        while kept.last().is_some_and(|(k, _, _)| *k > s) {
            kept.pop();
        }
        if kept.iter().rev().take_while(|(k, _, _)| *k == s).any(|(_, kd, _)| *kd == kind) {
            while kept.last().is_some_and(|(k, _, _)| *k == s) {
                kept.pop();
            }
        }
        kept.push((s, kind, line));
    }
    kept.into_iter().filter(|&(s, _, _)| s <= step).map(|(_, _, l)| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_log_drops_what_came_after_the_checkpoint() {
        #[derive(Serialize)]
        struct Line {
            step: u64,
            loss: f32,
        }
        let line = |step: u64, loss: f32| serde_json::to_string(&Line { step, loss }).unwrap() + "\n";
        // Steps 1..=8 of a first run, a restart from step 4 that got to 6, and a line cut short.
        let mut text: String = (1..=8).map(|s| line(s, 1.0)).collect();
        text += &(4..=6).map(|s| line(s, 2.0)).collect::<String>();
        text += "{\"step\":7,\"lo";
        let want: String = (1..=3).map(|s| line(s, 1.0)).chain((4..=5).map(|s| line(s, 2.0))).collect();
        assert_eq!(kept_lines(&text, 5), want);
        assert_eq!(kept_lines(&text, 100), want + &line(6, 2.0));
        // A step's metrics line and its event lines all stay; a repeat of the step's metrics
        // line (a restart from it) replaces them.
        let ev = |step: u64, e: &str| format!("{{\"step\":{step},\"event\":\"{e}\"}}\n");
        let events = line(1, 1.0) + &line(2, 1.0) + &ev(2, "grad_spike") + &ev(2, "action") + &line(3, 1.0);
        assert_eq!(kept_lines(&events, 3), events);
        let restarted = events.clone() + &line(2, 2.0) + &ev(2, "grad_spike");
        assert_eq!(kept_lines(&restarted, 3), line(1, 1.0) + &line(2, 2.0) + &ev(2, "grad_spike"));

        let dir = std::env::temp_dir().join(format!("mocov3-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        std::fs::write(&path, &text).unwrap();
        let mut log = MetricsLog::resume(&path, 2).unwrap();
        log.write(&Line { step: 3, loss: 3.0 }).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line(1, 1.0) + &line(2, 1.0) + &line(3, 3.0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
