//! The CUDA backend (cargo feature `cuda`), on `cudarc` with every library opened at run time:
//! a build needs no CUDA toolkit, and a binary built with the feature starts on any machine.
//!
//! Before the first CUDA call, [`probe`] checks that each library the backend uses can be
//! loaded (cudarc's own loader panics when one is missing): the driver (`libcuda.so.1`), NVRTC,
//! cuBLAS and cuBLASLt (CUDA 13, `*.so.13`), and for several GPUs NCCL (`libnccl.so.2`, opened by
//! [`nccl`] itself since cudarc does not try that name). Its error names every missing library
//! and how to get it. [`CudaDevice::new`] then creates the context, the stream and the cuBLASLt
//! handle, and loads every kernel of `kernels/` (compiled by [`nvrtc`] for the device's
//! architecture).
//!
//! Kernels mirror the CPU ops of `engine/ops/` one to one (same names, shapes and semantics;
//! see each file's shape comments), and every reduction in them runs in an order fixed by the
//! shape (block trees and fixed row chunks, no float atomics), as on the CPU.

pub mod emu;
pub mod gemm;
pub mod gpu;
pub mod launch;
pub mod nccl;
pub mod nvrtc;

pub use gpu::{Arg, DevBuf, Gpu};
pub use launch::{MatmulWork, Precision};

/// f32 values on a GPU.
pub type CudaTensor = DevBuf<f32>;

use cudarc::cublaslt::CudaBlasLT;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::Arc;

/// One library the backend loads at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    Driver,
    Nvrtc,
    Cublas,
    CublasLt,
    Nccl,
}

impl Lib {
    /// The file the dynamic loader has to find.
    pub fn soname(self) -> &'static str {
        match self {
            Lib::Driver => "libcuda.so.1",
            Lib::Nvrtc => "libnvrtc.so.13",
            Lib::Cublas => "libcublas.so.13",
            Lib::CublasLt => "libcublasLt.so.13",
            Lib::Nccl => "libnccl.so.2",
        }
    }

    /// How to get it.
    pub fn fix(self) -> &'static str {
        match self {
            Lib::Driver => {
                "the NVIDIA driver's library; install the NVIDIA driver (R580 or newer for CUDA 13) on a \
                 machine with an NVIDIA GPU, or run with --device cpu"
            }
            Lib::Nvrtc | Lib::Cublas | Lib::CublasLt => {
                "CUDA 13 libraries: put the directory holding them on LD_LIBRARY_PATH (e.g. a PyTorch \
                 install's site-packages/nvidia/cu13/lib, or the PyPI wheels nvidia-cuda-nvrtc and \
                 nvidia-cublas 13.x), or install the CUDA 13 toolkit"
            }
            Lib::Nccl => {
                "NCCL 2 for CUDA 13: pip install nvidia-nccl-cu13 and put its site-packages/nvidia/nccl/lib \
                 on LD_LIBRARY_PATH, or install libnccl2"
            }
        }
    }

    /// Whether the library loads (cudarc's presence check, which only tries to open it; NCCL
    /// through [`nccl::is_present`]).
    pub fn is_present(self) -> bool {
        // SAFETY: each check only dlopens the library's candidate names.
        unsafe {
            match self {
                Lib::Driver => cudarc::driver::sys::is_culib_present(),
                Lib::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                Lib::Cublas => cudarc::cublas::sys::is_culib_present(),
                Lib::CublasLt => cudarc::cublaslt::sys::is_culib_present(),
                Lib::Nccl => nccl::is_present(),
            }
        }
    }
}

/// The libraries one GPU needs.
pub const SINGLE_GPU: &[Lib] = &[Lib::Driver, Lib::Nvrtc, Lib::Cublas, Lib::CublasLt];

/// The error for the missing ones among `libs` (None when all load): names each missing library
/// and its fix.
pub fn missing(libs: &[Lib]) -> Option<String> {
    let gone: Vec<Lib> = libs.iter().copied().filter(|l| !l.is_present()).collect();
    if gone.is_empty() {
        return None;
    }
    let names: Vec<&str> = gone.iter().map(|l| l.soname()).collect();
    let mut msg = format!("CUDA is not usable here: {} not found", names.join(", "));
    // One line per fix, naming the libraries it brings.
    let mut fixes: Vec<(&str, Vec<&str>)> = Vec::new();
    for l in &gone {
        match fixes.iter_mut().find(|(f, _)| *f == l.fix()) {
            Some((_, libs)) => libs.push(l.soname()),
            None => fixes.push((l.fix(), vec![l.soname()])),
        }
    }
    for (fix, libs) in fixes {
        msg.push_str(&format!("\n  {}: {fix}", libs.join(", ")));
    }
    Some(msg)
}

/// Check the libraries one GPU needs (driver, NVRTC, cuBLAS, cuBLASLt) before any CUDA call;
/// never panics. The error names every missing library and how to get it.
pub fn probe() -> Result<(), String> {
    missing(SINGLE_GPU).map_or(Ok(()), Err)
}

/// [`probe`] plus NCCL, for data parallelism over several GPUs.
pub fn probe_multi_gpu() -> Result<(), String> {
    let mut libs = SINGLE_GPU.to_vec();
    libs.push(Lib::Nccl);
    missing(&libs).map_or(Ok(()), Err)
}

/// NVRTC alone (compiling kernels needs no GPU).
pub fn probe_nvrtc() -> Result<(), String> {
    missing(&[Lib::Nvrtc]).map_or(Ok(()), Err)
}

/// One GPU: its context and stream, the cuBLASLt handle, and every kernel, loaded.
pub struct CudaDevice {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blaslt: CudaBlasLT,
    /// cuBLASLt's workspace (32 MiB, NVIDIA's advice for Hopper; 4 MiB before).
    pub workspace: CudaSlice<u8>,
    /// Compute capability, (major, minor).
    pub arch: (i32, i32),
    functions: HashMap<&'static str, CudaFunction>,
}

impl CudaDevice {
    /// Open GPU `ordinal`: [`probe`] first, then the context, a stream, cuBLASLt and its
    /// workspace, and every kernel file compiled by NVRTC for this GPU's architecture (a CUBIN;
    /// PTX when NVRTC cannot make one, so a GPU newer than NVRTC still runs).
    pub fn new(ordinal: usize) -> Result<CudaDevice, String> {
        probe()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("CUDA device {ordinal}: {e}"))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("CUDA device {ordinal}: {e}"))?;
        let stream = ctx.new_stream().map_err(|e| format!("CUDA stream: {e}"))?;
        let blaslt = CudaBlasLT::new(stream.clone()).map_err(|e| format!("cuBLASLt: {e}"))?;
        let ws = if major >= 9 { 32 << 20 } else { 4 << 20 };
        let workspace = stream.alloc_zeros::<u8>(ws).map_err(|e| format!("cuBLASLt workspace: {e}"))?;
        let arch = (10 * major + minor) as u32;
        let mut functions = HashMap::new();
        for &(file, src) in nvrtc::KERNEL_FILES {
            let ptx = match nvrtc::compile(file, src, nvrtc::Target::Cubin(arch)) {
                Ok(c) => Ptx::from_binary(c.image),
                Err(cubin_err) => {
                    // NVRTC older than the GPU: PTX for the GPU's virtual architecture, else for
                    // compute_90, which the driver compiles forward for any later GPU.
                    let c = nvrtc::compile(file, src, nvrtc::Target::Ptx(arch))
                        .or_else(|_| nvrtc::compile(file, src, nvrtc::Target::Ptx(arch.min(90))))
                        .map_err(|_| cubin_err)?;
                    Ptx::from_src(String::from_utf8_lossy(&c.image).trim_end_matches('\0').to_string())
                }
            };
            let module = ctx.load_module(ptx).map_err(|e| format!("loading {file}: {e}"))?;
            for name in nvrtc::kernel_names(src) {
                let f = module.load_function(name).map_err(|e| format!("{file}: kernel {name}: {e}"))?;
                functions.insert(name, f);
            }
        }
        Ok(CudaDevice { ctx, stream, blaslt, workspace, arch: (major, minor), functions })
    }

    /// The kernel `name` (one of the `extern "C"` kernels of `kernels/`).
    pub fn function(&self, name: &str) -> Result<&CudaFunction, String> {
        self.functions.get(name).ok_or_else(|| format!("no CUDA kernel named {name}"))
    }
}
