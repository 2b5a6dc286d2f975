//! Device buffers: [`CudaTensor`], a run of f32 in one GPU's memory, allocated and copied on the
//! device's stream. Host access is an explicit copy ([`CudaTensor::to_vec`]); the ops take the
//! device and tensors, as the CPU ops take slices.

use super::CudaDevice;
use cudarc::driver::CudaSlice;

/// f32 values on a GPU.
pub struct CudaTensor {
    data: CudaSlice<f32>,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("CUDA {what}: {e}")
}

impl CudaTensor {
    /// `n` zeros on `dev`.
    pub fn zeros(dev: &CudaDevice, n: usize) -> Result<CudaTensor, String> {
        Ok(CudaTensor { data: dev.stream.alloc_zeros::<f32>(n).map_err(|e| err("alloc", e))? })
    }

    /// A copy of host values on `dev`.
    pub fn from_host(dev: &CudaDevice, v: &[f32]) -> Result<CudaTensor, String> {
        Ok(CudaTensor { data: dev.stream.clone_htod(v).map_err(|e| err("copy to the device", e))? })
    }

    /// A host copy of the values (waits for the stream's work on them).
    pub fn to_vec(&self, dev: &CudaDevice) -> Result<Vec<f32>, String> {
        dev.stream.clone_dtoh(&self.data).map_err(|e| err("copy to the host", e))
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn slice(&self) -> &CudaSlice<f32> {
        &self.data
    }

    pub fn slice_mut(&mut self) -> &mut CudaSlice<f32> {
        &mut self.data
    }
}
