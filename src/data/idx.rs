//! The IDX format of MNIST and Fashion-MNIST (big-endian header, then bytes), gzipped or raw.

use super::ImageSet;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Read a whole IDX file (gunzipping when it starts with the gzip magic).
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).with_context(|| {
            format!("{} is not a valid gzip file (truncated or corrupt): download it again", path.display())
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an IDX byte array: returns its dimensions and the data bytes.
fn parse(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        bail!("{} is not an IDX file (bad magic number)", path.display());
    }
    if bytes[2] != 0x08 {
        bail!("{}: only unsigned-byte IDX data is supported (type 0x{:02x})", path.display(), bytes[2]);
    }
    let nd = bytes[3] as usize;
    if bytes.len() < 4 + 4 * nd {
        bail!("{} is truncated (header cut short): download it again", path.display());
    }
    let dims: Vec<usize> =
        (0..nd).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let n: usize = dims.iter().product();
    let data = &bytes[4 + 4 * nd..];
    if data.len() < n {
        bail!(
            "{} is truncated: the header promises {n} bytes of data for shape {dims:?}, the file has {}; download it again",
            path.display(),
            data.len()
        );
    }
    Ok((dims, data[..n].to_vec()))
}

pub fn find(dirs: &[PathBuf], stem: &str) -> Option<PathBuf> {
    for d in dirs {
        for name in [format!("{stem}.gz"), stem.to_string()] {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Load the train or test split, looking for the standard file names in `dirs` in order.
pub fn load_split(name: &str, dirs: &[PathBuf], train: bool, hint: &str) -> Result<ImageSet> {
    let prefix = if train { "train" } else { "t10k" };
    let (img_stem, lab_stem) = (format!("{prefix}-images-idx3-ubyte"), format!("{prefix}-labels-idx1-ubyte"));
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let Some(ip) = find(dirs, &img_stem) else {
        let msg = format!("dataset '{name}' not found: no {img_stem}(.gz) in {}; {hint}", looked.join(", "));
        return Err(super::NotFound(msg).into());
    };
    let Some(lp) = find(dirs, &lab_stem) else {
        bail!(
            "dataset '{name}' incomplete: {} exists but no {lab_stem}(.gz) in {}; {hint}",
            ip.display(),
            looked.join(", ")
        );
    };
    let (idims, pixels) = parse(&read_bytes(&ip)?, &ip)?;
    let (ldims, labels) = parse(&read_bytes(&lp)?, &lp)?;
    if idims.len() != 3 || ldims.len() != 1 {
        bail!("{} / {}: expected 3-d images and 1-d labels, found {idims:?} and {ldims:?}", ip.display(), lp.display());
    }
    if idims[0] != ldims[0] {
        bail!("{} has {} images but {} has {} labels", ip.display(), idims[0], lp.display(), ldims[0]);
    }
    let labels: Vec<u32> = labels.into_iter().map(u32::from).collect();
    let classes = labels.iter().max().map(|&m| m as usize + 1).unwrap_or(0);
    Ok(ImageSet {
        name: name.to_string(),
        h: idims[1],
        w: idims[2],
        c: 1,
        pixels,
        labels,
        classes,
        ..ImageSet::empty()
    })
}

/// Encode images `[n, h, w]` or labels `[n]` as IDX (used by tests and tools).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8, 0, 0x08, dims.len() as u8];
    for &d in dims {
        v.extend_from_slice(&(d as u32).to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_set(dir: &Path, gz: bool, truncate_images: bool) {
        let (n, h, w) = (5, 3, 4);
        let pixels: Vec<u8> = (0..n * h * w).map(|i| i as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let mut img = encode(&[n, h, w], &pixels);
        if truncate_images {
            img.truncate(img.len() - 7);
        }
        let lab = encode(&[n], &labels);
        for (stem, bytes) in [("train-images-idx3-ubyte", img), ("train-labels-idx1-ubyte", lab)] {
            if gz {
                let f = std::fs::File::create(dir.join(format!("{stem}.gz"))).unwrap();
                let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                e.write_all(&bytes).unwrap();
                e.finish().unwrap();
            } else {
                std::fs::write(dir.join(stem), bytes).unwrap();
            }
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mocov3-idx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_gz_and_raw() {
        for gz in [true, false] {
            let d = tmp(&format!("ok{gz}"));
            write_set(&d, gz, false);
            let s = load_split("t", std::slice::from_ref(&d), true, "").unwrap();
            assert_eq!((s.len(), s.h, s.w, s.c, s.classes), (5, 3, 4, 1, 3));
            assert_eq!(s.image(1)[0], 12);
            assert_eq!(s.labels, vec![0, 1, 2, 0, 1]);
        }
    }

    #[test]
    fn truncated_and_missing_files_are_clear_errors() {
        let d = tmp("trunc");
        write_set(&d, false, true);
        let e = load_split("t", std::slice::from_ref(&d), true, "").unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("train-images-idx3-ubyte"), "{e}");
        let d = tmp("truncgz");
        write_set(&d, true, false);
        let p = d.join("train-images-idx3-ubyte.gz");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
        let e = load_split("t", std::slice::from_ref(&d), true, "").unwrap_err();
        assert!(!e.is::<super::super::NotFound>(), "a damaged file is not a missing dataset");
        let e = format!("{e:#}");
        assert!(e.contains("gzip") && e.contains(".gz"), "{e}");
        let d = tmp("missing");
        let e = load_split("fashion-mnist", std::slice::from_ref(&d), true, "install it").unwrap_err();
        assert!(e.is::<super::super::NotFound>(), "only a missing dataset is worth a download");
        let e = e.to_string();
        assert!(e.contains("not found") && e.contains(&d.display().to_string()) && e.contains("install it"), "{e}");
    }
}
