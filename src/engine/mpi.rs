//! The MPI communicator (cargo feature `mpi`, over the system's Open MPI or MPICH through the
//! `mpi` crate): the collectives of [`Comm`] as MPI_Allreduce, MPI_Allgather and
//! MPI_Bcast on `MPI_COMM_WORLD`.
//!
//! Threads: MPI is initialised at `MPI_THREAD_SERIALIZED` and every call holds one lock, so the
//! collectives may come from any thread but never two at once. The training loop makes every
//! collective from its own thread in program order, which is the same on every rank.
//!
//! Determinism: `all_reduce_sum` must give bit-identical results on every rank (the ranks then
//! apply the same update and stay identical). MPI_Allreduce does not promise that for floating
//! point, so the sum is a reduce to rank 0 followed by a broadcast of rank 0's result: one sum,
//! one copy of it everywhere. The reduce's order depends only on the world size and the message
//! length (Open MPI and MPICH pick their algorithm from those), never on timing.

use super::comm::Communicator as Comm;
use ::mpi::collective::SystemOperation;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use ::mpi::Threading;
use std::sync::Mutex;

pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Held until [`Communicator::finalize`] drops it (MPI_Finalize).
    universe: Mutex<Option<::mpi::environment::Universe>>,
    /// Serialises every MPI call (MPI_THREAD_SERIALIZED).
    lock: Mutex<Vec<f32>>,
    library: String,
}

// SAFETY: the MPI handles are plain integers or pointers owned by the MPI library, which was
// initialised for MPI_THREAD_SERIALIZED; every call through this type holds `lock`, so no two
// threads are ever inside MPI at once.
unsafe impl Send for MpiComm {}
unsafe impl Sync for MpiComm {}

impl MpiComm {
    /// MPI_Init_thread (SERIALIZED); an error when MPI is already initialised or cannot give that
    /// thread level.
    pub fn init() -> Result<MpiComm, String> {
        let (universe, level) = ::mpi::initialize_with_threading(Threading::Serialized)
            .ok_or("MPI was already initialised in this process")?;
        if !matches!(level, Threading::Serialized | Threading::Multiple) {
            return Err(format!(
                "this MPI library provides thread level {level:?}, and mocov3 needs at least Serialized"
            ));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let library = ::mpi::environment::library_version()
            .map(|v| v.split([',', '\n']).next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        Ok(MpiComm { world, rank, size, universe: Mutex::new(Some(universe)), lock: Mutex::new(Vec::new()), library })
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Vec<f32>> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        let mut send = self.guard();
        send.clear();
        send.extend_from_slice(buf);
        let root = self.world.process_at_rank(0);
        if self.rank == 0 {
            root.reduce_into_root(&send[..], &mut *buf, SystemOperation::sum());
        } else {
            root.reduce_into(&send[..], SystemOperation::sum());
        }
        root.broadcast_into(buf);
    }
    fn all_gather(&self, out: &mut [f32], local: &[f32]) {
        let _g = self.guard();
        self.world.all_gather_into(local, &mut out[..local.len() * self.size]);
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) {
        let _g = self.guard();
        self.world.process_at_rank(root as i32).broadcast_into(buf);
    }
    fn barrier(&self) {
        let _g = self.guard();
        self.world.barrier();
    }
    fn all_gather_bytes(&self, out: &mut [u8], local: &[u8]) {
        let _g = self.guard();
        self.world.all_gather_into(local, &mut out[..local.len() * self.size]);
    }
    fn abort(&self, code: i32) -> ! {
        // No lock: another thread may be stuck inside a collective, which MPI_Abort ends.
        self.world.abort(code)
    }
    fn finalize(&self) {
        let _g = self.guard();
        let u = self.universe.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(u);
    }
    fn describe(&self) -> String {
        format!("MPI ({}), {} processes", self.library, self.size)
    }
}
