//! Models composed from the layers of `nn`: the ViT and ResNet backbones (behind
//! `backbone::Backbone`) and the MLP heads of MoCo v3.

pub mod backbone;
pub mod block;
pub mod convstem;
pub mod heads;
pub mod resnet;
pub mod vit;
