//! The augmentation operations against torchvision / Pillow's own results (fixtures from
//! scripts/make_augment_fixtures.py): every output pixel identical.

use mocov3::data::ops::{self, Image};
use safetensors::SafeTensors;

fn load() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/augment_ops.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn image(st: &SafeTensors, key: &str) -> Image {
    let t = st.tensor(key).unwrap_or_else(|_| panic!("fixture lacks {key}"));
    let s = t.shape();
    let px = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as u8).collect();
    Image::new(s[0], s[1], s[2], px)
}

fn check(name: &str, got: &Image, want: &Image) {
    assert_eq!((got.h, got.w, got.c), (want.h, want.w, want.c), "{name}: shape");
    let mut worst = 0i32;
    for (a, b) in got.px.iter().zip(&want.px) {
        worst = worst.max((*a as i32 - *b as i32).abs());
    }
    let exact = got.px.iter().zip(&want.px).filter(|(a, b)| a == b).count();
    eprintln!("{name}: {exact}/{} pixels exact, worst {worst}/255", got.px.len());
    // The bar is 1/255; every op is in fact bit-exact on these fixtures, and kept so.
    assert!(worst == 0, "{name}: differs from Pillow by up to {worst}/255");
}

#[test]
fn every_op_matches_pillow_within_one_level() {
    let bytes = load();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for img in ["rgb", "grey"] {
        let input = image(&st, &format!("{img}.input"));
        type Op = Box<dyn Fn(&mut Image) -> Image>;
        let cases: Vec<(&str, Op)> = vec![
            ("crop_up", Box::new(|im: &mut Image| ops::resized_crop(im, (2, 3, 13, 17), 24, 24))),
            ("crop_down", Box::new(|im: &mut Image| ops::resized_crop(im, (1, 0, 19, 23), 9, 11))),
            ("crop_mixed", Box::new(|im: &mut Image| ops::resized_crop(im, (0, 2, 10, 20), 16, 8))),
            ("brightness_0.6", Box::new(|im: &mut Image| (ops::brightness(im, 0.6), im.clone()).1)),
            ("brightness_1.37", Box::new(|im: &mut Image| (ops::brightness(im, 1.37), im.clone()).1)),
            ("contrast_0.65", Box::new(|im: &mut Image| (ops::contrast(im, 0.65), im.clone()).1)),
            ("contrast_1.3", Box::new(|im: &mut Image| (ops::contrast(im, 1.3), im.clone()).1)),
            ("saturation_0.8", Box::new(|im: &mut Image| (ops::saturation(im, 0.8), im.clone()).1)),
            ("saturation_1.2", Box::new(|im: &mut Image| (ops::saturation(im, 1.2), im.clone()).1)),
            ("hue_-0.07", Box::new(|im: &mut Image| (ops::hue(im, -0.07), im.clone()).1)),
            ("hue_0.09", Box::new(|im: &mut Image| (ops::hue(im, 0.09), im.clone()).1)),
            ("grayscale", Box::new(|im: &mut Image| (ops::grayscale(im), im.clone()).1)),
            ("blur_0.1", Box::new(|im: &mut Image| (ops::gaussian_blur(im, 0.1), im.clone()).1)),
            ("blur_0.7", Box::new(|im: &mut Image| (ops::gaussian_blur(im, 0.7), im.clone()).1)),
            ("blur_1.9", Box::new(|im: &mut Image| (ops::gaussian_blur(im, 1.9), im.clone()).1)),
            ("solarize", Box::new(|im: &mut Image| (ops::solarize(im, 128), im.clone()).1)),
            ("hflip", Box::new(|im: &mut Image| (ops::hflip(im), im.clone()).1)),
        ];
        for (op, f) in cases {
            let got = f(&mut input.clone());
            check(&format!("{img}.{op}"), &got, &image(&st, &format!("{img}.{op}")));
        }
    }
}

#[test]
fn ops_are_not_identities_on_the_fixture() {
    // Guards the parity test against fixtures in which an op happens to do nothing.
    let bytes = load();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let input = image(&st, "rgb.input");
    for op in ["brightness_1.37", "contrast_0.65", "saturation_1.2", "hue_0.09", "blur_1.9", "solarize", "hflip"] {
        assert_ne!(image(&st, &format!("rgb.{op}")).px, input.px, "{op}");
    }
}
