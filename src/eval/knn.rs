//! Weighted k-nearest-neighbour classification on L2-normalised features (InstDisc / DINO
//! protocol): the k most similar bank entries vote for their class with weight exp(sim / T).

use super::features::Standardizer;
use crate::engine::{ops, par};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KnnResult {
    pub k: usize,
    pub top1: f64,
    pub top5: f64,
}

/// `bank` and `query` (`[n, d]` rows) standardised per dimension with the bank's statistics
/// ([`Standardizer`]), then L2-normalised again: cosine similarity in which every dimension
/// counts alike, not mostly the few that vary most. A deviation from the plain protocol (as
/// SimpleShot's centring before nearest neighbours); `knn --standardize` and the quickstart
/// report it beside the plain score.
pub fn standardized(bank: &[f32], query: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let st = Standardizer::fit(bank, d);
    let (mut b, mut q) = (st.apply(bank), st.apply(query));
    ops::l2norm_inplace(&mut b, d);
    ops::l2norm_inplace(&mut q, d);
    (b, q)
}

/// Classify `query` (`[nq, d]`, normalised) against `bank` (`[nb, d]`, normalised, labels in
/// `bank_labels`), for each k in `ks`. Queries are processed in chunks so memory stays bounded.
#[allow(clippy::too_many_arguments)]
pub fn classify(
    bank: &[f32],
    bank_labels: &[u32],
    query: &[f32],
    query_labels: &[u32],
    d: usize,
    classes: usize,
    ks: &[usize],
    t: f32,
) -> Vec<KnnResult> {
    let nb = bank_labels.len();
    let nq = query_labels.len();
    assert_eq!(bank.len(), nb * d);
    assert_eq!(query.len(), nq * d);
    let kmax = ks.iter().copied().max().unwrap_or(1).min(nb).max(1);
    let mut hits = vec![(0usize, 0usize); ks.len()];
    const CHUNK: usize = 256;
    let mut sims = vec![0.0f32; CHUNK.min(nq.max(1)) * nb];
    for c0 in (0..nq).step_by(CHUNK) {
        let rows = CHUNK.min(nq - c0);
        let s = &mut sims[..rows * nb];
        ops::matmul_nt(s, &query[c0 * d..(c0 + rows) * d], bank, rows, nb, d, 1.0);
        let chunk_hits: Vec<Vec<(bool, bool)>> = par::map_rows(s, nb, |r, row| {
            // Indices of the kmax largest similarities, best first (ties: lower index).
            let mut idx: Vec<usize> = (0..nb).collect();
            let cmp = |a: &usize, b: &usize| {
                row[*b].partial_cmp(&row[*a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(b))
            };
            if kmax < nb {
                idx.select_nth_unstable_by(kmax - 1, cmp);
                idx.truncate(kmax);
            }
            idx.sort_by(cmp);
            let truth = query_labels[c0 + r] as usize;
            ks.iter()
                .map(|&k| {
                    let mut votes = vec![0.0f64; classes];
                    for &j in idx.iter().take(k.min(idx.len())) {
                        votes[bank_labels[j] as usize] += ((row[j] / t) as f64).exp();
                    }
                    let mut order: Vec<usize> = (0..classes).collect();
                    // total_cmp: features of a damaged checkpoint (NaN) give a wrong
                    // answer, not a panic.
                    order.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]).then(a.cmp(&b)));
                    (order[0] == truth, order.iter().take(5).any(|&c| c == truth))
                })
                .collect()
        });
        for h in chunk_hits {
            for (i, (t1, t5)) in h.into_iter().enumerate() {
                hits[i].0 += t1 as usize;
                hits[i].1 += t5 as usize;
            }
        }
    }
    ks.iter()
        .zip(hits)
        .map(|(&k, (a, b))| KnnResult {
            k,
            top1: 100.0 * a as f64 / nq.max(1) as f64,
            top5: 100.0 * b as f64 / nq.max(1) as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::Rng;

    #[test]
    fn separable_clusters_are_classified_and_noise_is_not() {
        // Three classes around orthogonal directions: kNN must be (nearly) perfect.
        let (d, classes) = (6, 3);
        let mut rng = Rng::new(4);
        let mut make = |n: usize, noise: f32| {
            let mut x = Vec::new();
            let mut y = Vec::new();
            for i in 0..n {
                let c = i % classes;
                for j in 0..d {
                    x.push(if j == 2 * c { 1.0 } else { 0.0 } + noise * rng.normal());
                }
                y.push(c as u32);
            }
            ops::l2norm_inplace(&mut x, d);
            (x, y)
        };
        let (bank, bl) = make(300, 0.2);
        let (query, ql) = make(90, 0.2);
        let r = classify(&bank, &bl, &query, &ql, d, classes, &[1, 20], 0.07);
        assert!(r[0].top1 > 97.0 && r[1].top1 > 97.0, "{r:?}");
        assert_eq!(r[1].top5, 100.0);
        // Labels unrelated to the features: about chance (1/3).
        let shuffled: Vec<u32> = (0..bl.len()).map(|i| ((i * 7 + i / 3) % classes) as u32).collect();
        let r = classify(&bank, &shuffled, &query, &ql, d, classes, &[20], 0.07);
        assert!(r[0].top1 < 60.0, "{r:?}");
    }

    #[test]
    fn standardizing_rescues_a_signal_on_a_tiny_scale() {
        // Three dimensions of unit noise and two that carry the class (±1) at a scale of 0.02:
        // cosine similarity sees only the noise, so the plain vote is about chance; standardised,
        // the class dimensions count as much as the noise and the vote is (nearly) perfect.
        let (d, classes) = (5, 2);
        let mut rng = Rng::new(11);
        let mut make = |n: usize| {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for i in 0..n {
                let sign = if i % 2 == 0 { -1.0 } else { 1.0 };
                x.extend((0..3).map(|_| rng.normal()));
                x.extend((0..2).map(|_| 0.02 * (sign + 0.3 * rng.normal())));
                y.push((i % 2) as u32);
            }
            (x, y)
        };
        let ((bank, bl), (query, ql)) = (make(400), make(200));
        let (mut b, mut q) = (bank.clone(), query.clone());
        ops::l2norm_inplace(&mut b, d);
        ops::l2norm_inplace(&mut q, d);
        let plain = classify(&b, &bl, &q, &ql, d, classes, &[20], 0.07)[0].top1;
        let (b, q) = standardized(&bank, &query, d);
        let std = classify(&b, &bl, &q, &ql, d, classes, &[20], 0.07)[0].top1;
        assert!(plain < 65.0 && std > 95.0, "plain {plain} standardized {std}");
        // Rows come back unit length.
        assert!(b.chunks(d).all(|r| (crate::engine::vec::dot(r, r) - 1.0).abs() < 1e-5));
    }

    #[test]
    fn weighted_vote_by_hand() {
        // Bank: two points of class 0 at similarity 0.6, one of class 1 at similarity 1.0.
        let d = 2;
        let q = [1.0f32, 0.0];
        let bank = [0.6f32, 0.8, 0.6, -0.8, 1.0, 0.0];
        let labels = [0u32, 0, 1];
        // T = 0.1: class 1 weight e^10 beats 2·e^6; T = 10: 2·e^0.06 beats e^0.1.
        assert_eq!(classify(&bank, &labels, &q, &[1], d, 2, &[3], 0.1)[0].top1, 100.0);
        assert_eq!(classify(&bank, &labels, &q, &[0], d, 2, &[3], 10.0)[0].top1, 100.0);
        // k = 1 keeps only the nearest: class 1.
        assert_eq!(classify(&bank, &labels, &q, &[0], d, 2, &[1], 10.0)[0].top1, 0.0);
        // A NaN feature (a damaged checkpoint) scores, it does not panic.
        let nan = [f32::NAN, 0.0];
        let r = classify(&bank, &labels, &nan, &[0], d, 2, &[3], 0.1)[0];
        assert!(r.top1 <= 100.0, "{r:?}");
    }
}
