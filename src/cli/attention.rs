//! `mocov3 attention`: a PNG of the cls token's attention per head of a ViT checkpoint's last
//! block over given images (DINO's visualisation).

use anyhow::{bail, Result};
use std::path::PathBuf;

use super::open_probe;

#[derive(clap::Args)]
pub struct Args {
    /// A ViT checkpoint written by `mocov3 pretrain`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files to look at (repeatable); without them, the first --count images of the
    /// dataset's test split.
    #[arg(long = "image", value_name = "PATH")]
    images: Vec<PathBuf>,
    /// How many dataset images, when no --image is given.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one)]
    count: usize,
    /// Take the dataset images from the training split instead of the test split.
    #[arg(long)]
    train_split: bool,
    /// Dataset (default: the checkpoint's); its statistics normalise --image files too.
    #[arg(long)]
    dataset: Option<String>,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The PNG to write.
    #[arg(long, default_value = "attention.png")]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let mut p = open_probe(&a.checkpoint, &a.dataset, &a.data_dir)?;
    let (c, size) = (p.train.c, p.plain.out);
    let len = c * size * size;
    // The images as (pixels HWC, height, width), from files or the dataset.
    let mut raw: Vec<(Vec<u8>, usize, usize)> = Vec::new();
    for path in &a.images {
        let (rgb, h, w) = mocov3::data::folder::decode(path)?;
        let px = if c == 1 {
            // A grey model sees the file as Pillow's convert("L") would give it.
            rgb.chunks(3).map(mocov3::data::ops::luma).collect()
        } else {
            rgb
        };
        raw.push((px, h, w));
    }
    if a.images.is_empty() {
        let set = if a.train_split { &p.train } else { &p.test };
        for i in 0..a.count.min(set.len()) {
            let im = set.get(i)?;
            raw.push((im.px.to_vec(), im.h, im.w));
        }
    }
    if raw.is_empty() {
        bail!("no images: give --image PATH or a dataset with images");
    }
    let n = raw.len();
    let mut x = vec![0.0f32; n * len];
    for ((px, h, w), v) in raw.iter().zip(x.chunks_mut(len)) {
        p.plain.plain(px, *h, *w, c, v);
    }
    let m = mocov3::eval::attention::cls_attention(&mut p.model.base.backbone, &x, n)?;
    // What the network saw, back to pixels (RGB).
    let (mean, std) = (&p.plain.mean, &p.plain.std);
    let shown: Vec<Vec<u8>> = x
        .chunks(len)
        .map(|v| {
            (0..size * size)
                .flat_map(|j| {
                    let ch = |k: usize| ((v[k * size * size + j] * std[k] + mean[k]) * 255.0).clamp(0.0, 255.0) as u8;
                    if c == 1 {
                        [ch(0); 3]
                    } else {
                        [ch(0), ch(1), ch(2)]
                    }
                })
                .collect()
        })
        .collect();
    mocov3::report::attention::render(&a.out, &shown, size, m.heads, m.grid, &m.maps)?;
    println!("attention maps of {n} images ({} heads, {}x{} patches): {}", m.heads, m.grid, m.grid, a.out.display());
    Ok(())
}
