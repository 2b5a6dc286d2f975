//! Position embeddings: the fixed 2D sin-cos table of the official `vits.py`, a learned table, or
//! none.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PosEmbedKind {
    /// Fixed 2D sin-cos (the paper's default and best: 76.5 on ViT-B).
    Sincos,
    /// Learned, initialised as timm (truncated normal, std 0.02).
    Learned,
    /// No position embedding.
    None,
}

/// The official 2D sin-cos table, `[1 + grid², dim]`, with a zero row for the cls token.
///
/// As `torch.meshgrid(grid_w, grid_h)` with 'ij' indexing does in the official code, the first
/// quarter-pair (sin, cos) encodes the *row* of the patch and the second the column.
pub fn sincos_2d(grid: usize, dim: usize, temperature: f32) -> Vec<f32> {
    assert!(dim.is_multiple_of(4), "embed dim {dim} must be divisible by 4 for the 2D sin-cos embedding");
    let pd = dim / 4;
    let omega: Vec<f32> = (0..pd).map(|k| 1.0 / temperature.powf(k as f32 / pd as f32)).collect();
    let mut out = vec![0.0f32; (1 + grid * grid) * dim];
    for i in 0..grid {
        for j in 0..grid {
            let row = &mut out[(1 + i * grid + j) * dim..(2 + i * grid + j) * dim];
            for k in 0..pd {
                let a = i as f32 * omega[k];
                let b = j as f32 * omega[k];
                row[k] = a.sin();
                row[pd + k] = a.cos();
                row[2 * pd + k] = b.sin();
                row[3 * pd + k] = b.cos();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_official() {
        let (g, d) = (3, 8);
        let t = sincos_2d(g, d, 10000.0);
        assert!(t[..d].iter().all(|&v| v == 0.0), "cls row is zero");
        // patch (row 1, col 2) -> index 1 + 1*3 + 2 = 6; omega = [1, 0.01]
        let r = &t[6 * d..7 * d];
        let want = [
            1f32.sin(),
            0.01f32.sin(),
            1f32.cos(),
            0.01f32.cos(),
            2f32.sin(),
            0.02f32.sin(),
            2f32.cos(),
            0.02f32.cos(),
        ];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
    }
}
