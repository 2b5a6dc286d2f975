//! Optimisers and schedules.

pub mod adamw;
pub mod lars;
pub mod schedule;

pub use adamw::AdamW;
pub use lars::Lars;
