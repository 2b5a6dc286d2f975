//! The trainer's watch on instability: every step's per-layer gradient norms go to the spike
//! detector, every kNN monitor point to the dip detector ([`super::detect`]); what they find
//! becomes event lines in `metrics.jsonl` (`{"step", "event": "grad_spike" | "spike_lag" |
//! "knn_dip" | "knn_recovered", ...}`), TensorBoard scalars under `events/` and console lines.
//! The detectors' state travels in checkpoints ([`super::actions::Control`]), so a resumed run
//! finds the events an uninterrupted one would (the kNN curve aside: the monitor's feature queue
//! refills after a resume).

use super::detect::{DipDetector, DipEvent, SpikeDetector};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    spike_threshold: f64,
    spike_window: usize,
    spikes: Option<(SpikeDetector, Vec<String>)>,
    dips: Option<DipDetector>,
}

impl Watch {
    /// A threshold of 0 turns that detector off.
    pub fn new(spike_threshold: f64, spike_window: usize, dip_threshold: f64) -> Watch {
        Watch {
            spike_threshold,
            spike_window,
            spikes: None,
            dips: (dip_threshold > 0.0).then(|| DipDetector::new(dip_threshold)),
        }
    }

    /// This run's thresholds on a saved watch (they may change on resume; the windows stay).
    pub fn set_thresholds_from(&mut self, fresh: &Watch) {
        (self.spike_threshold, self.spike_window) = (fresh.spike_threshold, fresh.spike_window);
        if let Some((det, _)) = &mut self.spikes {
            det.set_window_and_threshold(fresh.spike_window, fresh.spike_threshold);
        }
        match (&mut self.dips, &fresh.dips) {
            (Some(d), Some(f)) => d.threshold = f.threshold,
            (d, f) => *d = f.clone(),
        }
    }

    /// The name of the layer whose spikes start a lag (and trigger actions), once known.
    pub fn first_layer(&self) -> Option<&str> {
        self.spikes.as_ref().map(|(d, names)| names[d.first].as_str())
    }

    /// Start the spike detector afresh (the set of layers changed: one was frozen).
    pub fn forget_layers(&mut self) {
        self.spikes = None;
    }

    /// One step's per-layer gradient norms (name, norm), in the network's order: the events
    /// they raise. The first layer is the patch projection (`patch_embed`, a ResNet's `conv1`)
    /// or, when it is frozen, the first block; the last layers are the last block and after.
    pub fn grads(&mut self, step: u64, norms: &[(String, f64)]) -> Vec<Value> {
        if self.spike_threshold <= 0.0 || norms.is_empty() {
            return Vec::new();
        }
        let (thr, window) = (self.spike_threshold, self.spike_window);
        let same =
            |names: &Vec<String>| names.len() == norms.len() && names.iter().zip(norms).all(|(a, (b, _))| a == b);
        if self.spikes.as_ref().is_some_and(|(_, names)| !same(names)) {
            // Another set of layers (one stopped training): the windows start again.
            self.spikes = None;
        }
        let (det, names) = self.spikes.get_or_insert_with(|| {
            let names: Vec<String> = norms.iter().map(|(n, _)| n.clone()).collect();
            let is_block = |n: &String| n.starts_with("blocks.") || n.starts_with("layer");
            let first = names
                .iter()
                .position(|n| n == "patch_embed" || n == "conv1")
                .or_else(|| names.iter().position(is_block))
                .unwrap_or(0);
            let last = names.iter().rposition(is_block).unwrap_or(names.len() - 1);
            (SpikeDetector::new(names.len(), window, thr, first, last), names)
        });
        let values: Vec<f64> = norms.iter().map(|(_, v)| *v).collect();
        let lags = det.lags.len();
        let mut events: Vec<Value> = det
            .observe(step, &values)
            .into_iter()
            .map(|s| {
                json!({"step": step, "event": "grad_spike", "layer": names[s.layer], "norm": s.value,
                       "median": s.median, "ratio": s.ratio})
            })
            .collect();
        if let Some(l) = det.lags.get(lags) {
            events.push(json!({"step": step, "event": "spike_lag", "first_step": l.first_step,
                               "first_layer": names[det.first], "lag": l.lag}));
        }
        events
    }

    /// One kNN monitor point (top-1, %): the event it raises, if any.
    pub fn knn(&mut self, step: u64, acc: f64) -> Option<Value> {
        match self.dips.as_mut()?.observe(step, acc)? {
            DipEvent::Started(d) => Some(json!({"step": step, "event": "knn_dip", "best": d.best, "acc": acc})),
            DipEvent::Recovered(d) => Some(json!({"step": step, "event": "knn_recovered", "start_step": d.start_step,
                                                  "low_step": d.low_step, "depth": d.depth()})),
        }
    }
}

/// The console line of an event.
pub fn describe(e: &Value) -> String {
    let f = |k: &str| e[k].as_f64().unwrap_or(f64::NAN);
    match e["event"].as_str().unwrap_or("") {
        "grad_spike" => format!(
            "step {}: gradient spike in {} ({:.3e}, {:.1}x its running median)",
            e["step"],
            e["layer"].as_str().unwrap_or("?"),
            f("norm"),
            f("ratio")
        ),
        "spike_lag" => format!(
            "step {}: the last layers spiked {} steps after {} (step {})",
            e["step"],
            e["lag"],
            e["first_layer"].as_str().unwrap_or("?"),
            e["first_step"]
        ),
        "knn_dip" => format!("step {}: kNN dip, {:.2}% against a best of {:.2}%", e["step"], f("acc"), f("best")),
        "knn_recovered" => {
            format!(
                "step {}: kNN recovered from a {:.2}-point dip (lowest at step {})",
                e["step"],
                f("depth"),
                e["low_step"]
            )
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_in_the_patch_projection_then_the_last_block_gives_events_and_the_lag() {
        let mut w = Watch::new(4.0, 20, 2.0);
        let names = ["cls_token", "patch_embed", "blocks.0", "blocks.1", "norm"];
        let mut events = Vec::new();
        for step in 1..=100u64 {
            let mut v: Vec<(String, f64)> =
                names.iter().map(|n| (n.to_string(), 1.0 + (step % 3) as f64 * 0.01)).collect();
            if step == 60 {
                v[1].1 = 20.0;
            }
            if step == 64 {
                v[3].1 = 9.0;
            }
            events.extend(w.grads(step, &v));
        }
        let kinds: Vec<(&str, u64)> =
            events.iter().map(|e| (e["event"].as_str().unwrap(), e["step"].as_u64().unwrap())).collect();
        assert_eq!(kinds, vec![("grad_spike", 60), ("grad_spike", 64), ("spike_lag", 64)]);
        assert_eq!(events[2]["lag"], 4);
        assert!(describe(&events[0]).contains("patch_embed"));
        assert_eq!(w.knn(1, 80.0), None);
        assert_eq!(w.knn(2, 70.0).unwrap()["event"], "knn_dip");
        assert_eq!(w.knn(3, 79.5).unwrap()["event"], "knn_recovered");
        // Off: nothing.
        assert!(Watch::new(0.0, 20, 0.0).grads(1, &[("x".into(), 1e9)]).is_empty());
    }
}
