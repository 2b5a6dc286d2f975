//! mocov3: MoCo v3 self-supervised pre-training of Vision Transformers and ResNets on its own
//! engine.
//!
//! Data flows one way: `engine` (the ops layer: every kernel as named forward/backward pairs;
//! GEMM and parallel loops under it; RNG; the communicator for collectives) → `nn` (layers that
//! own buffers and call ops) → `models` (ViT, ResNet, MLP heads) → `moco` (the method) → `optim`
//! → `data` → `train`, `eval` → the CLI. Only `engine` (and `data`, for decoding) runs parallel
//! loops, intrinsics or `unsafe`. ARCHITECTURE.md says which module may use which and what a new
//! backend provides.

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
