//! Interoperability with the official PyTorch code: reading `torch.save` checkpoints (zip and
//! legacy formats) without running any pickle code.

pub mod convert;
pub mod official;
pub mod pickle;
pub mod step;
pub mod torchfile;
pub mod writer;
