//! Small vector kernels written so the compiler vectorises them (8 independent accumulators).

/// The sum of eight running sums, in the fixed pairwise order every reduction here uses.
#[inline(always)]
pub fn fold8(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

#[inline]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ch = x.chunks_exact(8);
    for c in &mut ch {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut s = fold8(acc);
    for v in ch.remainder() {
        s += v;
    }
    s
}

/// Largest element (−∞ for an empty slice).
#[inline]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut ch = x.chunks_exact(8);
    for c in &mut ch {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in ch.remainder() {
        m = m.max(v);
    }
    m
}

#[inline]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut cx = x.chunks_exact(8);
    let mut cy = y.chunks_exact(8);
    for (a, b) in (&mut cx).zip(&mut cy) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    let mut s = fold8(acc);
    for (a, b) in cx.remainder().iter().zip(cy.remainder()) {
        s += a * b;
    }
    s
}

/// Sum of squared deviations from `mean`.
#[inline]
pub fn sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ch = x.chunks_exact(8);
    for c in &mut ch {
        for i in 0..8 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let mut s = fold8(acc);
    for v in ch.remainder() {
        s += (v - mean) * (v - mean);
    }
    s
}

/// out = a + b, elementwise, in parallel.
pub fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    use rayon::prelude::*;
    const CH: usize = 16384;
    out.par_chunks_mut(CH).zip(a.par_chunks(CH)).zip(b.par_chunks(CH)).for_each(|((o, x), y)| {
        for ((o, x), y) in o.iter_mut().zip(x).zip(y) {
            *o = x + y;
        }
    });
}

/// out += a, elementwise, on the calling thread.
#[inline]
pub fn add_assign_serial(out: &mut [f32], a: &[f32]) {
    for (o, x) in out.iter_mut().zip(a) {
        *o += x;
    }
}

/// out += a, elementwise, in parallel.
pub fn add_assign(out: &mut [f32], a: &[f32]) {
    super::par::map2(out, a, |o, x| {
        for (o, x) in o.iter_mut().zip(x) {
            *o += x;
        }
    });
}
