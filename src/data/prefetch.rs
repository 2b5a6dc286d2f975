//! Batches prepared ahead on worker threads: a producer thread with its own pool of `workers`
//! threads fills two-view batches in training order into a bounded queue of `depth` batches; the
//! training loop takes them in order and hands the buffers back. Every sample's random stream
//! comes from (seed, epoch, sample), so the batches are the same as the synchronous loader's
//! whatever the number of workers.
//!
//! Thread split: the compute pool has one thread per core; on a CPU-only machine the default
//! (`loader_workers = 0`) prepares each batch on that same pool between steps, so data work
//! never oversubscribes the cores the GEMMs use. With an accelerator doing the step, or cores to
//! spare, `loader_workers = N` moves the work to N extra threads, `loader_depth` batches ahead.

use super::augment::Augment;
use super::loader::TwoViewLoader;
use super::ImageSet;
use anyhow::{anyhow, Result};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Batch {
    pub epoch: usize,
    pub step: usize,
    /// `[x1; x2]`, 2·batch images, CHW.
    pub x: Vec<f32>,
    /// Dataset indices of the batch's images.
    pub ids: Vec<usize>,
}

pub struct Prefetcher {
    rx: Receiver<Result<Batch>>,
    recycle: Sender<Vec<f32>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Start producing the batches of `schedule` ((epoch, step) pairs, in order), as rank
    /// `shard.0` of `shard.1` processes (see [`TwoViewLoader::shard`]).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        set: Arc<ImageSet>,
        aug: Augment,
        batch: usize,
        seed: u64,
        shard: (usize, usize),
        workers: usize,
        depth: usize,
        schedule: Vec<(usize, usize)>,
    ) -> Result<Prefetcher> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .thread_name(|i| format!("mocov3-loader-{i}"))
            .build()
            .map_err(|e| anyhow!("cannot start the loader's threads: {e}"))?;
        let (tx, rx): (SyncSender<Result<Batch>>, _) = sync_channel(depth.max(1));
        let (recycle, returned) = std::sync::mpsc::channel::<Vec<f32>>();
        let handle = std::thread::Builder::new().name("mocov3-prefetch".into()).spawn(move || {
            let mut loader = TwoViewLoader::new(&set, aug, batch, seed).shard(shard.0, shard.1);
            let len = 2 * batch * loader.image_len();
            for (epoch, step) in schedule {
                let mut x = returned.try_recv().unwrap_or_else(|_| vec![0.0f32; len]);
                let r = pool.install(|| loader.fill(epoch, step, &mut x));
                let item = r.map(|_| Batch { epoch, step, x, ids: loader.ids(step).to_vec() });
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return; // the consumer is gone, or the error has been handed over
                }
            }
        })?;
        Ok(Prefetcher { rx, recycle, handle: Some(handle) })
    }

    /// The next batch, in schedule order.
    pub fn next(&self) -> Result<Batch> {
        self.rx.recv().map_err(|_| anyhow!("the data loader stopped early"))?
    }

    /// Give a batch's buffer back for reuse.
    pub fn give_back(&self, x: Vec<f32>) {
        let _ = self.recycle.send(x);
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Unblock the producer (its sends fail once the receiver is gone), then wait for it.
        let (_, dead) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetched_batches_equal_the_synchronous_loader() {
        let set = Arc::new(crate::data::synthetic::generate(70, 12, 1, 3, 4));
        let aug = Augment {
            kind: crate::data::augment::AugmentKind::Official,
            ..Augment::crop_flip(12, 0.3, true, vec![0.5], vec![0.25])
        };
        let schedule: Vec<(usize, usize)> = (0..2).flat_map(|e| (0..4).map(move |s| (e, s))).collect();
        for workers in [1, 3] {
            let p = Prefetcher::start(set.clone(), aug.clone(), 16, 9, (0, 1), workers, 2, schedule.clone()).unwrap();
            let mut sync = TwoViewLoader::new(&set, aug.clone(), 16, 9);
            let mut want = vec![0.0f32; 2 * 16 * 144];
            for &(e, s) in &schedule {
                let b = p.next().unwrap();
                sync.fill(e, s, &mut want).unwrap();
                assert_eq!((b.epoch, b.step), (e, s));
                assert_eq!(b.ids, sync.ids(s));
                assert_eq!(b.x, want, "workers {workers}, epoch {e} step {s}");
                p.give_back(b.x);
            }
        }
        // Dropped half-way: the producer stops without hanging.
        let p = Prefetcher::start(set, aug, 16, 9, (0, 1), 2, 1, schedule).unwrap();
        p.next().unwrap();
        drop(p);
    }
}
