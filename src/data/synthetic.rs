//! A synthetic labelled image set for tests and smoke runs: each class is a distinct oriented
//! stripe pattern, with random phase, contrast and noise per image.

use super::ImageSet;
use crate::engine::rng::Rng;

pub fn generate(n: usize, size: usize, chans: usize, classes: usize, seed: u64) -> ImageSet {
    let mut rng = Rng::new(seed);
    let mut pixels = Vec::with_capacity(n * size * size * chans);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % classes;
        let angle = std::f64::consts::PI * label as f64 / classes as f64;
        let freq = 0.5 + 0.15 * (label % 3) as f64;
        let phase = rng.uniform(0.0, 6.3);
        let contrast = rng.uniform(0.5, 1.0);
        let (ca, sa) = (angle.cos(), angle.sin());
        for y in 0..size {
            for x in 0..size {
                let u = x as f64 * ca + y as f64 * sa;
                let v = 0.5 + 0.5 * contrast * (freq * u + phase).sin() + 0.05 * rng.normal() as f64;
                let b = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                for _ in 0..chans {
                    pixels.push(b);
                }
            }
        }
        labels.push(label as u32);
    }
    ImageSet { name: "synthetic".into(), h: size, w: size, c: chans, pixels, labels, classes, ..ImageSet::empty() }
}
