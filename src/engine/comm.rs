//! Collectives between the processes of a data-parallel job: the interface every layer that
//! mixes rows across the global batch goes through (the contrastive loss gathers keys, BatchNorm
//! reduces its statistics), and the single-process implementation, where each collective is the
//! identity. A multi-process implementation (MPI, NCCL) provides the same trait and is installed
//! once at start with [`set_world`]; nothing above the engine changes.

use std::sync::OnceLock;

/// A group of `world` processes; this one is `rank`. Every process calls each collective in the
/// same order with buffers of the same length.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// `buf[i] ← Σ_ranks buf[i]`, the same result on every rank (a fixed reduction order).
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// `out` `[world, local.len()]` ← every rank's `local`, in rank order.
    fn all_gather(&self, out: &mut [f32], local: &[f32]);
    /// `buf` ← `root`'s `buf` on every rank.
    fn broadcast(&self, buf: &mut [f32], root: usize);
    fn barrier(&self);
}

/// One process: every collective is the identity.
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) {}
    fn all_gather(&self, out: &mut [f32], local: &[f32]) {
        out[..local.len()].copy_from_slice(local);
    }
    fn broadcast(&self, _buf: &mut [f32], root: usize) {
        assert_eq!(root, 0, "broadcast from rank {root} in a single process");
    }
    fn barrier(&self) {}
}

static WORLD: OnceLock<Box<dyn Communicator>> = OnceLock::new();

/// Install the process group (once, before any collective); refused when one is already in use.
pub fn set_world(c: Box<dyn Communicator>) -> Result<(), String> {
    WORLD.set(c).map_err(|_| "the communicator is already set: install it once, at start".to_string())
}

/// The process group: the one installed by [`set_world`], else a single process.
pub fn world() -> &'static dyn Communicator {
    WORLD.get_or_init(|| Box::new(SingleProcess)).as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_collectives_are_the_identity() {
        let c = SingleProcess;
        assert_eq!((c.rank(), c.world()), (0, 1));
        let mut b = vec![1.0, -2.5];
        c.all_reduce_sum(&mut b);
        c.broadcast(&mut b, 0);
        c.barrier();
        assert_eq!(b, [1.0, -2.5]);
        let mut out = vec![0.0; 2];
        c.all_gather(&mut out, &b);
        assert_eq!(out, b);
        assert_eq!(world().world(), 1);
    }
}
