//! The ops layer: every kernel a layer runs, as named forward/backward pairs with explicit
//! shapes (llm.c's layout: `layernorm_forward(out, stats, inp, weight, bias, rows, c)` beside
//! `layernorm_backward(...)`). Layers in `nn/` and the code above them own buffers and call these;
//! only this module (with `gemm`, `par` and `fastmath` under it) knows how compute runs.
//!
//! Conventions: activations are row-major; a shape comment heads every op; "written" outputs are
//! overwritten, "accumulated" ones added into. Every reduction runs in an order fixed by the shape
//! alone, so results do not depend on the thread count.
//!
//! The CPU implementation lives here. A second backend provides the same list of ops (see
//! ARCHITECTURE.md); `tests/ops.rs`-style checks in [`reference`] run each op against a plain
//! scalar loop.

pub mod act;
pub mod attention;
pub mod conv;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;

#[cfg(test)]
mod reference;

pub use act::*;
pub use attention::*;
pub use conv::*;
pub use loss::*;
pub use matmul::*;
pub use norm::*;
pub use optim::*;
pub use pool::*;
pub use reduce::*;
