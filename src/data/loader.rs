//! Batches of two views: a per-epoch permutation from the seed, drop_last, and per-sample random
//! streams derived from (seed, epoch, sample), so a batch is the same whatever the thread count
//! and whether or not the run was resumed.

use super::augment::Augment;
use super::ImageSet;
use crate::engine::rng::Rng;
use rayon::prelude::*;

pub struct TwoViewLoader<'a> {
    pub set: &'a ImageSet,
    pub aug: Augment,
    pub batch: usize,
    pub seed: u64,
    order: Vec<usize>,
    order_epoch: Option<usize>,
}

impl<'a> TwoViewLoader<'a> {
    pub fn new(set: &'a ImageSet, aug: Augment, batch: usize, seed: u64) -> Self {
        TwoViewLoader { set, aug, batch, seed, order: Vec::new(), order_epoch: None }
    }

    /// Steps per epoch (incomplete last batch dropped).
    pub fn steps(&self) -> usize {
        self.set.len() / self.batch
    }

    /// Floats in one view of one image.
    pub fn image_len(&self) -> usize {
        self.set.c * self.aug.out * self.aug.out
    }

    /// Dataset indices of the images of step `step` (valid after `fill` for that epoch).
    pub fn ids(&self, step: usize) -> &[usize] {
        &self.order[step * self.batch..(step + 1) * self.batch]
    }

    /// Fill `x` with [x1; x2] for step `step` of `epoch` (2·batch images, CHW).
    pub fn fill(&mut self, epoch: usize, step: usize, x: &mut [f32]) {
        if self.order_epoch != Some(epoch) {
            self.order = (0..self.set.len()).collect();
            Rng::derive(self.seed, &[0x5348_5546, epoch as u64]).shuffle(&mut self.order);
            self.order_epoch = Some(epoch);
        }
        let (b, len) = (self.batch, self.image_len());
        let (x1, x2) = x[..2 * b * len].split_at_mut(b * len);
        let (set, aug, seed) = (self.set, &self.aug, self.seed);
        let ids = &self.order[step * b..(step + 1) * b];
        x1.par_chunks_mut(len).zip(x2.par_chunks_mut(len)).zip(ids.par_iter()).for_each(|((v1, v2), &id)| {
            let mut rng = Rng::derive(seed, &[epoch as u64, id as u64]);
            aug.view(&mut rng, 0, set.image(id), set.h, set.w, set.c, v1);
            aug.view(&mut rng, 1, set.image(id), set.h, set.w, set.c, v2);
        });
    }
}
