//! Optimisers and schedules: AdamW (the ViT recipes) and LARS (the ResNet recipes) behind one
//! [`Optimizer`], so the training loop and checkpoints treat them alike.

pub mod adamw;
pub mod lars;
pub mod schedule;

pub use adamw::AdamW;
pub use lars::Lars;

use crate::nn::Param;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adamw,
    Lars,
}

#[derive(Clone, Debug)]
pub enum Optimizer {
    AdamW(AdamW),
    Lars(Lars),
}

impl Optimizer {
    /// `exclude_norm_bias` applies to AdamW only (LARS never decays 1-d parameters).
    pub fn new(kind: OptimizerKind, weight_decay: f64, exclude_norm_bias: bool) -> Optimizer {
        match kind {
            OptimizerKind::Adamw => {
                let mut o = AdamW::new(weight_decay);
                o.exclude_norm_bias = exclude_norm_bias;
                Optimizer::AdamW(o)
            }
            OptimizerKind::Lars => Optimizer::Lars(Lars::new(weight_decay)),
        }
    }

    pub fn update(&mut self, params: &mut [&mut Param], lr: f64) {
        match self {
            Optimizer::AdamW(o) => o.update(params, lr),
            Optimizer::Lars(o) => o.update(params, lr),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        match self {
            Optimizer::AdamW(o) => o.step,
            Optimizer::Lars(o) => o.step,
        }
    }

    /// The per-parameter state tensors by their official names (AdamW `exp_avg`, `exp_avg_sq`;
    /// the official LARS `mu`),
    /// each one buffer per trainable parameter; empty before the first step.
    pub fn state_mut(&mut self) -> Vec<(&'static str, &mut Vec<Vec<f32>>)> {
        match self {
            Optimizer::AdamW(o) => vec![("exp_avg", &mut o.exp_avg), ("exp_avg_sq", &mut o.exp_avg_sq)],
            Optimizer::Lars(o) => vec![("mu", &mut o.mu)],
        }
    }

    pub fn set_steps(&mut self, steps: u64) {
        match self {
            Optimizer::AdamW(o) => o.step = steps,
            Optimizer::Lars(o) => o.step = steps,
        }
    }

    /// Forget the state of the trainable parameters at these positions (which stopped training:
    /// the order of [`crate::moco::MoCo::trainable_params`] then skips them).
    pub fn drop_state(&mut self, positions: &[usize]) {
        for (_, s) in self.state_mut() {
            if s.is_empty() {
                continue;
            }
            let mut i = 0;
            s.retain(|_| {
                i += 1;
                !positions.contains(&(i - 1))
            });
        }
    }

    /// Zeroed state buffers of the given sizes (one per trainable parameter), for a loader to
    /// fill in.
    pub fn zero_state(&mut self, sizes: &[usize]) {
        for (_, s) in self.state_mut() {
            *s = sizes.iter().map(|&n| vec![0.0; n]).collect();
        }
    }
}
