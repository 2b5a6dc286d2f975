//! The dense kNN monitor of the paper's appendix: a queue of the features of recent training
//! images (their first augmented view, as computed by the training step itself, so filling it
//! costs nothing), and every few iterations the features of a fixed held-out labelled subset,
//! classified against that queue. Dense enough, it shows the accuracy "dips" of unstable
//! training that a per-epoch kNN hides.

use super::features;
use super::knn::classify;
use crate::data::augment::Augment;
use crate::data::ImageSet;
use crate::engine::ops;
use crate::models::backbone::Backbone;

pub struct KnnMonitor {
    pub every: usize,
    pub k: usize,
    pub t: f32,
    d: usize,
    classes: usize,
    capacity: usize,
    bank: Vec<f32>,
    labels: Vec<u32>,
    next: usize,
    filled: usize,
    eval_n: usize,
}

impl KnnMonitor {
    pub fn new(every: usize, capacity: usize, eval_n: usize, k: usize, t: f32, d: usize, classes: usize) -> KnnMonitor {
        KnnMonitor {
            every,
            k,
            t,
            d,
            classes,
            capacity,
            bank: vec![0.0; capacity * d],
            labels: vec![0; capacity],
            next: 0,
            filled: 0,
            eval_n,
        }
    }

    /// Add features (`[n, d]`, not yet normalised) with their labels, replacing the oldest.
    pub fn push(&mut self, feats: &[f32], labels: impl IntoIterator<Item = u32>) {
        let d = self.d;
        for (f, l) in feats.chunks(d).zip(labels) {
            let slot = &mut self.bank[self.next * d..(self.next + 1) * d];
            slot.copy_from_slice(f);
            ops::l2norm_inplace(slot, d);
            self.labels[self.next] = l;
            self.next = (self.next + 1) % self.capacity;
            self.filled = (self.filled + 1).min(self.capacity);
        }
    }

    pub fn due(&self, step: u64) -> bool {
        self.every > 0 && step.is_multiple_of(self.every as u64) && self.filled >= self.k
    }

    /// Top-1 accuracy (%) of the held-out images against the queue.
    pub fn evaluate(
        &mut self,
        net: &mut Backbone,
        eval: &ImageSet,
        aug: &Augment,
        batch: usize,
    ) -> anyhow::Result<f64> {
        let n = self.eval_n.min(eval.len());
        let (q, _) = features::backbone(net, eval, n, aug, batch, features::VitFeature::Cls)?;
        let r = classify(
            &self.bank[..self.filled * self.d],
            &self.labels[..self.filled],
            &q,
            &eval.labels[..n],
            self.d,
            self.classes,
            &[self.k],
            self.t,
        );
        Ok(r[0].top1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keeps_the_most_recent() {
        // Every 2 steps, a queue of 3, k = 3: not due before 3 features are in.
        let mut m = KnnMonitor::new(2, 3, 10, 3, 0.07, 2, 2);
        m.push(&[1.0, 0.0, 0.0, 1.0], [0, 1]);
        assert!(!m.due(2), "only 2 of the k = 3 neighbours are queued");
        m.push(&[2.0, 0.0, 0.0, 3.0], [0, 1]);
        assert_eq!(m.filled, 3);
        assert!(m.due(2) && m.due(4) && !m.due(3));
        // Oldest (label 0 at slot 0) was replaced by the fourth entry (label 1).
        assert_eq!(m.labels, vec![1, 1, 0]);
        assert!((m.bank[1] - 1.0).abs() < 1e-6, "normalised on entry");
    }
}
