//! A mutation fuzzer for every reader of outside files: take a valid file, damage it (truncate,
//! flip bits, write huge values over length and shape fields, in binary and in text headers,
//! insert bytes), and read it, thousands of times per reader. No case may panic, take more than
//! a few seconds, or abort on an allocation (the test binary would die); every error names the
//! file. The counts are printed (`cargo test --release --test fuzz -- --nocapture`).

mod common;

use mocov3::moco::MoCo;
use mocov3::optim::{AdamW, Optimizer};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const HUGE32: [u32; 6] = [u32::MAX, 0x7fff_ffff, 0x8000_0000, 0x0100_0000, 0x0001_0000, 0];

/// One damaged copy of `valid`.
fn mutate(valid: &[u8], rng: &mut Lcg) -> Vec<u8> {
    let mut v = valid.to_vec();
    let n = v.len();
    // Headers hold the sizes: half of the damage lands in the first 512 bytes.
    let pos = |rng: &mut Lcg| if rng.below(2) == 0 { rng.below(n.min(512)) } else { rng.below(n) };
    match rng.below(7) {
        0 => v.truncate(rng.below(n)),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let p = pos(rng);
                v[p] ^= 1 << rng.below(8);
            }
        }
        2 | 3 => {
            // A huge (or zero) 32-bit value, little- or big-endian (IDX is big-endian).
            let p = pos(rng).min(n.saturating_sub(4));
            let x = HUGE32[rng.below(HUGE32.len())];
            let b = if rng.below(2) == 0 { x.to_le_bytes() } else { x.to_be_bytes() };
            v[p..(p + 4).min(n)].copy_from_slice(&b[..(p + 4).min(n) - p]);
        }
        4 => {
            // A huge 64-bit length.
            let p = pos(rng).min(n.saturating_sub(8));
            let x = [u64::MAX, 1 << 40, 1 << 62, 0][rng.below(4)];
            v[p..(p + 8).min(n)].copy_from_slice(&x.to_le_bytes()[..(p + 8).min(n) - p]);
        }
        5 => {
            // A number in a text header (JSON, TOML, pickle) made huge or negative.
            let digits: Vec<usize> = (0..n.min(4096)).filter(|&i| v[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                let p = digits[rng.below(digits.len())];
                let mut e = p;
                while e < n && v[e].is_ascii_digit() {
                    e += 1;
                }
                let with: &[u8] = [&b"99999999999999"[..], b"18446744073709551616", b"-1", b"0"][rng.below(4)];
                v.splice(p..e, with.iter().copied());
            }
        }
        _ => {
            // Bytes inserted, or a chunk repeated.
            let p = pos(rng);
            let k = 1 + rng.below(64);
            let chunk: Vec<u8> = v[p..(p + k).min(n)].to_vec();
            v.splice(p..p, chunk);
        }
    }
    v
}

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    static IN_READ: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Panics inside a reader are recorded (and reported by the test); others print as usual.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        if IN_READ.with(|f| f.get()) {
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(info.to_string());
        } else {
            eprintln!("{info}");
        }
    }));
}

/// Damage `valid` `cases` times into `path` and read each with `read`; print the counts.
fn fuzz(what: &str, valid: &[u8], cases: usize, seed: u64, path: &Path, read: impl Fn(&Path) -> anyhow::Result<()>) {
    quiet_panics();
    let mut rng = Lcg(seed);
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let (mut errors, mut oks, mut panics, mut slowest) = (0, 0, Vec::new(), Duration::ZERO);
    let t = Instant::now();
    for case in 0..cases {
        let bytes = mutate(valid, &mut rng);
        std::fs::write(path, &bytes).unwrap();
        let t0 = Instant::now();
        IN_READ.with(|f| f.set(true));
        let r = catch_unwind(AssertUnwindSafe(|| read(path)));
        IN_READ.with(|f| f.set(false));
        match r {
            Ok(Ok(())) => oks += 1,
            Ok(Err(e)) => {
                let msg = format!("{e:#}");
                assert!(msg.contains(&name), "{what} case {case}: the error does not name the file: {msg}");
                errors += 1;
            }
            Err(_) => {
                let bad = path.with_extension(format!("panic{case}"));
                let _ = std::fs::write(&bad, &bytes);
                panics.push(format!("case {case} (kept as {})", bad.display()));
            }
        }
        slowest = slowest.max(t0.elapsed());
    }
    let msgs = PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!(
        "fuzz {what}: {cases} inputs in {:.1} s, {errors} errors, {oks} read fine, {} panics, slowest {:.0} ms",
        t.elapsed().as_secs_f64(),
        panics.len(),
        slowest.as_secs_f64() * 1e3
    );
    assert!(panics.is_empty(), "{what}: {} panics: {panics:?}\n{msgs:?}", panics.len());
    assert!(slowest < Duration::from_secs(5), "{what}: a case took {slowest:?}");
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocov3-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_files() {
    use mocov3::data::idx;
    let px: Vec<u8> = (0..20 * 64).map(|i| (i * 7 % 256) as u8).collect();
    let images = idx::encode(&[20, 8, 8], &px);
    let labels = idx::encode(&[20], &(0..20).map(|i| (i % 10) as u8).collect::<Vec<_>>());
    for (gz, seed) in [(false, 1), (true, 2)] {
        let d = dir(if gz { "idx-gz" } else { "idx" });
        let ext = if gz { ".gz" } else { "" };
        let (img, lab) = if gz { (gzip(&images), gzip(&labels)) } else { (images.clone(), labels.clone()) };
        let read = |_: &Path| idx::load_split("fuzz", std::slice::from_ref(&d), true, "").map(|_| ());
        std::fs::write(d.join(format!("train-labels-idx1-ubyte{ext}")), &lab).unwrap();
        fuzz("IDX images", &img, 1500, seed, &d.join(format!("train-images-idx3-ubyte{ext}")), read);
        std::fs::write(d.join(format!("train-images-idx3-ubyte{ext}")), &img).unwrap();
        fuzz("IDX labels", &lab, 1000, seed + 10, &d.join(format!("train-labels-idx1-ubyte{ext}")), read);
    }
}

#[test]
fn cifar_binary() {
    let d = dir("cifar");
    let sub = d.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&sub).unwrap();
    let valid: Vec<u8> =
        (0..8 * 3073).map(|i| if i % 3073 == 0 { (i / 3073 % 10) as u8 } else { (i % 251) as u8 }).collect();
    let read = |_: &Path| mocov3::data::cifar::load("cifar10", std::slice::from_ref(&d), false).map(|_| ());
    fuzz("CIFAR binary", &valid, 2000, 3, &sub.join("test_batch.bin"), read);
}

#[test]
fn image_files() {
    let d = dir("images");
    let img = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([(x * 20) as u8, (y * 25) as u8, 128]));
    for (fmt, name, seed) in [(image::ImageFormat::Jpeg, "a.jpg", 4), (image::ImageFormat::Png, "a.png", 5)] {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).unwrap();
        let read = |p: &Path| mocov3::data::folder::decode(p).map(|_| ());
        fuzz(name, buf.get_ref(), 2000, seed, &d.join(name), read);
    }
}

#[test]
fn native_checkpoints() {
    use mocov3::train::checkpoint;
    let d = dir("ckpt");
    let mut cfg = mocov3::train::config::preset("tiny-synthetic").unwrap();
    (cfg.dim, cfg.depth, cfg.moco_mlp_dim, cfg.moco_dim) = (Some(8), Some(1), 16, 8);
    let mut model = MoCo::new(&cfg.model(1).unwrap(), 0);
    let opt = Optimizer::new(cfg.optimizer, 0.1, true);
    let state = checkpoint::TrainState {
        format: checkpoint::FORMAT,
        epoch: 1,
        iter: 0,
        step: 3,
        in_chans: 1,
        config: cfg,
        control: Default::default(),
    };
    let p = d.join("valid.safetensors");
    checkpoint::save(&p, &mut model, &opt, &state).unwrap();
    let valid = std::fs::read(&p).unwrap();
    let read = |p: &Path| {
        checkpoint::read_state(p)?;
        checkpoint::load(p).map(|_| ())
    };
    fuzz("native checkpoint", &valid, 2000, 6, &d.join("c.safetensors"), read);
}

#[test]
fn official_checkpoints() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let d = dir("official");
    for (file, seed) in [("official_zip.pth.tar", 7), ("official_legacy.pth.tar", 8)] {
        let valid = std::fs::read(fixtures.join(file)).unwrap();
        let read = |p: &Path| {
            let _ = mocov3::interop::official::infer_shape(p);
            let mut opt = Optimizer::AdamW(AdamW::new(0.1));
            mocov3::interop::official::load_into(p, &mut MoCo::new(&common::tiny(16), 0), &mut opt).map(|_| ())
        };
        fuzz(file, &valid, 1500, seed, &d.join(file), read);
    }
}

#[test]
fn toml_configs() {
    use mocov3::train::config;
    let d = dir("toml");
    let base = config::preset("tiny-synthetic").unwrap();
    let valid = toml::to_string(&base).unwrap();
    let read = |p: &Path| config::merge_file(&base, p).and_then(|c| c.model(1).map(|_| ()));
    fuzz("TOML config", valid.as_bytes(), 3000, 9, &d.join("c.toml"), read);
}

#[test]
fn step_views() {
    use safetensors::tensor::{Dtype, TensorView};
    let d = dir("views");
    let data: Vec<u8> = (0..2 * 3 * 16 * 16).flat_map(|i| (i as f32 / 100.0).to_le_bytes()).collect();
    let views = vec![
        ("x1".to_string(), TensorView::new(Dtype::F32, vec![2, 3, 16, 16], &data).unwrap()),
        ("x2".to_string(), TensorView::new(Dtype::F32, vec![2, 3, 16, 16], &data).unwrap()),
    ];
    let valid = safetensors::tensor::serialize(views, &None).unwrap();
    let read = |p: &Path| mocov3::interop::step::read_views(p, 3, 16).map(|_| ());
    fuzz("step views", &valid, 3000, 10, &d.join("views.safetensors"), read);
}
