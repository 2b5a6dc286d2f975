//! ImageFolder datasets on files this test writes: PNG and JPEG of different sizes, class
//! order, a corrupt file (named in the error, or skipped and counted with skip_corrupt), an empty
//! class folder, and a short pre-training run on the folder.

use mocov3::data;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocov3-folder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn write_image(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + seed * 40) as u8, (y * 5 + seed * 13) as u8, ((x + y) * 3) as u8])
    });
    img.save(path).unwrap();
}

/// root/{train,val}/{cat,dog}/... with mixed formats and sizes.
fn make(root: &Path, per_class: u32) {
    for split in ["train", "val"] {
        for (c, class) in ["dog", "cat"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let ext = if i % 2 == 0 { "png" } else { "JPG" };
                write_image(&dir.join(format!("{i:03}.{ext}")), 40 + i * 3, 36 + i, c as u32 * 3 + i);
            }
            std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
        }
    }
}

#[test]
fn folders_index_decode_and_report_bad_files() {
    let root = tmp("basic");
    make(&root, 4);
    let name = format!("folder:{}", root.display());
    let set = data::load(&name, None, true).unwrap();
    assert_eq!((set.len(), set.classes, set.c), (8, 2, 3));
    // Classes in sorted order: cat = 0, dog = 1; text files ignored.
    assert_eq!(set.labels, vec![0, 0, 0, 0, 1, 1, 1, 1]);
    let p = set.get(1).unwrap();
    assert_eq!((p.w, p.h, p.px.len()), (43, 37, 43 * 37 * 3));
    assert_eq!(data::load(&name, None, false).unwrap().len(), 8);

    // A truncated JPEG: an error naming it, or skipped and counted.
    let bad = root.join("train/cat/001.JPG");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let e = format!("{:#}", set.get(1).err().expect("a truncated file must not decode"));
    assert!(e.contains("001.JPG") && e.contains("--skip-corrupt"), "{e}");
    let mut set = data::load(&name, None, true).unwrap();
    set.skip_corrupt = true;
    let p = set.get(1).unwrap();
    assert_eq!(p.w, 46, "the next image (002.png) takes its place");
    assert_eq!(set.skipped.load(std::sync::atomic::Ordering::Relaxed), 1);

    // An empty class folder and a missing split are errors that say where.
    std::fs::create_dir_all(root.join("train/zebra")).unwrap();
    let e = format!("{:#}", data::load(&name, None, true).err().unwrap());
    assert!(e.contains("zebra") && e.contains("empty class folder"), "{e}");
    let e =
        format!("{:#}", data::load(&format!("folder:{}", root.join("nowhere").display()), None, true).err().unwrap());
    assert!(e.contains("not found") && e.contains("nowhere"), "{e}");
}

#[test]
fn pretraining_runs_on_an_image_folder() {
    let root = tmp("pretrain");
    make(&root, 8);
    let sets = [
        format!("dataset=\"folder:{}\"", root.display()),
        "img_size=16".into(),
        "batch_size=8".into(),
        "epochs=1".into(),
        "knn_every=1".into(),
        "knn_eval=8".into(),
        "knn_k=4".into(),
    ];
    let mut c =
        mocov3::train::config::merge_sets(&mocov3::train::config::preset("tiny-synthetic").unwrap(), &sets).unwrap();
    c.out_dir = tmp("pretrain-out");
    let s = mocov3::train::pretrain::run(c, &mocov3::train::pretrain::RunOptions { quiet: true, ..Default::default() })
        .unwrap();
    assert_eq!(s.losses.len(), 2);
    assert!(s.losses.iter().all(|l| l.is_finite()));
    assert!(s.last_knn.is_some(), "the monitor ran on the folder's val split");
}
