//! The compute engine: the ops layer (every kernel, as named forward/backward pairs), GEMM, the
//! parallel helpers under them, seeded randomness, and the communicator for collectives. This is
//! the only place that knows how compute runs (rayon + the `gemm` crate on the CPU); the layers
//! above call [`ops`] and [`comm`] and nothing below them (see ARCHITECTURE.md).

pub mod comm;
pub mod crc;
pub mod fastmath;
pub mod gemm;
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
    let n = if n == 0 { default_threads() } else { n };
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}

/// One thread per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn threads() -> usize {
    rayon::current_num_threads()
}
