//! The one owned buffer type: parameters, gradients, optimiser state, activations and
//! workspaces are all [`Tensor`]s, flat runs of f32 whose [`Storage`] says where they live.
//!
//! The CPU is the only storage today. A device variant (CUDA memory) is added to [`Storage`];
//! the ops then receive tensors on that device, and host access ([`std::ops::Deref`] to
//! `[f32]`, used by checkpoints, metrics and the tests) becomes an explicit copy
//! ([`Tensor::to_vec`]) for it. Shapes belong to the layer that owns a tensor (a `Param` keeps
//! its shape beside its values), as in llm.c.

use std::ops::{Deref, DerefMut};

/// Where a tensor's values live.
#[derive(Clone, PartialEq)]
pub enum Storage {
    /// Host memory.
    Cpu(Vec<f32>),
}

/// The device a tensor lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
}

/// An owned, growable buffer of f32 values on a device.
#[derive(Clone, PartialEq, Default)]
pub struct Tensor {
    storage: Storage,
}

impl Default for Storage {
    fn default() -> Self {
        Storage::Cpu(Vec::new())
    }
}

impl Tensor {
    /// An empty tensor on the CPU (grown later with [`Tensor::ensure`]).
    pub fn new() -> Tensor {
        Tensor::default()
    }

    /// `n` zeros on the CPU.
    pub fn zeros(n: usize) -> Tensor {
        Tensor { storage: Storage::Cpu(vec![0.0; n]) }
    }

    /// `n` copies of `v` on the CPU.
    pub fn full(n: usize, v: f32) -> Tensor {
        Tensor { storage: Storage::Cpu(vec![v; n]) }
    }

    pub fn device(&self) -> Device {
        match self.storage {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Grow to `n` elements (zero-filled) if smaller; never shrinks, so after the first step of
    /// a given batch size no layer allocates again.
    pub fn ensure(&mut self, n: usize) {
        match &mut self.storage {
            Storage::Cpu(v) => {
                if v.len() < n {
                    v.resize(n, 0.0);
                }
            }
        }
    }

    /// Set every value to `v`.
    pub fn fill(&mut self, v: f32) {
        self.as_mut_slice().fill(v);
    }

    /// Replace the values (and length) with `v`'s.
    pub fn assign(&mut self, v: Vec<f32>) {
        self.storage = Storage::Cpu(v);
    }

    /// A host copy of the values.
    pub fn to_vec(&self) -> Vec<f32> {
        self.as_slice().to_vec()
    }

    /// The values as a host vector (a copy off a device).
    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Cpu(v) => v,
        }
    }

    /// Host view of the values.
    pub fn as_slice(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(v) => v,
        }
    }

    /// Mutable host view of the values.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(v) => v,
        }
    }
}

impl Deref for Tensor {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}

impl DerefMut for Tensor {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.as_mut_slice()
    }
}

impl From<Vec<f32>> for Tensor {
    fn from(v: Vec<f32>) -> Tensor {
        Tensor { storage: Storage::Cpu(v) }
    }
}

impl From<Tensor> for Vec<f32> {
    fn from(t: Tensor) -> Vec<f32> {
        t.into_vec()
    }
}

impl FromIterator<f32> for Tensor {
    fn from_iter<I: IntoIterator<Item = f32>>(it: I) -> Tensor {
        Tensor::from(it.into_iter().collect::<Vec<f32>>())
    }
}

impl PartialEq<Vec<f32>> for Tensor {
    fn eq(&self, o: &Vec<f32>) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl PartialEq<[f32]> for Tensor {
    fn eq(&self, o: &[f32]) -> bool {
        self.as_slice() == o
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}{:?}", self.device(), self.as_slice())
    }
}

impl<'a> IntoIterator for &'a Tensor {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl<'a> IntoIterator for &'a mut Tensor {
    type Item = &'a mut f32;
    type IntoIter = std::slice::IterMut<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_mut_slice().iter_mut()
    }
}

/// Growable buffers: [`Tensor`] and, for host-only code, `Vec<f32>`.
pub trait Grow {
    fn grow_to(&mut self, n: usize);
}

impl Grow for Tensor {
    fn grow_to(&mut self, n: usize) {
        self.ensure(n);
    }
}

impl Grow for Vec<f32> {
    fn grow_to(&mut self, n: usize) {
        if self.len() < n {
            self.resize(n, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_grows_without_shrinking_and_reads_like_a_slice() {
        let mut t = Tensor::new();
        assert_eq!(t.len(), 0);
        t.ensure(5);
        t[2] = 3.0;
        t.ensure(3);
        assert_eq!(t.len(), 5);
        assert_eq!(t, vec![0.0, 0.0, 3.0, 0.0, 0.0]);
        assert_eq!(t.device(), Device::Cpu);
        assert_eq!(Tensor::from(vec![1.0, 2.0]).into_vec(), vec![1.0, 2.0]);
    }
}
