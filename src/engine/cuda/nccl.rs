//! NCCL's library. Its soname is `libnccl.so.2` (the PyPI wheel `nvidia-nccl-cu13` and the
//! Debian/NVIDIA packages ship that name; the unversioned `libnccl.so` comes only with the
//! development package), and cudarc's candidate names for "nccl" do not include it: they append
//! the CUDA major version (`libnccl.so.13`) or a fixed list (`.12`, `.11`, `.10`, `.9`, `.1`).
//! So cudarc's `nccl` module would panic on a machine that has NCCL. The backend therefore opens
//! NCCL itself, by soname, with `libloading` (the dynamic loader then searches LD_LIBRARY_PATH,
//! the runpath and the system directories as for any library), and resolves the symbols it calls
//! from that handle; cudarc's `nccl::sys` provides only the types. A process that must use
//! cudarc's own NCCL wrappers instead can put a `libnccl.so -> libnccl.so.2` link in a directory
//! on LD_LIBRARY_PATH before it starts.

use libloading::Library;
use std::ffi::c_int;
use std::sync::OnceLock;

/// The names tried, in order.
pub const NCCL_NAMES: &[&str] = &["libnccl.so.2", "libnccl.so"];

/// NCCL's library, opened once (None when no name loads).
pub fn library() -> Option<&'static Library> {
    static LIB: OnceLock<Option<Library>> = OnceLock::new();
    LIB.get_or_init(|| {
        NCCL_NAMES.iter().find_map(|name| {
            // SAFETY: loading NCCL runs its initialisers, which only set up its own state.
            unsafe { Library::new(*name) }.ok()
        })
    })
    .as_ref()
}

/// Whether NCCL can be loaded.
pub fn is_present() -> bool {
    library().is_some()
}

/// NCCL's version code (e.g. 22707 for 2.27.7), from `ncclGetVersion`.
pub fn version() -> Result<i32, String> {
    let lib = library().ok_or_else(|| format!("NCCL not found (tried {})", NCCL_NAMES.join(", ")))?;
    // SAFETY: ncclGetVersion(int*) -> ncclResult_t, as nccl.h declares it.
    unsafe {
        let f = lib
            .get::<unsafe extern "C" fn(*mut c_int) -> c_int>(b"ncclGetVersion\0")
            .map_err(|e| format!("ncclGetVersion: {e}"))?;
        let mut v: c_int = 0;
        match f(&mut v) {
            0 => Ok(v),
            code => Err(format!("ncclGetVersion failed: ncclResult_t {code}")),
        }
    }
}
