//! ImageFolder datasets as torchvision reads them: `root/<class>/<image>` with the classes in
//! sorted order as labels 0, 1, ..., and `.jpg`, `.jpeg`, `.png` files (any case) sorted within
//! each class. Images are decoded when the loader asks for them (JPEG and PNG, converted to RGB),
//! so a set of any size streams from disk.

use super::ImageSet;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
    matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// Index `root`: one sub-folder per class. An empty class folder or a root without classes is an
/// error that names the folder.
pub fn scan(name: &str, root: &Path) -> Result<ImageSet> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("cannot read image folder {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!("{}: no class folders (expected {}/<class>/<image>.jpg|png)", root.display(), root.display());
    }
    let (mut files, mut labels) = (Vec::new(), Vec::new());
    for (label, dir) in classes.iter().enumerate() {
        let mut imgs: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if imgs.is_empty() {
            bail!("{}: empty class folder (no .jpg, .jpeg or .png files); remove it or add its images", dir.display());
        }
        imgs.sort();
        labels.extend(std::iter::repeat_n(label as u32, imgs.len()));
        files.extend(imgs);
    }
    Ok(ImageSet {
        name: name.to_string(),
        h: 0,
        w: 0,
        c: 3,
        pixels: Vec::new(),
        labels,
        classes: classes.len(),
        files,
        skip_corrupt: false,
        skipped: Default::default(),
    })
}

/// Decode one image file to RGB bytes, `(pixels, height, width)`.
pub fn decode(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?
        .decode()
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: corrupt or truncated image ({e}); remove or replace it, or pass --skip-corrupt",
                path.display()
            )
        })?
        .to_rgb8();
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), h as usize, w as usize))
}

/// The `train/` or `val/` folder of a dataset root found in `dirs`.
pub fn find_split(name: &str, dirs: &[PathBuf], train: bool) -> Result<PathBuf> {
    let split = if train { "train" } else { "val" };
    for d in dirs {
        let p = d.join(split);
        if p.is_dir() {
            return Ok(p);
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.join(split).display().to_string()).collect();
    bail!(
        "dataset '{name}' not found: no {split}/ folder in {}; point --data-dir at a folder holding \
         train/<class>/*.jpg and val/<class>/*.jpg (ImageNet's layout)",
        looked.join(", ")
    )
}
