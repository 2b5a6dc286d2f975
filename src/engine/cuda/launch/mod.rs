//! Launchers: the CPU ops of `engine/ops/` over [`DevBuf`]s on a [`Gpu`], one file per ops file,
//! each running its kernels of `kernels/` with the geometry that kernel's comment states. Same
//! names, shapes and semantics as the CPU op ("written" outputs overwritten, "accumulated" ones
//! added into); where the CPU op keeps a workspace (`partials`, `scratch`) the launcher takes a
//! device one, grown as needed. Every launcher checks its buffers' sizes before it launches, so
//! a wrong shape is an error, never an out-of-bounds kernel.

mod act;
mod attention;
mod conv;
mod loss;
mod matmul;
mod norm;
mod optim;
mod pool;
mod reduce;

pub use act::*;
pub use attention::*;
pub use conv::*;
pub use loss::*;
pub use matmul::*;
pub use norm::*;
pub use optim::*;
pub use pool::*;
pub use reduce::*;

use super::gpu::{Arg, DevBuf, Elem, Gpu};

/// Rows per partial sum of the column reductions (kernels/common.cuh's CHUNK_ROWS).
pub const CHUNK_ROWS: usize = 64;
/// Blocks of the grid-stride f64 partial sums (Σ x², LARS's norms): fixed, so the partials
/// depend on the length alone.
pub const PARTIAL_BLOCKS: u32 = 1024;

/// An error unless `b` holds at least `n` values.
pub(crate) fn need<T: Elem>(b: &DevBuf<T>, n: usize, what: &str) -> Result<(), String> {
    if b.len() < n {
        return Err(format!("{what}: {} elements, {n} needed", b.len()));
    }
    Ok(())
}

/// Grow a workspace to `n` values (its contents are not kept).
pub fn ensure<T: Elem>(gpu: &Gpu, b: &mut DevBuf<T>, n: usize) -> Result<(), String> {
    if b.len() < n {
        *b = gpu.zeros(n)?;
    }
    Ok(())
}

/// One thread per element, grid-stride beyond 2^16 blocks.
pub(crate) fn flat(gpu: &Gpu, n: usize) -> (u32, u32) {
    (n.div_ceil(gpu.block as usize).clamp(1, 65_536) as u32, 1)
}

/// One block per row.
pub(crate) fn per_row(rows: usize) -> (u32, u32) {
    (rows as u32, 1)
}

/// Column partial sums: one thread per column, one grid row per chunk of [`CHUNK_ROWS`] rows.
pub(crate) fn columns(gpu: &Gpu, c: usize, chunks: usize) -> (u32, u32) {
    (c.div_ceil(gpu.block as usize) as u32, chunks as u32)
}

/// Chunks of [`CHUNK_ROWS`] rows of a column sum over `rows` rows (at least one).
pub(crate) fn chunks(rows: usize) -> usize {
    rows.div_ceil(CHUNK_ROWS).max(1)
}

/// Blocks of a grid-stride f64 partial sum over `n` values: one per block of elements up to
/// [`PARTIAL_BLOCKS`], so the split depends on the length alone.
pub(crate) fn partial_blocks(gpu: &Gpu, n: usize) -> u32 {
    n.div_ceil(gpu.block as usize).clamp(1, PARTIAL_BLOCKS as usize) as u32
}

/// An `int` argument; shapes past i32 are refused by the launcher before this.
pub(crate) fn int(v: usize) -> Arg {
    Arg::I32(v as i32)
}

pub(crate) fn fits_i32(vals: &[usize], what: &str) -> Result<(), String> {
    match vals.iter().find(|&&v| v > i32::MAX as usize) {
        Some(v) => Err(format!("{what}: {v} exceeds the kernels' 32-bit shapes")),
        None => Ok(()),
    }
}

/// `out [width] (=|+=) Σ_k partials[k, col0 .. col0 + width]` over `chunks` chunks of
/// `partials [chunks, stride]`, in chunk order (kernels/reduce.cu's col_partials_finish).
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_columns(
    gpu: &Gpu,
    out: &mut DevBuf<f32>,
    partials: &DevBuf<f32>,
    chunks: usize,
    stride: usize,
    col0: usize,
    width: usize,
    accumulate: bool,
) -> Result<(), String> {
    need(out, width, "col_partials_finish: out")?;
    need(partials, chunks * stride, "col_partials_finish: partials")?;
    let args = [
        out.arg_mut(gpu),
        partials.arg(gpu),
        int(chunks),
        int(stride),
        int(col0),
        int(width),
        Arg::I32(accumulate as i32),
    ];
    // SAFETY: (float* [width], const float* [chunks·stride], int ×5); sizes checked.
    unsafe { gpu.launch("col_partials_finish", (width.div_ceil(gpu.block as usize) as u32, 1), 0, &args) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_constants_match_the_kernels_prelude() {
        let p = super::super::nvrtc::PRELUDE;
        assert!(
            p.contains(&format!("#define CHUNK_ROWS {}\n", super::CHUNK_ROWS)),
            "CHUNK_ROWS differs from common.cuh"
        );
    }
}
