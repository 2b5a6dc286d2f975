//! Optimisers and schedules.

pub mod adamw;
pub mod schedule;

pub use adamw::AdamW;
