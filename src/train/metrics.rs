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

    pub fn write<T: Serialize>(&mut self, m: &T) -> Result<()> {
        let line = serde_json::to_string(m)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()?;
        Ok(())
    }
}
