//! Models composed from the layers of `nn`: the ViT backbone and the MLP heads of MoCo v3.

pub mod block;
pub mod heads;
pub mod resnet;
pub mod vit;
