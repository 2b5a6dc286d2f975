//! The op suite's layout ops (see the parent module): the convolution columns and their
//! adjoint, the weight's axis swap, NCHW → NHWC, the patch embedding's columns, and pooling.

use super::*;

#[test]
fn conv_layout_ops_match_direct_indexing() {
    let mut rng = Rng::new(6);
    for g in [
        ConvShape { images: 2, h: 7, w: 5, c: 3, k: 3, s: 2, p: 1 },
        ConvShape { images: 3, h: 6, w: 6, c: 4, k: 1, s: 2, p: 0 },
        ConvShape { images: 1, h: 9, w: 8, c: 2, k: 7, s: 2, p: 3 },
    ] {
        let ConvShape { images, h, w, c, k, s, p } = g;
        let (oh, ow) = g.out_hw();
        let x = randn(&mut rng, images * h * w * c);
        let pixel = |n: usize, y: isize, xx: isize, ch: usize| -> f32 {
            if y < 0 || xx < 0 || y as usize >= h || xx as usize >= w {
                0.0
            } else {
                x[((n * h + y as usize) * w + xx as usize) * c + ch]
            }
        };
        let kk = c * k * k;
        let mut want = vec![0.0f32; images * oh * ow * kk];
        for n in 0..images {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                let (y, xx) =
                                    ((oy * s + ki) as isize - p as isize, (ox * s + kj) as isize - p as isize);
                                want[((n * oh + oy) * ow + ox) * kk + (ki * k + kj) * c + ch] = pixel(n, y, xx, ch);
                            }
                        }
                    }
                }
            }
        }
        let mut cols = Tensor::new();
        im2col(&mut cols, &x, g);
        exact(&format!("im2col {g:?}"), &cols[..want.len()], &want);

        // col2im is im2col's adjoint: <im2col(x), y> = <x, col2im(y)>.
        let dcols = randn(&mut rng, want.len());
        let mut dx = vec![9.0; x.len()];
        col2im(&mut dx, &dcols, g);
        let lhs: f64 = want.iter().zip(&dcols).map(|(&a, &b)| a as f64 * b as f64).sum();
        let rhs: f64 = x.iter().zip(&dx).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0), "col2im adjoint {g:?}: {lhs} vs {rhs}");
    }

    // The weight's axis swap, and back.
    let (batch, a, b) = (3, 4, 9);
    let wt = randn(&mut rng, batch * a * b);
    let (mut sw, mut back) = (vec![0.0; wt.len()], vec![0.0; wt.len()]);
    swap_inner_axes(&mut sw, &wt, batch, a, b);
    for t in 0..batch {
        for x in 0..a {
            for y in 0..b {
                assert_eq!(sw[(t * b + y) * a + x].to_bits(), wt[(t * a + x) * b + y].to_bits(), "swap_inner_axes");
            }
        }
    }
    swap_inner_axes(&mut back, &sw, batch, b, a);
    assert_eq!(back, wt, "swap_inner_axes twice");

    // NCHW → NHWC, and the patch embedding's columns.
    let (n, c, side, pp) = (2, 3, 8, 4);
    let img = randn(&mut rng, n * c * side * side);
    let mut nhwc = Tensor::new();
    nchw_to_nhwc(&mut nhwc, &img, n, c, side * side);
    for (i, &v) in img.iter().enumerate() {
        let (b, ch, px) = (i / (c * side * side), (i / (side * side)) % c, i % (side * side));
        assert_eq!(nhwc[(b * side * side + px) * c + ch].to_bits(), v.to_bits(), "nchw_to_nhwc {i}");
    }
    let mut cols = Tensor::new();
    patchify(&mut cols, &img, n, c, side, pp);
    let gsz = side / pp;
    for b in 0..n {
        for gi in 0..gsz {
            for gj in 0..gsz {
                for ch in 0..c {
                    for ki in 0..pp {
                        for kj in 0..pp {
                            let got = cols[((b * gsz + gi) * gsz + gj) * c * pp * pp + (ch * pp + ki) * pp + kj];
                            let want = img[((b * c + ch) * side + gi * pp + ki) * side + gj * pp + kj];
                            assert_eq!(got.to_bits(), want.to_bits(), "patchify");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn pooling_matches_scalar_loops() {
    let mut rng = Rng::new(7);
    let (images, h, w, c, k, s, p) = (2, 7, 6, 3, 3, 2, 1);
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let x = randn(&mut rng, images * h * w * c);
    let per = oh * ow * c;
    let (mut y, mut am) = (vec![0.0; images * per], vec![0u32; images * per]);
    maxpool_forward(&mut y, &mut am, &x, (images, h, w, c), k, s, p);
    let dy = randn(&mut rng, images * per);
    let mut dx_want = vec![0.0f32; x.len()];
    for n in 0..images {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut best = (f32::NEG_INFINITY, 0);
                    for ki in 0..k {
                        for kj in 0..k {
                            let (iy, ix) = ((oy * s + ki) as isize - p as isize, (ox * s + kj) as isize - p as isize);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let i = ((n * h + iy as usize) * w + ix as usize) * c + ch;
                                if x[i] > best.0 {
                                    best = (x[i], i);
                                }
                            }
                        }
                    }
                    let o = ((n * oh + oy) * ow + ox) * c + ch;
                    assert_eq!(y[o].to_bits(), best.0.to_bits(), "maxpool value {o}");
                    dx_want[best.1] += dy[o];
                }
            }
        }
    }
    let mut dx = vec![9.0; x.len()];
    maxpool_backward(&mut dx, &dy, &am, (images, h, w, c), per);
    exact("maxpool backward", &dx, &dx_want);

    let hw = h * w;
    let mut g = vec![0.0; images * c];
    global_avg_forward(&mut g, &x, images, hw, c);
    let want: Vec<f64> = (0..images * c)
        .map(|i| (0..hw).map(|q| x[((i / c) * hw + q) * c + i % c] as f64).sum::<f64>() / hw as f64)
        .collect();
    close("global avg", &g, &want, 1e-6);
    let dg = randn(&mut rng, images * c);
    let mut dx = vec![9.0; x.len()];
    global_avg_backward(&mut dx, &dg, images, hw, c);
    let want: Vec<f64> = (0..x.len()).map(|i| dg[(i / (hw * c)) * c + i % c] as f64 / hw as f64).collect();
    close("global avg backward", &dx, &want, 1e-6);
}
