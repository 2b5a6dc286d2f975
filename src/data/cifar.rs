//! CIFAR-10 and CIFAR-100 in their binary distributions: records of a label byte (CIFAR-100: a
//! coarse and a fine label byte) and 3072 bytes of 32×32 RGB, channel-planar. Files:
//! `cifar-10-batches-bin/data_batch_{1..5}.bin` + `test_batch.bin`, and
//! `cifar-100-binary/train.bin` + `test.bin` (fine labels are used).

use super::ImageSet;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const PIXELS: usize = 32 * 32 * 3;

/// Parse one binary file into `set` (pixels converted to HWC).
fn read_records(path: &Path, label_bytes: usize, set: &mut ImageSet) -> Result<()> {
    let classes = set.classes;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % rec != 0 {
        bail!(
            "{} is truncated or not a CIFAR binary file: {} bytes is not a whole number of {rec}-byte records; download it again",
            path.display(),
            bytes.len()
        );
    }
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[label_bytes - 1] as usize;
        if label >= classes {
            bail!(
                "{}: record {i} has label {label}, out of range for {classes} classes; download it again",
                path.display()
            );
        }
        set.labels.push(label as u32);
        let planes = &r[label_bytes..];
        for i in 0..32 * 32 {
            for c in 0..3 {
                set.pixels.push(planes[c * 1024 + i]);
            }
        }
    }
    Ok(())
}

/// Load a split of `cifar10` or `cifar100` from the first of `dirs` that holds its files.
pub fn load(name: &str, dirs: &[PathBuf], train: bool) -> Result<ImageSet> {
    let (sub, files, label_bytes, classes): (&str, Vec<String>, usize, usize) = match (name, train) {
        ("cifar10", true) => ("cifar-10-batches-bin", (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(), 1, 10),
        ("cifar10", false) => ("cifar-10-batches-bin", vec!["test_batch.bin".into()], 1, 10),
        ("cifar100", true) => ("cifar-100-binary", vec!["train.bin".into()], 2, 100),
        ("cifar100", false) => ("cifar-100-binary", vec!["test.bin".into()], 2, 100),
        _ => bail!("unknown CIFAR dataset '{name}'"),
    };
    let candidates: Vec<PathBuf> = dirs.iter().flat_map(|d| [d.join(sub), d.clone()]).collect();
    let Some(dir) = candidates.iter().find(|d| d.join(&files[0]).is_file()) else {
        let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
        let msg = format!(
            "dataset '{name}' not found: no {sub}/{} in {}; download the binary version from the CIFAR \
             page and unpack it under --data-dir",
            files[0],
            looked.join(", ")
        );
        return Err(super::NotFound(msg).into());
    };
    let mut set = ImageSet {
        name: name.into(),
        h: 32,
        w: 32,
        c: 3,
        pixels: Vec::new(),
        labels: Vec::new(),
        classes,
        ..ImageSet::empty()
    };
    for f in &files {
        read_records(&dir.join(f), label_bytes, &mut set)?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: &[u8], seed: u8) -> Vec<u8> {
        let mut r = label.to_vec();
        r.extend((0..PIXELS).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
        r
    }

    #[test]
    fn reads_both_variants_and_rejects_truncation() {
        let root = std::env::temp_dir().join(format!("mocov3-cifar-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let d10 = root.join("cifar-10-batches-bin");
        std::fs::create_dir_all(&d10).unwrap();
        for i in 1..=5 {
            let mut b = record(&[i as u8], i as u8);
            b.extend(record(&[9], 0));
            std::fs::write(d10.join(format!("data_batch_{i}.bin")), b).unwrap();
        }
        std::fs::write(d10.join("test_batch.bin"), record(&[3], 1)).unwrap();
        let s = load("cifar10", std::slice::from_ref(&root), true).unwrap();
        assert_eq!((s.len(), s.h, s.w, s.c, s.classes), (10, 32, 32, 3, 10));
        assert_eq!(&s.labels[..3], &[1, 9, 2]);
        // HWC: pixel 1's red is plane byte 1, its green plane byte 1025.
        let img = s.image(0);
        assert_eq!(img[3], 7u8.wrapping_add(1));
        assert_eq!(img[4], (1025u32 * 7 % 256) as u8 + 1);
        assert_eq!(load("cifar10", std::slice::from_ref(&root), false).unwrap().labels, vec![3]);

        let d100 = root.join("cifar-100-binary");
        std::fs::create_dir_all(&d100).unwrap();
        std::fs::write(d100.join("train.bin"), [record(&[4, 77], 0), record(&[1, 12], 0)].concat()).unwrap();
        let s = load("cifar100", std::slice::from_ref(&root), true).unwrap();
        assert_eq!((s.labels.clone(), s.classes), (vec![77, 12], 100));

        let mut cut = record(&[1], 0);
        cut.truncate(1000);
        std::fs::write(d10.join("test_batch.bin"), cut).unwrap();
        let e = load("cifar10", std::slice::from_ref(&root), false).unwrap_err().to_string();
        assert!(e.contains("test_batch.bin") && e.contains("truncated"), "{e}");
        let e = load("cifar100", &[root.join("nowhere")], false).unwrap_err();
        assert!(e.is::<super::super::NotFound>());
        let e = e.to_string();
        assert!(e.contains("not found") && e.contains("nowhere"), "{e}");
    }
}
