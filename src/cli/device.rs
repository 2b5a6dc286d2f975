//! `--device cpu|cuda[:N]`: where a command computes. The value parser checks CUDA's libraries
//! when `cuda` is asked for (engine::cuda::probe, before any CUDA call), so a machine without a
//! driver gets clap's usage error naming the missing library and the fix, instead of a panic
//! later; a binary built without the `cuda` feature says how to rebuild.
//!
//! Used by `mocov3 pretrain --device`.

/// The device a command runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A GPU, by its CUDA ordinal.
    Cuda(usize),
}

/// Parse `cpu`, `cuda` (GPU 0) or `cuda:N`; `cuda` only where the CUDA libraries load.
pub fn parse(s: &str) -> Result<Device, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.split_once(':') {
        None if s.eq_ignore_ascii_case("cuda") => 0,
        Some((d, n)) if d.eq_ignore_ascii_case("cuda") => {
            n.parse::<usize>().map_err(|_| format!("`{s}`: the GPU ordinal after `cuda:` must be a number"))?
        }
        _ => return Err(format!("`{s}`: the device is `cpu`, `cuda` or `cuda:N`")),
    };
    cuda_available()?;
    Ok(Device::Cuda(ordinal))
}

#[cfg(feature = "cuda")]
fn cuda_available() -> Result<(), String> {
    mocov3::engine::cuda::probe()
}

#[cfg(not(feature = "cuda"))]
fn cuda_available() -> Result<(), String> {
    Err("this mocov3 was built without CUDA: rebuild it with `cargo build --release --features cuda` \
         (needs no CUDA toolkit; the GPU machine needs the NVIDIA driver and the CUDA 13 libraries)"
        .to_string())
}
