//! GEMMs through cuBLASLt: bf16 operands (mixed precision) or f32 ones (full f32 products: the
//! compute type is CUBLAS_COMPUTE_32F, never the TF32 one), f32 accumulation and output, on
//! row-major matrices as the CPU ops store them. cuBLASLt is column-major, so a row-major
//! `C [m, n] = op(A) op(B)` is computed as the column-major `Cᵀ [n, m] = op(B)ᵀ op(A)ᵀ`: the same
//! memory, operands swapped, no copy. The bf16 operands come from kernels/cast.cu.

use super::CudaDevice;
use cudarc::cublaslt::{result, sys, MatmulShared};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use std::ffi::c_void;

/// One product `C [m, n] = alpha · op(A) op(B) + beta · C`, row-major: A is `[m, k]` (or `[k, m]`
/// with `a_trans`), B is `[k, n]` (or `[n, k]` with `b_trans`, as a Linear's weight).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_trans: bool,
    pub b_trans: bool,
    pub alpha: f32,
    pub beta: f32,
}

fn ok(r: Result<(), result::CublasError>, what: &str) -> Result<(), String> {
    r.map_err(|e| format!("cuBLASLt {what}: {e}"))
}

/// A column-major layout of `rows × cols` with leading dimension `ld` (destroyed on drop).
struct Layout(sys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(ty: sys::cudaDataType, rows: usize, cols: usize, ld: usize) -> Result<Layout, String> {
        result::create_matrix_layout(ty, rows as u64, cols as u64, ld as i64)
            .map(Layout)
            .map_err(|e| format!("cuBLASLt layout: {e}"))
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by create_matrix_layout, destroyed once.
        let _ = unsafe { result::destroy_matrix_layout(self.0) };
    }
}

struct Desc(sys::cublasLtMatmulDesc_t);

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by create_matmul_desc, destroyed once.
        let _ = unsafe { result::destroy_matmul_desc(self.0) };
    }
}

struct Pref(sys::cublasLtMatmulPreference_t);

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by create_matmul_pref, destroyed once.
        let _ = unsafe { result::destroy_matmul_pref(self.0) };
    }
}

/// The operands of one product on the device: bf16 bits (kernels/cast.cu's `cast_f32_to_bf16`)
/// or f32.
#[derive(Clone, Copy)]
pub enum Data<'a> {
    Bf16(&'a CudaSlice<u16>, &'a CudaSlice<u16>),
    F32(&'a CudaSlice<f32>, &'a CudaSlice<f32>),
}

/// `g` on `data` into f32 `c`, on the device's stream, with its cuBLASLt workspace.
pub fn gemm(dev: &CudaDevice, g: Gemm, data: Data<'_>, c: &mut CudaSlice<f32>) -> Result<(), String> {
    let Gemm { m, n, k, a_trans, b_trans, alpha, beta } = g;
    let (la, lb) = match data {
        Data::Bf16(a, b) => (a.len(), b.len()),
        Data::F32(a, b) => (a.len(), b.len()),
    };
    if la < m * k || lb < k * n || c.len() < m * n {
        return Err(format!("gemm [{m}, {k}] x [{k}, {n}]: operand too small"));
    }
    let ty = match data {
        Data::Bf16(..) => sys::cudaDataType_t::CUDA_R_16BF,
        Data::F32(..) => sys::cudaDataType_t::CUDA_R_32F,
    };
    // Column-major: first operand op(B)ᵀ [n, k], second op(A)ᵀ [k, m], result [n, m] (ld n).
    let first = if b_trans { Layout::new(ty, k, n, k)? } else { Layout::new(ty, n, k, n)? };
    let second = if a_trans { Layout::new(ty, m, k, m)? } else { Layout::new(ty, k, m, k)? };
    let out = Layout::new(sys::cudaDataType_t::CUDA_R_32F, n, m, n)?;
    let desc = Desc(
        result::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType_t::CUDA_R_32F)
            .map_err(|e| format!("cuBLASLt matmul desc: {e}"))?,
    );
    let set_op = |attr, t: bool| -> Result<(), String> {
        // cublasOperation_t, a C enum: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1.
        let op: i32 = t as i32;
        // SAFETY: a live descriptor; the attribute's value is a cublasOperation_t (an int).
        ok(
            unsafe {
                result::set_matmul_desc_attribute(
                    desc.0,
                    attr,
                    &op as *const _ as *const c_void,
                    std::mem::size_of::<i32>(),
                )
            },
            "transpose",
        )
    };
    set_op(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, b_trans)?;
    set_op(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, a_trans)?;
    let pref = Pref(result::create_matmul_pref().map_err(|e| format!("cuBLASLt preference: {e}"))?);
    let ws_size = dev.workspace.len();
    // SAFETY: a live preference; the value is a size_t.
    ok(
        unsafe {
            result::set_matmul_pref_attribute(
                pref.0,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws_size as *const usize as *const c_void,
                std::mem::size_of::<usize>(),
            )
        },
        "workspace size",
    )?;
    let handle = *dev.blaslt.handle();
    // SAFETY: every descriptor is live and describes the buffers passed below (sizes checked).
    unsafe {
        let heur = result::get_matmul_algo_heuristic(handle, desc.0, first.0, second.0, out.0, out.0, pref.0)
            .map_err(|e| format!("cuBLASLt heuristic for [{m}, {k}] x [{k}, {n}]: {e}"))?;
        let stream = &dev.stream;
        let ((pa, _ra), (pb, _rb)) = match data {
            Data::Bf16(a, b) => (b.device_ptr(stream), a.device_ptr(stream)),
            Data::F32(a, b) => (b.device_ptr(stream), a.device_ptr(stream)),
        };
        let (pc, _rc) = c.device_ptr_mut(stream);
        let (pw, _rw) = dev.workspace.device_ptr(stream);
        ok(
            result::matmul(
                handle,
                desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                pa as *const c_void,
                first.0,
                pb as *const c_void,
                second.0,
                pc as *const c_void,
                out.0,
                pc as *mut c_void,
                out.0,
                &heur.algo,
                pw as *mut c_void,
                ws_size,
                stream.cu_stream() as *mut _,
            ),
            "matmul",
        )
    }
}
