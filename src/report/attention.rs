//! The PNG of `mocov3 attention`: one row per image, the image then the cls token's attention
//! map of each head of the last block and their mean ("hot" colours: black, red, yellow, white),
//! each map upsampled from the patch grid to the image.

use super::font::draw_text;
use super::plot::Canvas;
use anyhow::Result;
use std::path::Path;

/// "Hot" colour of a value in [0, 1].
fn hot(v: f32) -> [u8; 3] {
    let c = |x: f32| (255.0 * x.clamp(0.0, 1.0)) as u8;
    [c(3.0 * v), c(3.0 * v - 1.0), c(3.0 * v - 2.0)]
}

/// Write the grid to `path`. `images` are RGB, `size` × `size`, row-major; `maps` is
/// `[images, heads, grid * grid]` with values in [0, 1].
pub fn render(path: &Path, images: &[Vec<u8>], size: usize, heads: usize, grid: usize, maps: &[f32]) -> Result<()> {
    // Cells of at least 96 px: small images are magnified by a whole factor.
    let k = 96usize.div_ceil(size).max(1);
    let cell = (size * k) as i64;
    let (pad, top) = (4i64, 22i64);
    let cols = heads as i64 + 2;
    let mut c = Canvas::new(cols * (cell + pad) + pad, top + images.len() as i64 * (cell + pad) + pad);
    for col in 0..cols {
        let label = match col {
            0 => "image".to_string(),
            c if c == cols - 1 => "mean".to_string(),
            c => format!("head {}", c - 1),
        };
        draw_text(&mut c, pad + col * (cell + pad), 4, &label, 2, [0, 0, 0]);
    }
    let cells = grid * grid;
    for (i, img) in images.iter().enumerate() {
        let y0 = top + i as i64 * (cell + pad);
        let m = &maps[i * heads * cells..(i + 1) * heads * cells];
        let mean: Vec<f32> =
            (0..cells).map(|j| (0..heads).map(|h| m[h * cells + j]).sum::<f32>() / heads as f32).collect();
        let top_mean = mean.iter().copied().fold(1e-12f32, f32::max);
        for col in 0..cols {
            let x0 = pad + col * (cell + pad);
            for y in 0..cell {
                for x in 0..cell {
                    let (py, px) = (y as usize / k, x as usize / k);
                    let rgb = if col == 0 {
                        let o = (py * size + px) * 3;
                        [img[o], img[o + 1], img[o + 2]]
                    } else {
                        let j = (py * grid / size) * grid + px * grid / size;
                        hot(if col == cols - 1 { mean[j] / top_mean } else { m[(col as usize - 1) * cells + j] })
                    };
                    c.set(x0 + x, y0 + y, rgb);
                }
            }
        }
    }
    c.save_png(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_grid_has_a_row_per_image_and_a_column_per_head_plus_image_and_mean() {
        let path = std::env::temp_dir().join(format!("mocov3-attn-{}.png", std::process::id()));
        let images = vec![vec![128u8; 28 * 28 * 3]; 2];
        let maps: Vec<f32> = (0..2 * 3 * 16).map(|i| (i % 16) as f32 / 15.0).collect();
        super::render(&path, &images, 28, 3, 4, &maps).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // 28 px magnified 4x to 112 px cells with 4 px gaps: 5 columns, 2 rows under a title band.
        assert_eq!(img.dimensions(), (5 * 116 + 4, 22 + 2 * 116 + 4));
        // The first map's last patch (value 1) is white, its first (0) black.
        let (x0, y0) = (4 + 116, 22);
        assert_eq!(img.get_pixel(x0 + 111, y0 + 111).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(x0, y0).0, [0, 0, 0]);
        let _ = std::fs::remove_file(&path);
    }
}
