//! mocov3: MoCo v3 self-supervised pre-training of Vision Transformers on its own engine.
//!
//! Data flows one way: `engine` (buffers, GEMM, parallel loops) → `nn` (layers with backward) →
//! `models` (ViT, MLP heads) → `moco` (the method) → `optim` → `data` → `train` → the CLI.

pub mod bench;
pub mod data;
pub mod engine;
pub mod eval;
pub mod interop;
pub mod moco;
pub mod models;
pub mod nn;
pub mod optim;
pub mod report;
pub mod train;
