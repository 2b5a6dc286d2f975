//! A checkpoint opened for evaluation: its model and training state with the dataset it was
//! trained on (or the one named), both splits, and the evaluation resize.

use anyhow::Result;
use std::path::{Path, PathBuf};

/// A checkpoint's model and training state, with the dataset it was trained on (or the one
/// named): both splits, and the evaluation resize.
pub struct Probe {
    pub model: crate::moco::MoCo,
    pub state: crate::train::checkpoint::TrainState,
    pub dataset: String,
    pub train: crate::data::ImageSet,
    pub test: crate::data::ImageSet,
    pub plain: crate::data::augment::Augment,
}

pub fn open_probe(checkpoint: &Path, dataset: &Option<String>, data_dir: &Option<PathBuf>) -> Result<Probe> {
    let (model, _, state) = crate::train::checkpoint::load(checkpoint)?;
    let name = dataset.clone().unwrap_or_else(|| state.config.dataset.clone());
    let dir = data_dir.clone().or_else(|| state.config.data_dir.clone());
    let train = crate::data::load(&name, dir.as_deref(), true)?;
    let test = crate::data::load(&name, dir.as_deref(), false)?;
    if state.in_chans != train.c {
        anyhow::bail!("the checkpoint expects {}-channel images, dataset '{name}' has {}", state.in_chans, train.c);
    }
    let (mean, std) = train.channel_stats();
    let plain = crate::data::augment::Augment::crop_flip(state.config.img_size, 1.0, false, mean, std);
    Ok(Probe { model, state, dataset: name, train, test, plain })
}
