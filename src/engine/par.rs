//! Parallel loops with results that do not depend on the number of threads: work is cut into
//! fixed-size pieces and every reduction runs in a fixed order.

use rayon::prelude::*;

/// A raw pointer that may cross threads; the caller guarantees disjoint writes.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the raw field).
    #[inline]
    pub fn ptr(self) -> *mut f32 {
        self.0
    }

    /// # Safety
    /// The range must be inside the allocation and not written by another thread concurrently.
    #[inline]
    pub unsafe fn slice(self, off: usize, len: usize) -> &'static mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}

/// Rows per parallel task for row-wise kernels: enough work per task to amortise scheduling.
fn rows_per_task(cols: usize) -> usize {
    (16384 / cols.max(1)).max(1)
}

/// Run `f(row_index, out_row)` over the rows of `out` (`cols` wide) in parallel.
pub fn for_rows<F>(out: &mut [f32], cols: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let per = rows_per_task(cols);
    out.par_chunks_mut(per * cols).enumerate().for_each(|(ci, chunk)| {
        for (ri, row) in chunk.chunks_mut(cols).enumerate() {
            f(ci * per + ri, row);
        }
    });
}

/// Run `f(row_index, a_row, b_row)` over two row-aligned outputs in parallel.
pub fn for_rows2<F>(a: &mut [f32], acols: usize, b: &mut [f32], bcols: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync,
{
    let per = rows_per_task(acols);
    a.par_chunks_mut(per * acols).zip(b.par_chunks_mut(per * bcols)).enumerate().for_each(|(ci, (ca, cb))| {
        for (ri, (ra, rb)) in ca.chunks_mut(acols).zip(cb.chunks_mut(bcols)).enumerate() {
            f(ci * per + ri, ra, rb);
        }
    });
}

/// Elementwise map over equal-length slices in parallel.
pub fn map2<F>(out: &mut [f32], x: &[f32], f: F)
where
    F: Fn(&mut [f32], &[f32]) + Sync,
{
    const CH: usize = 16384;
    out.par_chunks_mut(CH).zip(x.par_chunks(CH)).for_each(|(o, i)| f(o, i));
}

/// Elementwise in-place update in parallel.
pub fn map_inplace<F>(x: &mut [f32], f: F)
where
    F: Fn(&mut f32) + Sync,
{
    const CH: usize = 16384;
    x.par_chunks_mut(CH).for_each(|c| c.iter_mut().for_each(&f));
}

/// Run `f(index, chunk)` over the first `n` `len`-wide chunks of `x` in parallel, stopping at
/// the first error (which one is reported when several fail is unspecified).
pub fn try_for_chunks<E, F>(x: &mut [f32], len: usize, n: usize, f: F) -> Result<(), E>
where
    E: Send,
    F: Fn(usize, &mut [f32]) -> Result<(), E> + Sync,
{
    x[..n * len].par_chunks_mut(len).enumerate().try_for_each(|(i, v)| f(i, v))
}

/// `f(row_index, row)` for every `cols`-wide row of `x`, in parallel; the results in row order.
pub fn map_rows<T, F>(x: &[f32], cols: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &[f32]) -> T + Sync,
{
    x.par_chunks(cols).enumerate().map(|(i, r)| f(i, r)).collect()
}

/// Per-column reduction over `rows` rows: `dst[c] (+)= sum_r term(r, c)` for c in 0..cols,
/// computed in row order for every column (deterministic), parallel over column blocks.
/// `term` receives a row index and a column range and adds its contribution into `acc`.
pub fn col_reduce<F>(dst: &mut [f32], rows: usize, accumulate: bool, term: F)
where
    F: Fn(usize, std::ops::Range<usize>, &mut [f32]) + Sync,
{
    const BLOCK: usize = 64;
    let cols = dst.len();
    if cols < 1024 && rows >= 64 {
        // Narrow rows (LayerNorm and bias gradients): blocks of 64 columns would give two threads
        // 3 tasks for a 192-wide layer. Cut the rows into fixed pieces instead, one partial sum
        // per piece, then add the partials in piece order (the pieces depend on the shape only).
        let per = (8192 / cols).clamp(16, 256);
        let pieces = rows.div_ceil(per);
        let mut partial = vec![0.0f32; pieces * cols];
        partial.par_chunks_mut(cols).enumerate().for_each(|(pi, acc)| {
            for r in pi * per..((pi + 1) * per).min(rows) {
                term(r, 0..cols, acc);
            }
        });
        if !accumulate {
            dst.fill(0.0);
        }
        for acc in partial.chunks(cols) {
            for (x, a) in dst.iter_mut().zip(acc) {
                *x += *a;
            }
        }
        return;
    }
    dst.par_chunks_mut(BLOCK).enumerate().for_each(|(bi, d)| {
        let c0 = bi * BLOCK;
        let mut acc = [0.0f32; BLOCK];
        let acc = &mut acc[..d.len()];
        for r in 0..rows {
            term(r, c0..c0 + d.len(), acc);
        }
        for (x, a) in d.iter_mut().zip(acc.iter()) {
            *x = if accumulate { *x + *a } else { *a };
        }
    });
}

/// `dst[c] (+)= sum_r src[r * cols + c]`.
pub fn col_sum(dst: &mut [f32], src: &[f32], rows: usize, cols: usize, accumulate: bool) {
    col_reduce(dst, rows, accumulate, |r, cr, acc| {
        let s = &src[r * cols + cr.start..r * cols + cr.end];
        for (a, v) in acc.iter_mut().zip(s) {
            *a += *v;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn col_sum_matches_a_serial_sum_for_narrow_and_wide_rows() {
        let mut rng = crate::engine::rng::Rng::new(4);
        for (rows, cols) in [(1000, 192), (37, 5), (300, 1500), (64, 1)] {
            let src: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
            let mut want = vec![0.0f64; cols];
            for r in 0..rows {
                for c in 0..cols {
                    want[c] += src[r * cols + c] as f64;
                }
            }
            let mut got = vec![1.0f32; cols];
            col_sum(&mut got, &src, rows, cols, false);
            let mut acc = vec![1.0f32; cols];
            col_sum(&mut acc, &src, rows, cols, true);
            for c in 0..cols {
                assert!((got[c] as f64 - want[c]).abs() < 1e-3, "{rows}x{cols} col {c}");
                assert!((acc[c] as f64 - want[c] - 1.0).abs() < 1e-3, "{rows}x{cols} col {c} accumulated");
            }
        }
    }

    #[test]
    fn col_sum_does_not_depend_on_the_thread_count() {
        let mut rng = crate::engine::rng::Rng::new(5);
        let (rows, cols) = (4000, 192);
        let src: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut out = vec![0.0f32; cols];
            pool.install(|| col_sum(&mut out, &src, rows, cols, false));
            out
        };
        let one = run(1);
        assert!(one.iter().zip(run(3)).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
