//! Layers. Each owns its parameters, their gradients and the activations its backward needs;
//! `forward` and `backward` sit side by side. Gradients are written (not accumulated) by
//! `backward`: every parameter is used once per step, because the two views of a batch travel
//! together as one batch of 2N rows (see `moco.rs`).
//!
//! Conventions: activations are row-major `[rows, features]`; `backward` receives the layer's
//! forward input again (the caller owns it) and the gradient of the output, and writes the
//! gradient of the input when asked for.

pub mod attention;
pub mod batchnorm;
pub mod conv;
pub mod convbn;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod param;
pub mod patch;
pub mod pool;
pub mod posembed;
pub mod relu;

#[cfg(test)]
pub mod gradcheck;

pub use attention::Attention;
pub use batchnorm::BatchNorm1d;
pub use gelu::Gelu;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use param::{Buffer, Module, Param, ParamKind};
pub use patch::PatchEmbed;
pub use relu::Relu;
