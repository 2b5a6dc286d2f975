//! The kernel sources and their compilation with NVRTC. Each file of `kernels/` is one program,
//! compiled with the prelude `kernels/common.cuh` in front (so NVRTC needs no include path): for
//! a real architecture (`sm_90`: a CUBIN, from `nvrtcGetCUBIN`) when the device is known, or a
//! virtual one (`compute_90`: PTX, which the driver compiles for whatever GPU it finds, the
//! fallback for a GPU newer than the CUBIN). NVRTC runs on the CPU and needs no GPU or driver, so
//! CI compiles every kernel for both targets (`tests/cuda_kernels.rs`).

use cudarc::nvrtc::{result, sys};
use std::ffi::{CStr, CString};

/// The prelude every kernel file is compiled with: types, launch geometry, block reductions.
pub const PRELUDE: &str = include_str!("kernels/common.cuh");

/// Every kernel file, by name: one per CPU ops file of `engine/ops/` (same op names, same
/// semantics and shape comments), plus the bf16 casts the GEMMs need.
pub const KERNEL_FILES: &[(&str, &str)] = &[
    ("act.cu", include_str!("kernels/act.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    ("cast.cu", include_str!("kernels/cast.cu")),
    ("conv.cu", include_str!("kernels/conv.cu")),
    ("loss.cu", include_str!("kernels/loss.cu")),
    ("matmul.cu", include_str!("kernels/matmul.cu")),
    ("norm.cu", include_str!("kernels/norm.cu")),
    ("optim.cu", include_str!("kernels/optim.cu")),
    ("pool.cu", include_str!("kernels/pool.cu")),
    ("reduce.cu", include_str!("kernels/reduce.cu")),
];

/// What NVRTC is asked to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Machine code for one architecture, `sm_XY` (XY = 10·major + minor), as a CUBIN.
    Cubin(u32),
    /// PTX for the virtual architecture `compute_XY`, JIT-compiled by the driver.
    Ptx(u32),
}

impl Target {
    /// NVRTC's `--gpu-architecture` value.
    pub fn arch(self) -> String {
        match self {
            Target::Cubin(a) => format!("sm_{a}"),
            Target::Ptx(a) => format!("compute_{a}"),
        }
    }
}

/// A compiled program: the CUBIN or the PTX (NUL-terminated, as the driver loads it), and
/// NVRTC's log (empty when it had nothing to say).
pub struct Compiled {
    pub image: Vec<u8>,
    pub log: String,
}

/// The full source NVRTC compiles for a kernel file: the prelude, then the file (a `#line`
/// directive makes NVRTC's messages name the file and its own line numbers).
pub fn program_source(file: &str, src: &str) -> String {
    format!("{PRELUDE}\n#line 1 \"{file}\"\n{src}")
}

/// The `extern "C" __global__` kernels a source defines, in order of appearance.
pub fn kernel_names(src: &str) -> Vec<&str> {
    let key = "__global__ void ";
    let mut names = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find(key) {
        rest = &rest[at + key.len()..];
        let end = rest.find('(').unwrap_or(0);
        names.push(rest[..end].trim());
    }
    names
}

/// The options every compile uses besides the architecture.
pub const OPTIONS: &[&str] = &["--std=c++17"];

/// Compile one kernel file for `target`. Errors carry NVRTC's log. The caller must have checked
/// that libnvrtc is present ([`super::probe_nvrtc`]): cudarc panics on a missing library.
pub fn compile(file: &str, src: &str, target: Target) -> Result<Compiled, String> {
    let source = CString::new(program_source(file, src)).map_err(|_| format!("{file}: NUL byte in the source"))?;
    let name = CString::new(file).map_err(|_| format!("{file}: NUL byte in the name"))?;
    let prog =
        result::create_program(&source, Some(&name)).map_err(|e| format!("{file}: nvrtcCreateProgram: {e:?}"))?;
    let mut options: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture={}", target.arch()));
    // SAFETY: `prog` was created above and is destroyed once, below; `source` and `name` outlive it.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = read_log(prog);
        let image = match compiled {
            Err(e) => Err(format!("{file} for {}: {e:?}\n{log}", target.arch())),
            Ok(()) => match target {
                Target::Cubin(_) => cubin(prog).map_err(|e| format!("{file}: nvrtcGetCUBIN: {e:?}")),
                Target::Ptx(_) => result::get_ptx(prog)
                    .map(|p| p.iter().map(|&c| c as u8).collect())
                    .map_err(|e| format!("{file}: nvrtcGetPTX: {e:?}")),
            },
        };
        let _ = result::destroy_program(prog);
        image.map(|image| Compiled { image, log })
    };
    out
}

/// # Safety
/// `prog` is a live program.
unsafe fn read_log(prog: sys::nvrtcProgram) -> String {
    match result::get_program_log(prog) {
        Ok(raw) if !raw.is_empty() => CStr::from_ptr(raw.as_ptr()).to_string_lossy().trim().to_string(),
        _ => String::new(),
    }
}

/// # Safety
/// `prog` is a live program, compiled for a real architecture.
unsafe fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, result::NvrtcError> {
    let mut size = 0usize;
    sys::nvrtcGetCUBINSize(prog, &mut size).result()?;
    let mut image = vec![0u8; size];
    sys::nvrtcGetCUBIN(prog, image.as_mut_ptr().cast()).result()?;
    Ok(image)
}

/// NVRTC's version, (major, minor).
pub fn version() -> Result<(i32, i32), String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-parameters; the caller has checked that libnvrtc is present.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| format!("nvrtcVersion: {e:?}"))?;
    Ok((major, minor))
}
