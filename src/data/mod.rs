//! Datasets and the two-view pipeline.
//!
//! Images are kept as bytes, `[n, h, w, c]` (HWC), and turned into normalised f32 CHW views by
//! `augment`.

pub mod augment;
pub mod benchdata;
pub mod cifar;
pub mod download;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod ops;
pub mod prefetch;
pub mod synthetic;

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Labelled 8-bit images: in memory, all of one size (`pixels`, `[n, h, w, c]`), or image files
/// of any size decoded on demand (`files`, an ImageFolder; `h` = `w` = 0).
#[derive(Debug, Default)]
pub struct ImageSet {
    pub name: String,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub classes: usize,
    pub files: Vec<PathBuf>,
    /// Replace an undecodable file by the next good one (counted in `skipped`) instead of failing.
    pub skip_corrupt: bool,
    pub skipped: std::sync::atomic::AtomicUsize,
}

/// The normalisation of the official code (ImageNet's per-channel mean and std).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// One image's bytes (`[h, w, c]`), borrowed from memory or decoded from its file.
pub struct Pixels<'a> {
    pub px: std::borrow::Cow<'a, [u8]>,
    pub h: usize,
    pub w: usize,
}

impl ImageSet {
    pub fn empty() -> ImageSet {
        ImageSet::default()
    }

    /// Image `i`. For a folder, a file that does not decode is an error naming it, or with
    /// `skip_corrupt` the next decodable image takes its place (counted in `skipped`).
    pub fn get(&self, i: usize) -> Result<Pixels<'_>> {
        if self.files.is_empty() {
            return Ok(Pixels { px: std::borrow::Cow::Borrowed(self.image(i)), h: self.h, w: self.w });
        }
        let mut j = i;
        loop {
            match folder::decode(&self.files[j]) {
                Ok((px, h, w)) => return Ok(Pixels { px: std::borrow::Cow::Owned(px), h, w }),
                Err(e) if !self.skip_corrupt => return Err(e),
                Err(_) => {
                    self.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    j = (j + 1) % self.files.len();
                    if j == i {
                        bail!("{}: no image of the dataset decodes", self.name);
                    }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.h * self.w * self.c;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Per-channel mean and std of the pixels in [0, 1] (for normalisation); ImageNet's, as the
    /// official code uses, for image folders.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        if !self.files.is_empty() {
            return (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec());
        }
        let c = self.c;
        let mut s = vec![0f64; c];
        let mut q = vec![0f64; c];
        for (i, &p) in self.pixels.iter().enumerate() {
            let v = p as f64 / 255.0;
            s[i % c] += v;
            q[i % c] += v * v;
        }
        let n = (self.pixels.len() / c) as f64;
        let mean: Vec<f32> = s.iter().map(|v| (v / n) as f32).collect();
        let std: Vec<f32> =
            q.iter().zip(&mean).map(|(q, &m)| ((q / n - (m as f64).powi(2)).max(1e-12)).sqrt() as f32).collect();
        (mean, std)
    }
}

/// Standard places where a named dataset may already be on this machine: `$MOCOV3_DATA/<name>`
/// or the download cache, then `/usr/share/datasets/<name>` (Debian's packages).
pub fn system_dirs(name: &str) -> Vec<PathBuf> {
    vec![download::cache_dir(name), PathBuf::from("/usr/share/datasets").join(name)]
}

/// Where `load` looks for dataset `name`, in order: `data_dir` itself, `data_dir/<name>`, then
/// [`system_dirs`].
fn search_dirs(name: &str, data_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = data_dir.map(|d| vec![d.to_path_buf(), d.join(name)]).unwrap_or_default();
    dirs.extend(system_dirs(name));
    dirs
}

/// A dataset that is nowhere to be found (rather than found but damaged): the case a download
/// can fix.
#[derive(Debug)]
pub struct NotFound(pub String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFound {}

/// `load_from(dirs)`; when nothing is found there and the dataset has a canonical address, a
/// checksum-verified download into the cache and a second try (unless `MOCOV3_OFFLINE` is set).
fn or_download(name: &str, dirs: &[PathBuf], load_from: impl Fn(&[PathBuf]) -> Result<ImageSet>) -> Result<ImageSet> {
    let first = load_from(dirs);
    let (Err(e), Some(remotes)) = (&first, download::remotes(name)) else { return first };
    if !e.is::<NotFound>() || std::env::var_os("MOCOV3_OFFLINE").is_some() {
        return first;
    }
    let dir = download::cache_dir(name);
    match download::fetch_all(&remotes, &dir) {
        Ok(d) => load_from(&[d]),
        Err(d) => Err(anyhow::anyhow!("{e:#}; downloading it into {} failed too: {d:#}", dir.display())),
    }
}

/// Load a dataset by name: `fashion-mnist` or `mnist` (IDX files, gzipped or raw), `cifar10` or
/// `cifar100` (binary versions), `imagenet` (an ImageFolder with `train/` and `val/`, found like
/// the others), `folder:PATH` (the same layout at PATH), or `synthetic`. `data_dir`, when given, is searched first (the folder holding the IDX files, or
/// its parent holding a folder named after the dataset).
pub fn load(name: &str, data_dir: Option<&Path>, train: bool) -> Result<ImageSet> {
    match name {
        "fashion-mnist" | "mnist" => {
            let dirs = search_dirs(name, data_dir);
            let hint = if name == "fashion-mnist" {
                "install it with `apt-get install dataset-fashion-mnist` (files under /usr/share/datasets/fashion-mnist/), or pass --data-dir DIR holding train-images-idx3-ubyte(.gz) and the label files"
            } else {
                "pass --data-dir DIR holding train-images-idx3-ubyte and train-labels-idx1-ubyte (gzipped or raw)"
            };
            let set = or_download(name, &dirs, |d| idx::load_split(name, d, train, hint))?;
            if let Some(d) = data_dir {
                // A --data-dir holding one split only: say where the other came from.
                let stem = if train { "train-images-idx3-ubyte" } else { "t10k-images-idx3-ubyte" };
                if idx::find(&dirs[..2], stem).is_none() {
                    let from =
                        idx::find(&dirs, stem).map_or("the download cache".to_string(), |p| p.display().to_string());
                    eprintln!(
                        "warning: {} holds no {stem}(.gz): the {} split of '{name}' comes from {from}",
                        d.display(),
                        if train { "training" } else { "test" }
                    );
                }
            }
            Ok(set)
        }
        "cifar10" | "cifar100" => or_download(name, &search_dirs(name, data_dir), |d| cifar::load(name, d, train)),
        "synthetic" => Ok(synthetic::generate(if train { 2048 } else { 512 }, 28, 1, 10, if train { 1 } else { 2 })),
        "imagenet" => folder::scan(name, &folder::find_split(name, &search_dirs(name, data_dir), train)?),
        other if other.starts_with("folder:") => {
            let root = PathBuf::from(&other["folder:".len()..]);
            folder::scan(other, &folder::find_split(other, &[root], train)?)
        }
        other => {
            bail!("unknown dataset '{other}': expected fashion-mnist, mnist, cifar10, cifar100, imagenet, folder:PATH or synthetic")
        }
    }
}
