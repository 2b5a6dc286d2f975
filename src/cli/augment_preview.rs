//! `mocov3 augment-preview`: a PNG grid of images and their two augmented views.

use anyhow::Result;
use mocov3::train::config;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The preset whose augmentation to show (see `mocov3 presets`).
    #[arg(long, default_value = "fashion-mnist")]
    preset: String,
    /// Override configuration keys (augment, crop_min, blur_sigma_max, img_size, ...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Dataset to draw the images from (default: the preset's).
    #[arg(long)]
    dataset: Option<String>,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How many images (rows), starting at --first.
    #[arg(long, default_value_t = 4)]
    images: usize,
    /// Index of the first image shown.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Pairs of views per image.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Seed of the augmentation draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output PNG file.
    #[arg(long, default_value = "augment-preview.png")]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let mut c = config::merge_sets(&config::preset(&a.preset)?, &a.sets)?;
    if let Some(d) = a.dataset {
        c.dataset = d;
    }
    let set = mocov3::data::load(&c.dataset, a.data_dir.as_deref().or(c.data_dir.as_deref()), true)?;
    if a.first + a.images > set.len() || a.images == 0 {
        anyhow::bail!("--first {} --images {}: dataset '{}' has {} images", a.first, a.images, c.dataset, set.len());
    }
    let aug = mocov3::train::pretrain::augmentation(&c, &set);
    let ids: Vec<usize> = (a.first..a.first + a.images).collect();
    mocov3::report::preview::augment_preview(&set, &ids, &aug, a.pairs.max(1), a.seed, &a.out)?;
    println!(
        "augment-preview: {} ({:?} pipeline, {} images x {} pairs)",
        a.out.display(),
        c.augment,
        a.images,
        a.pairs
    );
    Ok(())
}
