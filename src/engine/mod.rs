//! The compute engine: the ops layer (every kernel, as named forward/backward pairs), GEMM, the
//! parallel helpers under them, seeded randomness, and the communicator for collectives. This is
//! the only place that knows how compute runs (rayon + the `gemm` crate on the CPU); the layers
//! above call [`ops`] and [`comm`] and nothing below them (see ARCHITECTURE.md).

pub mod comm;
pub mod crc;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod fastmath;
pub mod gemm;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod ops;
pub mod par;
pub mod rng;
pub mod tensor;
pub mod vec;

/// Grow `v` to `n` elements (zero-filled) if it is smaller; never shrinks, so after the first
/// step of a given batch size no layer allocates again.
#[inline]
pub fn ensure(v: &mut impl tensor::Grow, n: usize) {
    v.grow_to(n);
}

/// Keep large freed blocks in the heap instead of returning them to the kernel: the GEMM kernels
/// allocate packing buffers on every call, and with glibc's defaults each of those is a fresh
/// `mmap` whose pages fault in again (several percent of a training step).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        // 32 MiB is the largest mmap threshold glibc accepts (larger values are refused).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Set the number of compute threads for the whole process (once, before any work), and tune
/// the allocator (see [`tune_allocator`]).
pub fn init_threads(n: usize) {
    tune_allocator();
    // At most MAX_THREADS; a pool that cannot start (or one already started) leaves rayon's
    // default pool, which still computes the same results.
    let n = if n == 0 { default_threads() } else { n.min(MAX_THREADS) };
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}

/// The most compute threads a process may ask for.
pub const MAX_THREADS: usize = 1024;

/// One thread per core the process may use, shared among the job's processes on this machine
/// (as the launcher says, [`comm::launched_local_size`]) unless the launcher already bound each
/// process to its own cores.
pub fn default_threads() -> usize {
    let usable = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let local = comm::launched_local_size();
    if local > 1 && usable >= online_cores().unwrap_or(usable) {
        (usable / local).max(1)
    } else {
        usable
    }
}

/// Make a write past the file-size limit (`ulimit -f`) fail with an error (EFBIG) that the
/// writer reports, instead of SIGXFSZ ending the process without a word.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to "ignore" has no handler to race with.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Cores online on this machine, whichever of them this process may use.
pub fn online_cores() -> Option<usize> {
    // SAFETY: sysconf only reads a system setting.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (n > 0).then_some(n as usize)
}

pub fn threads() -> usize {
    rayon::current_num_threads()
}
