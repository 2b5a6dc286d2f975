//! Pre-training: configuration and presets, checkpoints, metrics, and the training loop.

pub mod actions;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod detect;
pub mod distributed;
pub mod instability;
pub mod memory;
pub mod metrics;
pub mod presets;
pub mod pretrain;
pub mod probe;
pub mod quickstart;
pub mod runlog;
pub mod study;
pub mod study_report;
pub mod tensorboard;
