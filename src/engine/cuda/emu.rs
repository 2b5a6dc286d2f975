//! The emulated GPU: every kernel of `kernels/` compiled by the system C++ compiler against
//! `emu.h` (a CPU stand-in for the device runtime: one host thread per CUDA thread,
//! `__syncthreads` a barrier, shuffles through a slot array) into a shared library, and launched
//! with the same arguments and geometry as on a GPU. [`super::Gpu::emulated`] runs the whole
//! backend on it (launchers, GEMMs, buffers in host memory), so where no GPU exists the tests
//! still check every launcher's index math, argument order and geometry against the CPU ops. It
//! says nothing about GPU-only behaviour (memory model, occupancy, warp timing) or speed.
//!
//! The library is built once per kernel source and cached under `~/.cache/mocov3/cuda-emu/`
//! (`$XDG_CACHE_HOME` when set), named by a hash of the source, written to a temporary file and
//! renamed so that concurrent builds never see half a library.

use super::nvrtc;
use libloading::Library;
use std::ffi::c_void;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

const EMU_H: &str = include_str!("emu.h");
/// The stand-in's dynamic shared memory (emu.h's `emu_dynamic_shared`).
pub const SHARED_BYTES: u32 = 1 << 16;

/// The kernels, built for the CPU.
pub struct Emulator {
    lib: Library,
}

/// The C++ compilers tried, in order.
const COMPILERS: &[&str] = &["c++", "g++", "clang++"];

fn compiler() -> Option<&'static str> {
    COMPILERS
        .iter()
        .copied()
        .find(|c| Command::new(c).arg("--version").output().map(|o| o.status.success()).unwrap_or(false))
}

/// One translation unit: each kernel file (with its prelude) in a namespace of its own, the
/// kernels keeping their C names (unique across files), one `emu_<kernel>` export per kernel.
fn translation_unit() -> String {
    let mut cpp = format!("{EMU_H}\n");
    for &(file, src) in nvrtc::KERNEL_FILES {
        let ns = file.trim_end_matches(".cu");
        let body = nvrtc::program_source(file, src)
            .replace("extern __shared__ float smem[];", "float* smem = (float*)emu_dynamic_shared;");
        cpp.push_str(&format!("namespace {ns} {{\n{body}\n}}\n"));
        for n in nvrtc::kernel_names(src) {
            cpp.push_str(&format!(
                "extern \"C\" void emu_{n}(unsigned gx, unsigned gy, unsigned bx, void** a) {{ emu_launch({ns}::{n}, gx, gy, bx, a); }}\n"
            ));
        }
    }
    cpp
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mocov3").join("cuda-emu")
}

impl Emulator {
    /// Build (or find in the cache) and load the kernels' library. Needs a C++20 compiler
    /// (`c++`, `g++` or `clang++`); the error says so when none is found.
    pub fn new() -> Result<Emulator, String> {
        let cpp = translation_unit();
        let hash = crate::engine::crc::crc32(cpp.as_bytes());
        let dir = cache_dir();
        let so = dir.join(format!("kernels-{hash:08x}.so"));
        if !so.exists() {
            let cxx = compiler().ok_or_else(|| {
                format!("the emulated GPU needs a C++20 compiler ({}); install g++ or clang", COMPILERS.join(", "))
            })?;
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let tmp = dir.join(format!("kernels-{hash:08x}.{}.tmp", std::process::id()));
            let src = tmp.with_extension("cpp");
            std::fs::write(&src, &cpp).map_err(|e| format!("{}: {e}", src.display()))?;
            let out = Command::new(cxx)
                .args(["-x", "c++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w", "-o"])
                .arg(&tmp)
                .arg(&src)
                .output()
                .map_err(|e| format!("{cxx}: {e}"))?;
            let _ = std::fs::remove_file(&src);
            if !out.status.success() {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!(
                    "{cxx} could not build the emulated kernels:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::fs::rename(&tmp, &so).map_err(|e| format!("{}: {e}", so.display()))?;
        }
        // SAFETY: our own library, with no initialisers besides the C++ runtime's.
        let lib = unsafe { Library::new(&so) }.map_err(|e| format!("{}: {e}", so.display()))?;
        Ok(Emulator { lib })
    }

    /// Run kernel `name` on a `grid` of `block`-thread blocks. `args` are the kernel's arguments
    /// as CUDA takes them: each an 8-byte slot holding the value (a pointer is a host address).
    /// Launches run one at a time: the stand-in's grid, barrier and shared memory are
    /// process-wide.
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32),
        block: u32,
        shared: u32,
        args: &mut [u64],
    ) -> Result<(), String> {
        if shared > SHARED_BYTES {
            return Err(format!("kernel {name}: {shared} bytes of shared memory, the emulator has {SHARED_BYTES}"));
        }
        if block == 0 || !block.is_multiple_of(32) || block > 1024 {
            return Err(format!("kernel {name}: a block of {block} threads (a multiple of 32 up to 1024 is needed)"));
        }
        static ONE: Mutex<()> = Mutex::new(());
        let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let mut ptrs: Vec<*mut c_void> = args.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
        // SAFETY: emu_<name> is generated with this signature; the caller passes the kernel's
        // arguments in its order with live buffers.
        unsafe {
            let f = self
                .lib
                .get::<unsafe extern "C" fn(u32, u32, u32, *mut *mut c_void)>(format!("emu_{name}\0").as_bytes())
                .map_err(|_| format!("no CUDA kernel named {name}"))?;
            f(grid.0, grid.1, block, ptrs.as_mut_ptr());
        }
        Ok(())
    }
}
