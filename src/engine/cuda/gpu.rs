//! [`Gpu`]: where the CUDA launchers run. Either a real GPU ([`CudaDevice`]: its stream, cuBLASLt
//! and the NVRTC-compiled kernels) or the emulated one ([`Emulator`]: the same kernels compiled
//! for the CPU, buffers in host memory, GEMMs by a plain loop on the same bf16-rounded operands).
//! The launchers of [`super::launch`] are written once against this type, so the emulated GPU
//! checks their arguments and geometry where no GPU exists (tests/cuda_ops.rs runs on both).
//!
//! Buffers are [`DevBuf`]s; a kernel's arguments are [`Arg`]s (device addresses and scalars, in
//! the kernel's order). One stream per GPU: every launch, copy and GEMM is ordered on it, so
//! cudarc's cross-stream event tracking is turned off.

use super::emu::Emulator;
use super::gemm::Gemm;
use super::CudaDevice;
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};

/// A GPU the launchers run on.
pub struct Gpu {
    exec: Exec,
    /// Threads per block of every launch: 256 on a GPU; 64 emulated (each CUDA thread is a host
    /// thread there, and two warps still cross every block reduction's warp boundary). Every
    /// kernel takes any multiple of 32.
    pub block: u32,
}

enum Exec {
    Real(Box<CudaDevice>),
    Emu(Emulator),
}

/// Values of type `T` on a [`Gpu`]: device memory, or host memory on the emulated GPU.
pub enum DevBuf<T> {
    Dev(CudaSlice<T>),
    Host(Vec<T>),
}

/// The element types a buffer holds: f32 values, bf16 bits, f64 partial sums, u32 labels and
/// indices.
pub trait Elem: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {}
impl Elem for f32 {}
impl Elem for f64 {}
impl Elem for u16 {}
impl Elem for u32 {}

/// One kernel argument: a buffer's address (0 for a null pointer) or a scalar.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    U64(u64),
    F32(f32),
    F64(f64),
}

impl From<i32> for Arg {
    fn from(v: i32) -> Arg {
        Arg::I32(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Arg {
        Arg::U64(v)
    }
}
impl From<f32> for Arg {
    fn from(v: f32) -> Arg {
        Arg::F32(v)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Arg {
        Arg::F64(v)
    }
}

impl Arg {
    /// The value in an 8-byte slot, as the emulator passes it (little-endian, low bytes).
    fn slot(self) -> u64 {
        match self {
            Arg::Ptr(p) | Arg::U64(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::F32(v) => v.to_bits() as u64,
            Arg::F64(v) => v.to_bits(),
        }
    }
}

fn cuda<T>(r: Result<T, cudarc::driver::DriverError>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("CUDA {what}: {e}"))
}

/// An empty buffer, valid on any GPU (a workspace before its first use).
impl<T> Default for DevBuf<T> {
    fn default() -> Self {
        DevBuf::Host(Vec::new())
    }
}

impl<T: Elem> DevBuf<T> {
    pub fn len(&self) -> usize {
        match self {
            DevBuf::Dev(s) => s.len(),
            DevBuf::Host(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address a kernel reads this buffer at.
    pub fn arg(&self, gpu: &Gpu) -> Arg {
        match (self, &gpu.exec) {
            (DevBuf::Dev(s), Exec::Real(d)) => Arg::Ptr(s.device_ptr(&d.stream).0),
            (DevBuf::Host(v), _) => Arg::Ptr(v.as_ptr() as u64),
            (DevBuf::Dev(_), Exec::Emu(_)) => unreachable!("a device buffer on the emulated GPU"),
        }
    }

    /// The address a kernel writes this buffer at.
    pub fn arg_mut(&mut self, gpu: &Gpu) -> Arg {
        match self {
            DevBuf::Host(v) => Arg::Ptr(v.as_mut_ptr() as u64),
            d => d.arg(gpu),
        }
    }

    /// The host buffer of the emulated GPU.
    fn host(&self) -> &[T] {
        match self {
            DevBuf::Host(v) => v,
            DevBuf::Dev(_) => unreachable!("a device buffer on the emulated GPU"),
        }
    }

    fn host_mut(&mut self) -> &mut [T] {
        match self {
            DevBuf::Host(v) => v,
            DevBuf::Dev(_) => unreachable!("a device buffer on the emulated GPU"),
        }
    }
}

impl Gpu {
    /// GPU `ordinal` (probes the libraries first; see [`CudaDevice::new`]).
    pub fn new(ordinal: usize) -> Result<Gpu, String> {
        let dev = CudaDevice::new(ordinal)?;
        // SAFETY: called before any buffer exists; everything runs on the device's one stream.
        unsafe { dev.ctx.disable_event_tracking() };
        Ok(Gpu { exec: Exec::Real(Box::new(dev)), block: 256 })
    }

    /// The emulated GPU (see [`super::emu`]): needs a C++20 compiler, no CUDA library.
    pub fn emulated() -> Result<Gpu, String> {
        Ok(Gpu { exec: Exec::Emu(Emulator::new()?), block: 64 })
    }

    pub fn is_emulated(&self) -> bool {
        matches!(self.exec, Exec::Emu(_))
    }

    /// What this is, for messages: the GPU's compute capability, or "emulated".
    pub fn describe(&self) -> String {
        match &self.exec {
            Exec::Real(d) => format!("CUDA GPU, compute capability {}.{}", d.arch.0, d.arch.1),
            Exec::Emu(_) => "emulated GPU (the kernels compiled for the CPU)".to_string(),
        }
    }

    /// The real device, for what only it has (cuBLASLt, NCCL).
    pub fn device(&self) -> Option<&CudaDevice> {
        match &self.exec {
            Exec::Real(d) => Some(d),
            Exec::Emu(_) => None,
        }
    }

    /// `n` zeros.
    pub fn zeros<T: Elem>(&self, n: usize) -> Result<DevBuf<T>, String> {
        match &self.exec {
            Exec::Real(d) => Ok(DevBuf::Dev(cuda(d.stream.alloc_zeros::<T>(n), "alloc")?)),
            Exec::Emu(_) => Ok(DevBuf::Host(vec![T::default(); n])),
        }
    }

    /// A copy of host values.
    pub fn upload<T: Elem>(&self, v: &[T]) -> Result<DevBuf<T>, String> {
        match &self.exec {
            Exec::Real(d) => Ok(DevBuf::Dev(cuda(d.stream.clone_htod(v), "copy to the device")?)),
            Exec::Emu(_) => Ok(DevBuf::Host(v.to_vec())),
        }
    }

    /// Overwrite the first `v.len()` values of `dst` with host values.
    pub fn write<T: Elem>(&self, dst: &mut DevBuf<T>, v: &[T]) -> Result<(), String> {
        if dst.len() < v.len() {
            return Err(format!("copy to the device: {} values into a buffer of {}", v.len(), dst.len()));
        }
        match (&self.exec, dst) {
            (Exec::Real(d), DevBuf::Dev(s)) => {
                let mut view = s.slice_mut(..v.len());
                cuda(d.stream.memcpy_htod(v, &mut view), "copy to the device")
            }
            (_, DevBuf::Host(h)) => {
                h[..v.len()].copy_from_slice(v);
                Ok(())
            }
            (Exec::Emu(_), DevBuf::Dev(_)) => unreachable!("a device buffer on the emulated GPU"),
        }
    }

    /// A host copy of the values (waits for the work queued on them).
    pub fn download<T: Elem>(&self, b: &DevBuf<T>) -> Result<Vec<T>, String> {
        match (&self.exec, b) {
            (Exec::Real(d), DevBuf::Dev(s)) => cuda(d.stream.clone_dtoh(s), "copy to the host"),
            (_, DevBuf::Host(h)) => Ok(h.clone()),
            (Exec::Emu(_), DevBuf::Dev(_)) => unreachable!("a device buffer on the emulated GPU"),
        }
    }

    /// `dst[..src.len()] = src`, on the device.
    pub fn copy<T: Elem>(&self, dst: &mut DevBuf<T>, src: &DevBuf<T>) -> Result<(), String> {
        if dst.len() < src.len() {
            return Err(format!("device copy: {} values into a buffer of {}", src.len(), dst.len()));
        }
        match (&self.exec, dst, src) {
            (Exec::Real(d), DevBuf::Dev(a), DevBuf::Dev(b)) => {
                let mut view = a.slice_mut(..b.len());
                cuda(d.stream.memcpy_dtod(b, &mut view), "device copy")
            }
            (_, DevBuf::Host(a), DevBuf::Host(b)) => {
                a[..b.len()].copy_from_slice(b);
                Ok(())
            }
            _ => unreachable!("buffers of two kinds of GPU"),
        }
    }

    /// Wait for everything queued on the stream.
    pub fn sync(&self) -> Result<(), String> {
        match &self.exec {
            Exec::Real(d) => cuda(d.stream.synchronize(), "synchronize"),
            Exec::Emu(_) => Ok(()),
        }
    }

    /// Run kernel `name` on `grid` blocks of [`Gpu::block`] threads with `shared` bytes of dynamic
    /// shared memory.
    ///
    /// # Safety
    /// `args` must be the kernel's parameters in order, with the C types of its signature, and
    /// every buffer address must stay valid, and large enough for what the kernel touches at this
    /// geometry, until the stream has run it.
    pub unsafe fn launch(&self, name: &str, grid: (u32, u32), shared: u32, args: &[Arg]) -> Result<(), String> {
        if grid.0 == 0 || grid.1 == 0 {
            return Ok(());
        }
        match &self.exec {
            Exec::Real(d) => {
                let f = d.function(name)?;
                let mut b = d.stream.launch_builder(f);
                for a in args {
                    match a {
                        Arg::Ptr(v) | Arg::U64(v) => b.arg(v),
                        Arg::I32(v) => b.arg(v),
                        Arg::F32(v) => b.arg(v),
                        Arg::F64(v) => b.arg(v),
                    };
                }
                let cfg = LaunchConfig {
                    grid_dim: (grid.0, grid.1, 1),
                    block_dim: (self.block, 1, 1),
                    shared_mem_bytes: shared,
                };
                b.launch(cfg).map(|_| ()).map_err(|e| format!("CUDA kernel {name}: {e}"))
            }
            Exec::Emu(e) => {
                let mut slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
                e.launch(name, grid, self.block, shared, &mut slots)
            }
        }
    }

    /// `g` on f32 `c` from the operands: bf16 bits (the mixed-precision path) or f32 (exact
    /// f32 products, TF32 off). cuBLASLt on a GPU; on the emulated GPU a loop over the same
    /// values in f32 (the reference for the GEMM's semantics, not for its rounding order).
    pub fn gemm(&self, g: Gemm, ops: Operands<'_>, c: &mut DevBuf<f32>) -> Result<(), String> {
        let Gemm { m, n, k, .. } = g;
        let (la, lb) = match ops {
            Operands::Bf16(a, b) => (a.len(), b.len()),
            Operands::F32(a, b) => (a.len(), b.len()),
        };
        if la < m * k || lb < k * n || c.len() < m * n {
            return Err(format!("gemm [{m}, {k}] x [{k}, {n}]: operand too small"));
        }
        match (&self.exec, ops, c) {
            (Exec::Real(d), Operands::Bf16(DevBuf::Dev(a), DevBuf::Dev(b)), DevBuf::Dev(c)) => {
                super::gemm::gemm(d, g, super::gemm::Data::Bf16(a, b), c)
            }
            (Exec::Real(d), Operands::F32(DevBuf::Dev(a), DevBuf::Dev(b)), DevBuf::Dev(c)) => {
                super::gemm::gemm(d, g, super::gemm::Data::F32(a, b), c)
            }
            (Exec::Emu(_), ops, c) => {
                let bf = |v: &[u16]| v.iter().map(|&x| f32::from_bits((x as u32) << 16)).collect::<Vec<f32>>();
                let (a, b) = match ops {
                    Operands::Bf16(a, b) => (bf(a.host()), bf(b.host())),
                    Operands::F32(a, b) => (a.host().to_vec(), b.host().to_vec()),
                };
                emulated_gemm(g, &a, &b, c.host_mut());
                Ok(())
            }
            _ => unreachable!("buffers of two kinds of GPU"),
        }
    }
}

/// The two operands of a [`Gemm`].
#[derive(Clone, Copy)]
pub enum Operands<'a> {
    Bf16(&'a DevBuf<u16>, &'a DevBuf<u16>),
    F32(&'a DevBuf<f32>, &'a DevBuf<f32>),
}

/// `c = alpha · op(a) op(b) + beta · c`, row-major, each dot product in k order (f32).
fn emulated_gemm(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let Gemm { m, n, k, a_trans, b_trans, alpha, beta } = g;
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in 0..k {
                let x = if a_trans { a[p * m + i] } else { a[i * k + p] };
                let y = if b_trans { b[j * k + p] } else { b[p * n + j] };
                s += x * y;
            }
            let o = &mut c[i * n + j];
            *o = alpha * s + if beta == 0.0 { 0.0 } else { beta * *o };
        }
    }
}
