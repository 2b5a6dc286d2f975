//! Batches of two views: a per-epoch permutation from the seed, drop_last, and per-sample random
//! streams derived from (seed, epoch, sample), so a batch is the same whatever the thread count
//! and whether or not the run was resumed.
//!
//! Sharding (`rank` of `world` processes, as DistributedSampler + per-GPU batches): every rank
//! draws the same permutation, a global step takes `batch × world` images and rank r the r-th
//! slice of them, so the ranks' batches are disjoint and together are the one-process batch of
//! `batch × world`.
//!
//! Threads: the views of a batch are computed on the compute pool between steps (one pool sized
//! to the cores, so data work never oversubscribes the cores the GEMMs use).

use super::augment::Augment;
use super::ImageSet;
use crate::engine::rng::Rng;
use rayon::prelude::*;

pub struct TwoViewLoader<'a> {
    pub set: &'a ImageSet,
    pub aug: Augment,
    pub batch: usize,
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    order: Vec<usize>,
    order_epoch: Option<usize>,
}

impl<'a> TwoViewLoader<'a> {
    pub fn new(set: &'a ImageSet, aug: Augment, batch: usize, seed: u64) -> Self {
        TwoViewLoader { set, aug, batch, seed, rank: 0, world: 1, order: Vec::new(), order_epoch: None }
    }

    /// This loader as rank `rank` of `world` processes.
    pub fn shard(mut self, rank: usize, world: usize) -> Self {
        assert!(world > 0 && rank < world, "rank {rank} of world {world}");
        (self.rank, self.world) = (rank, world);
        self
    }

    /// Steps per epoch (incomplete last global batch dropped).
    pub fn steps(&self) -> usize {
        self.set.len() / (self.batch * self.world)
    }

    /// Floats in one view of one image.
    pub fn image_len(&self) -> usize {
        self.set.c * self.aug.out * self.aug.out
    }

    /// Dataset indices of the images of step `step` (valid after `fill` for that epoch).
    pub fn ids(&self, step: usize) -> &[usize] {
        let start = (step * self.world + self.rank) * self.batch;
        &self.order[start..start + self.batch]
    }

    /// Fill `x` with [x1; x2] for step `step` of `epoch` (2·batch images, CHW). Fails when an
    /// image file does not decode (unless the set skips corrupt files).
    pub fn fill(&mut self, epoch: usize, step: usize, x: &mut [f32]) -> anyhow::Result<()> {
        if self.order_epoch != Some(epoch) {
            self.order = (0..self.set.len()).collect();
            Rng::derive(self.seed, &[0x5348_5546, epoch as u64]).shuffle(&mut self.order);
            self.order_epoch = Some(epoch);
        }
        let (b, len) = (self.batch, self.image_len());
        let (x1, x2) = x[..2 * b * len].split_at_mut(b * len);
        let (set, aug, seed) = (self.set, &self.aug, self.seed);
        let ids = self.ids(step);
        x1.par_chunks_mut(len).zip(x2.par_chunks_mut(len)).zip(ids.par_iter()).try_for_each(|((v1, v2), &id)| {
            let mut rng = Rng::derive(seed, &[epoch as u64, id as u64]);
            let p = set.get(id)?;
            aug.view(&mut rng, 0, &p.px, p.h, p.w, set.c, v1);
            aug.view(&mut rng, 1, &p.px, p.h, p.w, set.c, v2);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_slices_of_the_one_process_batch() {
        let set = crate::data::synthetic::generate(103, 8, 1, 3, 1);
        let aug = Augment::crop_flip(8, 0.5, true, vec![0.5], vec![0.25]);
        let mut x = vec![0.0f32; 2 * 4 * 64];
        let mut whole = TwoViewLoader::new(&set, aug.clone(), 12, 7);
        let mut shards: Vec<TwoViewLoader> =
            (0..3).map(|r| TwoViewLoader::new(&set, aug.clone(), 4, 7).shard(r, 3)).collect();
        assert_eq!(whole.steps(), 8);
        assert!(shards.iter().all(|l| l.steps() == 8));
        for step in 0..8 {
            let mut x12 = vec![0.0f32; 2 * 12 * 64];
            whole.fill(1, step, &mut x12).unwrap();
            let mut joined = Vec::new();
            for (r, l) in shards.iter_mut().enumerate() {
                l.fill(1, step, &mut x).unwrap();
                joined.extend_from_slice(l.ids(step));
                // Rank r's first views are exactly the one-process batch's slice r.
                assert_eq!(&x[..4 * 64], &x12[r * 4 * 64..(r + 1) * 4 * 64]);
            }
            assert_eq!(joined, whole.ids(step));
        }
    }
}
