//! What the trainer does when the first layer's gradient spikes (`on_spike`, opt-in): the
//! paper's fix applied when it is needed (freeze the patch projection from then on), clip that
//! gradient, skip the step, or roll back to the last good in-memory snapshot and lower the lr.
//!
//! The trigger is a spike of the first layer the detector watches ([`super::instability`]: the
//! patch projection of a ViT, `conv1` of a ResNet), where the paper sees instability start. All
//! that an action changes (the lr scale, the frozen layer, the snapshot, the detectors' windows)
//! is [`Control`], kept in every checkpoint, so a run with actions resumes bit-exactly. Every
//! rank of a data-parallel run sees the same averaged gradients and so takes the same action.

use super::checkpoint::{self, Snapshot};
use super::instability::Watch;
use crate::moco::MoCo;
use crate::nn::Module;
use crate::optim::Optimizer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The `on_spike` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum OnSpike {
    /// Log the spike only (the default).
    #[default]
    Log,
    /// Freeze the spiking first layer (the patch projection) for the rest of the run.
    FreezePatch,
    /// Scale the first layer's gradient down to this many times its running median.
    Clip(f64),
    /// Skip the optimiser step (the momentum encoder has already moved, as every step).
    Skip,
    /// Restore the last good snapshot and multiply the lr by this factor from then on.
    Rollback(f64),
}

pub const ON_SPIKE_HELP: &str =
    "log | freeze-patch | clip:V (the first layer's gradient down to V x its running median) | \
                                 skip | rollback[:F] (restore the last good snapshot, lr x F from then on; F = 0.5)";

impl TryFrom<String> for OnSpike {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("on_spike '{s}': expected {ON_SPIKE_HELP}");
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a.trim().parse::<f64>().map_err(|_| bad())?)),
            None => (s.as_str(), None),
        };
        let a = match (name.trim(), arg) {
            ("log", None) => OnSpike::Log,
            ("freeze-patch", None) => OnSpike::FreezePatch,
            ("skip", None) => OnSpike::Skip,
            ("clip", Some(v)) if v.is_finite() && v > 0.0 => OnSpike::Clip(v),
            ("rollback", None) => OnSpike::Rollback(0.5),
            ("rollback", Some(f)) if f > 0.0 && f <= 1.0 => OnSpike::Rollback(f),
            _ => return Err(bad()),
        };
        Ok(a)
    }
}

impl From<OnSpike> for String {
    fn from(a: OnSpike) -> String {
        match a {
            OnSpike::Log => "log".into(),
            OnSpike::FreezePatch => "freeze-patch".into(),
            OnSpike::Clip(v) => format!("clip:{v}"),
            OnSpike::Skip => "skip".into(),
            OnSpike::Rollback(f) => format!("rollback:{f}"),
        }
    }
}

impl std::str::FromStr for OnSpike {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OnSpike::try_from(s.to_string())
    }
}

fn one() -> f64 {
    1.0
}

/// Everything the actions and detectors carry from step to step (saved in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// Multiplies the scheduled lr (each rollback lowers it).
    #[serde(default = "one")]
    pub lr_scale: f64,
    /// The layer frozen by `freeze-patch`, and the step it was frozen at.
    #[serde(default)]
    pub frozen: Option<(String, u64)>,
    /// The step of the rollback snapshot (its tensors are in the checkpoint), and its
    /// optimiser step count.
    #[serde(default)]
    pub snapshot: Option<(u64, u64)>,
    /// Whether the first layer spiked since the snapshot was taken (then the next one is not
    /// taken: the weights may be damaged).
    #[serde(default)]
    pub spiked_since_snapshot: bool,
    /// Actions taken so far.
    #[serde(default)]
    pub actions: u64,
    /// The detectors' state (None before the first step).
    #[serde(default)]
    pub watch: Option<Watch>,
}

impl Default for Control {
    fn default() -> Self {
        Control { lr_scale: 1.0, frozen: None, snapshot: None, spiked_since_snapshot: false, actions: 0, watch: None }
    }
}

/// The trainer's guard: the detectors, the action and its in-memory snapshot.
pub struct Guard {
    pub on_spike: OnSpike,
    /// Steps between rollback snapshots.
    pub snapshot_every: u64,
    pub watch: Watch,
    pub control: Control,
    pub snapshot: Option<Snapshot>,
}

/// What the step should do after [`Guard::after_backward`].
pub struct Decision {
    /// Run the optimiser step.
    pub update: bool,
    /// The spike, action and lag events of this step.
    pub events: Vec<Value>,
}

impl Guard {
    /// A fresh guard, or the one a checkpoint saved (its detectors keep their windows; the
    /// thresholds are this run's).
    pub fn new(
        on_spike: OnSpike,
        snapshot_every: u64,
        fresh: Watch,
        saved: Control,
        snapshot: Option<Snapshot>,
    ) -> Guard {
        let mut control = saved;
        let watch = match control.watch.take() {
            Some(mut w) => {
                w.set_thresholds_from(&fresh);
                w
            }
            None => fresh,
        };
        Guard { on_spike, snapshot_every: snapshot_every.max(1), watch, control, snapshot }
    }

    /// The state to save with a checkpoint.
    pub fn state(&self) -> Control {
        Control { watch: Some(self.watch.clone()), ..self.control.clone() }
    }

    /// Fault injection (`inject_spike`): multiply the first layer's gradient by 1000 at the
    /// given steps, to try an action. Needs one step of norms first (to know that layer).
    pub fn inject(&self, model: &mut MoCo, step: u64, steps: &[u64]) {
        if let (true, Some(layer)) = (steps.contains(&step), self.watch.first_layer()) {
            scale_layer_grads(model, layer, 1000.0);
        }
    }

    /// After the gradients are averaged: watch the per-layer norms of `step` and act on a
    /// spike of the first layer.
    pub fn after_backward(
        &mut self,
        model: &mut MoCo,
        opt: &mut Optimizer,
        step: u64,
        layers: &[(String, f64)],
    ) -> anyhow::Result<Decision> {
        let mut events = self.watch.grads(step, layers);
        let first = self.watch.first_layer().map(str::to_string);
        let spike =
            events.iter().find(|e| e["event"] == "grad_spike" && e["layer"].as_str() == first.as_deref()).cloned();
        let Some(spike) = spike else {
            return Ok(Decision { update: true, events });
        };
        self.control.spiked_since_snapshot = true;
        let layer = first.unwrap_or_default();
        let mut update = true;
        let action = match self.on_spike {
            OnSpike::Log => None,
            OnSpike::FreezePatch if self.control.frozen.is_some() || !FREEZABLE.contains(&layer.as_str()) => None,
            OnSpike::FreezePatch => {
                let positions = model.freeze_base_layer(&layer);
                opt.drop_state(&positions);
                self.control.frozen = Some((layer.clone(), step));
                // Watch the layers that still train; the next first layer is the first block.
                self.watch.forget_layers();
                Some(json!({"action": "freeze-patch", "params": positions.len()}))
            }
            OnSpike::Clip(v) => {
                let (norm, median) = (spike["norm"].as_f64().unwrap_or(0.0), spike["median"].as_f64().unwrap_or(0.0));
                let to = v * median;
                let factor = if norm > to { to / norm } else { 1.0 };
                scale_layer_grads(model, &layer, factor as f32);
                Some(json!({"action": "clip", "to": to, "factor": factor}))
            }
            OnSpike::Skip => {
                update = false;
                Some(json!({"action": "skip"}))
            }
            OnSpike::Rollback(f) => {
                update = false;
                match (&self.snapshot, self.control.snapshot) {
                    (Some(snap), Some((at, opt_steps))) => {
                        checkpoint::restore(model, opt, snap)?;
                        opt.set_steps(opt_steps);
                        self.control.lr_scale *= f;
                        Some(json!({"action": "rollback", "to_step": at, "lr_scale": self.control.lr_scale}))
                    }
                    _ => Some(json!({"action": "skip", "why": "no snapshot yet"})),
                }
            }
        };
        if let Some(mut a) = action {
            self.control.actions += 1;
            a["step"] = json!(step);
            a["event"] = json!("action");
            a["layer"] = json!(layer);
            events.push(a);
        }
        Ok(Decision { update, events })
    }

    /// After the step: take the rollback snapshot when one is due and no spike came since the
    /// last one.
    pub fn after_step(&mut self, model: &mut MoCo, opt: &mut Optimizer, step: u64) {
        if !matches!(self.on_spike, OnSpike::Rollback(_)) || !step.is_multiple_of(self.snapshot_every) {
            return;
        }
        if self.control.spiked_since_snapshot && self.snapshot.is_some() {
            self.control.spiked_since_snapshot = false;
            return;
        }
        self.control.spiked_since_snapshot = false;
        self.snapshot = Some(checkpoint::snapshot(model, opt));
        self.control.snapshot = Some((step, opt.steps()));
    }
}

/// The layers `freeze-patch` freezes: a ViT's patch projection, a ResNet's first convolution
/// (once; a run whose patch projection is already fixed has nothing to freeze).
const FREEZABLE: &[&str] = &["patch_embed", "conv1"];

/// Multiply the gradient of every trainable base-encoder parameter of `layer` by `factor`.
pub fn scale_layer_grads(model: &mut MoCo, layer: &str, factor: f32) {
    model.base.backbone.visit(&mut |p| {
        if p.trainable && crate::models::backbone::layer_of(&p.name) == layer {
            p.g.iter_mut().for_each(|g| *g *= factor);
        }
    });
}

/// The console line of an action event.
pub fn describe(e: &Value) -> String {
    let layer = e["layer"].as_str().unwrap_or("?");
    match e["action"].as_str().unwrap_or("") {
        "freeze-patch" => {
            format!("step {}: froze {layer} for the rest of the run (--on-spike freeze-patch)", e["step"])
        }
        "clip" => format!(
            "step {}: clipped {layer}'s gradient to {:.3e} (x{:.3})",
            e["step"],
            e["to"].as_f64().unwrap_or(0.0),
            e["factor"].as_f64().unwrap_or(0.0)
        ),
        "rollback" => format!(
            "step {}: rolled back to the snapshot of step {}; lr scale now {}",
            e["step"], e["to_step"], e["lr_scale"]
        ),
        "skip" => format!("step {}: skipped the update after a spike in {layer}", e["step"]),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_spike_parses_and_prints_every_action_and_refuses_the_rest() {
        for s in ["log", "freeze-patch", "clip:2", "skip", "rollback:0.5", "rollback:0.25"] {
            let a: OnSpike = s.parse().unwrap();
            assert_eq!(String::from(a), s);
        }
        assert_eq!("rollback".parse::<OnSpike>().unwrap(), OnSpike::Rollback(0.5));
        for bad in ["", "clip", "clip:0", "clip:-1", "clip:nan", "rollback:2", "rollback:0", "freeze", "skip:1"] {
            let e = bad.parse::<OnSpike>().unwrap_err();
            assert!(e.contains("freeze-patch"), "{e}");
        }
    }
}
