//! Detectors of the instability the paper describes, on the series the trainer logs: gradient
//! spikes (a layer's gradient norm far above its own running median), the lag from a spike of
//! the first layer (the patch projection) to the next spike of the last layers, and accuracy
//! dips on the dense kNN curve (a drop from the running best that later recovers, not a
//! divergence).

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A layer's gradient norm at `ratio` times its running median.
#[derive(Clone, Debug, PartialEq)]
pub struct Spike {
    pub step: u64,
    /// Index of the layer in the order the norms are given.
    pub layer: usize,
    pub value: f64,
    pub median: f64,
    pub ratio: f64,
}

/// A first-layer spike followed by a last-layer spike `lag` steps later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lag {
    pub first_step: u64,
    pub last_step: u64,
    pub lag: u64,
}

/// The detectors keep their whole state in plain values (serialised into checkpoints, so a
/// resumed run sees the spikes and dips an uninterrupted one would).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpikeDetector {
    /// Values of the running median (per layer).
    pub window: usize,
    /// A spike is a norm above `threshold` × the running median.
    pub threshold: f64,
    /// The layer whose spikes start a lag (the patch projection), and the first of the layers
    /// whose spikes end it (the last blocks: indices ≥ `last_from`).
    pub first: usize,
    pub last_from: usize,
    history: Vec<VecDeque<f64>>,
    pending_first: Option<u64>,
    pub lags: Vec<Lag>,
}

impl SpikeDetector {
    pub fn new(layers: usize, window: usize, threshold: f64, first: usize, last_from: usize) -> SpikeDetector {
        SpikeDetector {
            window: window.max(3),
            threshold,
            first,
            last_from,
            history: vec![VecDeque::new(); layers],
            pending_first: None,
            lags: Vec::new(),
        }
    }

    /// Another window length and threshold (a resumed run's); the history keeps its newest values.
    pub fn set_window_and_threshold(&mut self, window: usize, threshold: f64) {
        self.window = window.max(3);
        self.threshold = threshold;
        for h in &mut self.history {
            while h.len() > self.window {
                h.pop_front();
            }
        }
    }

    /// Feed one step's norms (one per layer); returns the spikes found at this step. A layer is
    /// judged once its window is half full; a spike's value does not enter its own median
    /// (so a run of spikes stays visible), but every other value does.
    pub fn observe(&mut self, step: u64, norms: &[f64]) -> Vec<Spike> {
        let mut found = Vec::new();
        for (layer, (&v, h)) in norms.iter().zip(self.history.iter_mut()).enumerate() {
            if !v.is_finite() {
                continue;
            }
            let ready = h.len() >= self.window / 2;
            let median = if ready { median(h) } else { f64::NAN };
            if ready && median > 0.0 && v > self.threshold * median {
                found.push(Spike { step, layer, value: v, median, ratio: v / median });
                continue;
            }
            h.push_back(v);
            if h.len() > self.window {
                h.pop_front();
            }
        }
        if found.iter().any(|s| s.layer == self.first) && self.pending_first.is_none() {
            self.pending_first = Some(step);
        }
        if let Some(first) = self.pending_first {
            if found.iter().any(|s| s.layer >= self.last_from && s.layer != self.first) && step > first {
                self.lags.push(Lag { first_step: first, last_step: step, lag: step - first });
                self.pending_first = None;
            }
        }
        found
    }
}

/// The median of a window (the mean of the two middle values of an even count).
pub fn median(h: &VecDeque<f64>) -> f64 {
    let mut v: Vec<f64> = h.iter().copied().collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A drop of the kNN accuracy of more than the threshold below its running best.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dip {
    pub start_step: u64,
    /// The step of the lowest point, and its accuracy.
    pub low_step: u64,
    pub low: f64,
    /// The running best before the dip.
    pub best: f64,
    /// The step at which the curve came back within half the threshold of `best`; None while
    /// it has not (then it is a drop, not yet a dip).
    pub recovered_step: Option<u64>,
}

impl Dip {
    pub fn depth(&self) -> f64 {
        self.best - self.low
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DipDetector {
    /// Points (of accuracy, %) below the running best that start a dip.
    pub threshold: f64,
    /// The running best (None before the first point).
    best: Option<f64>,
    open: Option<Dip>,
    pub dips: Vec<Dip>,
}

/// What one new point of the curve did.
#[derive(Clone, Debug, PartialEq)]
pub enum DipEvent {
    Started(Dip),
    Recovered(Dip),
}

impl DipDetector {
    pub fn new(threshold: f64) -> DipDetector {
        DipDetector { threshold, best: None, open: None, dips: Vec::new() }
    }

    pub fn observe(&mut self, step: u64, acc: f64) -> Option<DipEvent> {
        if !acc.is_finite() {
            return None;
        }
        if let Some(d) = &mut self.open {
            if acc < d.low {
                (d.low, d.low_step) = (acc, step);
            }
            if acc >= d.best - self.threshold / 2.0 {
                d.recovered_step = Some(step);
                let done = self.open.take().unwrap_or_else(|| unreachable!());
                self.best = Some(self.best.map_or(acc, |b| b.max(acc)));
                self.dips.push(done.clone());
                return Some(DipEvent::Recovered(done));
            }
            return None;
        }
        match self.best {
            Some(best) if acc < best - self.threshold => {
                let d = Dip { start_step: step, low_step: step, low: acc, best, recovered_step: None };
                self.open = Some(d.clone());
                return Some(DipEvent::Started(d));
            }
            _ => self.best = Some(self.best.map_or(acc, |b| b.max(acc))),
        }
        None
    }

    /// Every dip, the one still open last (unrecovered).
    pub fn all(&self) -> Vec<Dip> {
        self.dips.iter().cloned().chain(self.open.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth decaying series with a little deterministic noise, per layer.
    fn smooth(step: u64, layer: usize) -> f64 {
        let noise = ((step * 7919 + layer as u64 * 104729) % 100) as f64 / 1000.0;
        (1.0 + layer as f64) * (1.0 + 1.0 / (1.0 + step as f64 / 50.0)) * (1.0 + noise)
    }

    #[test]
    fn planted_spikes_are_found_at_their_step_and_layer_with_the_lag() {
        let mut d = SpikeDetector::new(4, 50, 3.0, 0, 3);
        let mut found = Vec::new();
        for step in 0..400u64 {
            let mut norms: Vec<f64> = (0..4).map(|l| smooth(step, l)).collect();
            if step == 200 {
                norms[0] *= 10.0; // the patch projection first
            }
            if step == 207 {
                norms[3] *= 8.0; // the last layer 7 steps later
            }
            found.extend(d.observe(step, &norms));
        }
        let at: Vec<(u64, usize)> = found.iter().map(|s| (s.step, s.layer)).collect();
        assert_eq!(at, vec![(200, 0), (207, 3)]);
        assert_eq!(d.lags, vec![Lag { first_step: 200, last_step: 207, lag: 7 }]);
        assert!(found[0].ratio > 8.0);
    }

    #[test]
    fn a_smooth_series_has_no_spikes_and_no_dips() {
        let mut s = SpikeDetector::new(3, 50, 3.0, 0, 2);
        let mut k = DipDetector::new(2.0);
        for step in 0..1000u64 {
            let norms: Vec<f64> = (0..3).map(|l| smooth(step, l)).collect();
            assert!(s.observe(step, &norms).is_empty(), "step {step}");
            let acc = 90.0 * (1.0 - (-(step as f64) / 200.0).exp()) + smooth(step, 0) * 0.3;
            assert_eq!(k.observe(step, acc), None, "step {step}");
        }
        assert!(k.all().is_empty());
    }

    #[test]
    fn a_planted_dip_is_found_with_its_depth_and_recovery() {
        let mut k = DipDetector::new(2.0);
        let curve = |s: u64| -> f64 {
            let base = 80.0 + s as f64 / 100.0;
            if (300..340).contains(&s) {
                base - 6.0 * (1.0 - ((s as f64 - 320.0) / 20.0).abs())
            } else {
                base
            }
        };
        let events: Vec<(u64, DipEvent)> = (0..500u64).filter_map(|s| k.observe(s, curve(s)).map(|e| (s, e))).collect();
        assert_eq!(events.len(), 2, "{events:?}");
        let dips = k.all();
        assert_eq!(dips.len(), 1);
        let d = &dips[0];
        assert!((307..=310).contains(&d.start_step), "{d:?}");
        assert_eq!(d.low_step, 320);
        assert!((d.depth() - 6.0).abs() < 0.3, "{d:?}");
        assert!(d.recovered_step.is_some_and(|r| (330..=338).contains(&r)), "{d:?}");
        // A drop that never comes back stays open: a divergence, not a dip.
        let mut k = DipDetector::new(2.0);
        for s in 0..100u64 {
            k.observe(s, if s < 50 { 80.0 } else { 40.0 });
        }
        assert_eq!(k.all().len(), 1);
        assert!(k.all()[0].recovered_step.is_none());
    }
}
