//! Strided single-precision matrix multiply on top of the `gemm` crate (AVX-512 kernels chosen at
//! run time with its `x86-v4` feature). Strides let every transpose be read in place.

use gemm::Parallelism;

/// A row-major or transposed view of a matrix: element (r, c) lives at `ptr[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// Safety: a Mat is a read-only view; whoever builds one guarantees the data outlives its use and
// is not written meanwhile (the same contract as a shared slice).
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    /// Row-major matrix with `ld` elements per row.
    pub fn rows(s: &[f32], ld: usize) -> Mat {
        Mat { ptr: s.as_ptr(), rs: ld as isize, cs: 1 }
    }
    /// The transpose of a row-major matrix with `ld` elements per row.
    pub fn trans(s: &[f32], ld: usize) -> Mat {
        Mat { ptr: s.as_ptr(), rs: 1, cs: ld as isize }
    }
    pub fn raw(ptr: *const f32, rs: usize, cs: usize) -> Mat {
        Mat { ptr, rs: rs as isize, cs: cs as isize }
    }
    /// The view starting at element (r, c).
    ///
    /// # Safety
    /// (r, c) must lie inside the matrix.
    pub unsafe fn offset(self, r: usize, c: usize) -> Mat {
        Mat { ptr: self.ptr.offset(r as isize * self.rs + c as isize * self.cs), ..self }
    }
}

/// C[m, n] (row-major, leading dimension `ldc`) = beta_c * C + alpha * A[m, k] · B[k, n].
/// `accumulate` false ignores C's old contents. Runs on the global rayon pool when `par`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    accumulate: bool,
    par: bool,
) {
    assert!(m == 0 || c.len() >= (m - 1) * ldc + n, "sgemm: output too small");
    unsafe { sgemm_raw(m, n, k, a, b, c.as_mut_ptr(), ldc, 1, alpha, accumulate, par) }
}

/// As [`sgemm`] on a raw, strided destination (used inside parallel loops over heads).
///
/// # Safety
/// `c` must be valid for writes at every (i, j) < (m, n) through `c_rs`, `c_cs`, and the operands
/// valid for reads over their extents; no other thread may touch those elements.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: *mut f32,
    c_rs: usize,
    c_cs: usize,
    alpha: f32,
    accumulate: bool,
    par: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *c.add(i * c_rs + j * c_cs) = 0.0;
                }
            }
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism =
        if par && threads > 1 && m * n * k >= 32 * 32 * 32 { Parallelism::Rayon(threads) } else { Parallelism::None };
    gemm::gemm(
        m,
        n,
        k,
        c,
        c_cs as isize,
        c_rs as isize,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0,
        alpha,
        false,
        false,
        false,
        parallelism,
    );
}

/// C[m, n] = alpha · A[m, k] · B[k, n] for a long k (weight gradients: k = rows of the batch),
/// computed as `pieces` products over consecutive slices of k, in parallel, each on one thread,
/// then summed in slice order. The gemm crate's own threading splits m and n, which leaves two
/// threads little to share when m·n is small and k long (up to 1.2x slower at the ViT's shapes).
/// The split depends on k only, so the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_long_k(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], ldc: usize, alpha: f32) {
    use rayon::prelude::*;
    let pieces = long_k_pieces(k, m * n);
    if pieces == 1 || m == 0 || n == 0 {
        return sgemm(m, n, k, a, b, c, ldc, alpha, false, true);
    }
    let per = k.div_ceil(pieces);
    thread_local! {
        // The partial products, kept between calls (a fresh allocation page-faults every time).
        static PARTIAL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PARTIAL.with_borrow_mut(|partial| {
        crate::engine::ensure(partial, pieces * m * n);
        let partial = &mut partial[..pieces * m * n];
        partial.par_chunks_mut(m * n).enumerate().for_each(|(p, out)| {
            let (k0, k1) = (p * per, ((p + 1) * per).min(k));
            // Safety: the slices of A and B start inside their extents (k0 < k).
            let (ak, bk) = unsafe { (a.offset(0, k0), b.offset(k0, 0)) };
            sgemm(m, n, k1 - k0, ak, bk, out, n, alpha, false, false);
        });
        crate::engine::par::for_rows(&mut c[..(m - 1) * ldc + n], ldc, |i, row| {
            let row = &mut row[..n];
            row.copy_from_slice(&partial[i * n..(i + 1) * n]);
            for p in 1..pieces {
                let src = &partial[p * m * n + i * n..p * m * n + (i + 1) * n];
                row.iter_mut().zip(src).for_each(|(x, v)| *x += v);
            }
        });
    });
}

/// Slices of k for [`sgemm_long_k`]: 8 of at least 512 each where k allows, else fewer, and no
/// more partial products than 32 MiB hold.
fn long_k_pieces(k: usize, mn: usize) -> usize {
    [8, 4, 2].into_iter().find(|&p| k >= p * 512 && p * mn <= 8 << 20).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn long_k_matches_naive_and_ignores_the_thread_count() {
        let mut rng = crate::engine::rng::Rng::new(2);
        let (m, n, k) = (13, 9, 4100);
        let at: Vec<f32> = (0..k * m).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
        let a: Vec<f32> = (0..m * k).map(|i| at[(i % k) * m + i / k]).collect();
        let want = naive(m, n, k, &a, &b);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut c = vec![7.0f32; m * (n + 2)];
            pool.install(|| sgemm_long_k(m, n, k, Mat::trans(&at, m), Mat::rows(&b, n), &mut c, n + 2, 0.5));
            c
        };
        let c = run(2);
        for i in 0..m {
            for j in 0..n {
                assert!((c[i * (n + 2) + j] - 0.5 * want[i * n + j]).abs() < 1e-3);
            }
            assert_eq!(c[i * (n + 2) + n], 7.0, "columns past n untouched");
        }
        assert!(c.iter().zip(run(1)).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulate() {
        let mut rng = crate::engine::rng::Rng::new(1);
        let (m, n, k) = (37, 29, 53);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![0.0; m * n];
        sgemm(m, n, k, Mat::rows(&a, k), Mat::rows(&b, n), &mut c, n, 1.0, false, true);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // A given as its transpose, B given as its transpose, accumulated with alpha 2.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        sgemm(m, n, k, Mat::trans(&at, m), Mat::trans(&bt, k), &mut c, n, 2.0, true, false);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - 3.0 * y).abs() < 3e-4, "{x} vs {}", 3.0 * y);
        }
    }
}
