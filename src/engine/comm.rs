//! Collectives between the processes of a data-parallel job: the interface every layer that
//! mixes rows across the global batch goes through (the contrastive loss gathers keys, BatchNorm
//! reduces its statistics), and the single-process implementation, where each collective is the
//! identity. A multi-process implementation (MPI, NCCL) provides the same trait and is installed
//! once at start with [`set_world`] ([`init_from_launcher`] does it when the process was started
//! by `mpirun` or `srun`); nothing above the engine changes.

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
    /// `out` `[world, local.len()]` ← every rank's bytes, in rank order (hashes, indices).
    fn all_gather_bytes(&self, out: &mut [u8], local: &[u8]);
    /// End the whole job now with `code` (MPI_Abort: no rank is left waiting in a collective).
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    /// Leave the process group cleanly at the end of a run (MPI_Finalize); a no-op alone.
    fn finalize(&self) {}
    /// What the group runs on, for the console ("1 process", "MPI, 4 processes").
    fn describe(&self) -> String {
        "1 process".into()
    }
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
    fn all_gather_bytes(&self, out: &mut [u8], local: &[u8]) {
        out[..local.len()].copy_from_slice(local);
    }
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

/// How many processes the launcher that started this one asked for (`mpirun`/`mpiexec` of Open
/// MPI or MPICH, Slurm's `srun`); 1 when started directly.
pub fn launched_world_size() -> usize {
    for key in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"] {
        if let Some(n) = std::env::var(key).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
            return n.max(1);
        }
    }
    1
}

/// Processes of this job on this machine, as the launcher says (for the default thread count).
pub fn launched_local_size() -> usize {
    for key in ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_TASKS_PER_NODE"] {
        // Slurm writes e.g. "4(x2)" for 4 tasks on each of 2 nodes.
        let v = std::env::var(key).ok();
        if let Some(n) = v.as_deref().and_then(|v| v.split('(').next()).and_then(|v| v.trim().parse::<usize>().ok()) {
            return n.max(1);
        }
    }
    1
}

/// Install the process group the launcher set up: MPI when this process was started by
/// `mpirun`/`srun` with more than one process (and the binary was built with `--features mpi`),
/// else nothing (a single process). An error when several processes were launched but this
/// binary cannot join them: each would otherwise train alone on the whole batch.
pub fn init_from_launcher() -> Result<(), String> {
    let n = launched_world_size();
    if n <= 1 {
        return Ok(());
    }
    join(n)
}

#[cfg(feature = "mpi")]
fn join(n: usize) -> Result<(), String> {
    let c = super::mpi::MpiComm::init()?;
    if c.world() != n {
        return Err(format!("the launcher announced {n} processes but MPI reports {}", c.world()));
    }
    set_world(Box::new(c))
}

#[cfg(not(feature = "mpi"))]
fn join(n: usize) -> Result<(), String> {
    Err(format!(
        "started by a launcher as one of {n} processes, but this binary was built without MPI, so each \
         process would train alone: rebuild with `cargo build --release --features mpi` (needs the \
         packages libopenmpi-dev and clang), or run a single process"
    ))
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
        let mut bytes = [0u8; 3];
        c.all_gather_bytes(&mut bytes, &[7, 8, 9]);
        assert_eq!(bytes, [7, 8, 9]);
        assert_eq!(world().world(), 1);
    }
}
