//! The CUDA op suite: every launcher of engine/cuda/launch against its CPU op, on small odd
//! shapes (tails, several row chunks and column blocks, reductions across warps), on every GPU
//! there is:
//! - the emulated GPU (engine/cuda/emu: the same kernels compiled for the CPU, launched by the
//!   same launchers with the same arguments; 64-thread blocks) — always, so CI checks every
//!   launcher's argument order, sizes and geometry without a GPU. Skipped, saying why, without
//!   a C++20 compiler; MOCOV3_REQUIRE_CXX=1 (CI) makes that a failure.
//! - GPU 0 when the driver and CUDA 13 libraries load; also checks that reductions repeat bit
//!   for bit. Skipped, saying why, elsewhere; MOCOV3_REQUIRE_GPU=1 (scripts/gpu_check.sh) makes
//!   that a failure.
//!
//! On a GPU the tolerances are 10× the emulated ones: its expf/erff/sqrtf differ from the host's
//! libm by a few ulps.

#![cfg(feature = "cuda")]

mod common;

use common::cuda::{close, gpus, values};
use mocov3::engine::cuda::gemm::Gemm;
use mocov3::engine::cuda::launch::{self, MatmulWork, Precision};
use mocov3::engine::cuda::DevBuf;
use mocov3::engine::ops::{self, AdamWStep, ConvShape};
use mocov3::engine::tensor::Tensor;

#[test]
fn activations() {
    for d in gpus("activations") {
        let n = 1001;
        let (x, g) = (values(n, 1), values(n, 2));
        let xd = d.up(&x);
        let mut want = vec![0.0; n];
        ops::gelu_forward(&mut want, &x);
        let mut out = d.zeros(n);
        launch::gelu_forward(d.gpu, &mut out, &xd).unwrap();
        close(&d.down(&out), &want, d.tol(1e-6), &d.what("gelu_forward"));
        let mut want = g.clone();
        ops::gelu_backward_inplace(&mut want, &x);
        let mut gd = d.up(&g);
        launch::gelu_backward_inplace(d.gpu, &mut gd, &xd).unwrap();
        close(&d.down(&gd), &want, d.tol(1e-5), &d.what("gelu_backward_inplace"));
        let mut relu = vec![0.0; n];
        ops::relu_forward(&mut relu, &x);
        launch::relu_forward(d.gpu, &mut out, &xd).unwrap();
        assert_eq!(d.down(&out), relu, "{}", d.what("relu_forward"));
        let mut inpl = d.up(&x);
        launch::relu_inplace(d.gpu, &mut inpl).unwrap();
        assert_eq!(d.down(&inpl), relu, "{}", d.what("relu_inplace"));
        let mut want = g.clone();
        ops::relu_backward_inplace(&mut want, &relu);
        let mut gd = d.up(&g);
        launch::relu_backward_inplace(d.gpu, &mut gd, &d.up(&relu)).unwrap();
        assert_eq!(d.down(&gd), want, "{}", d.what("relu_backward_inplace"));
        // A short output buffer is an error, not a write past its end.
        let mut short = d.zeros(n - 1);
        let e = launch::gelu_forward(d.gpu, &mut short, &xd).unwrap_err();
        assert!(e.contains("gelu_forward") && e.contains("1001 needed"), "{e}");
    }
}

#[test]
fn layernorm_forward_and_backward() {
    for d in gpus("layernorm_forward_and_backward") {
        let (rows, c) = (70, 45);
        let (x, w, b, dy) = (values(rows * c, 3), values(c, 4), values(c, 5), values(rows * c, 6));
        let (xd, wd, bd, dyd) = (d.up(&x), d.up(&w), d.up(&b), d.up(&dy));
        for stride in [c, c + 1] {
            let (mut want, mut wst) = (vec![0.0; rows * stride], vec![0.0; rows * 2]);
            ops::layernorm_forward(&mut want, &mut wst, &x, &w, &b, rows, c, stride, 1e-6);
            let (mut out, mut st) = (d.zeros(rows * stride), d.zeros(rows * 2));
            launch::layernorm_forward(d.gpu, &mut out, &mut st, &xd, &wd, &bd, rows, c, stride, 1e-6).unwrap();
            close(&d.down(&out), &want, d.tol(2e-6), &d.what("layernorm_forward"));
            close(&d.down(&st), &wst, d.tol(2e-6), &d.what("layernorm_forward stats"));
        }
        let (mut y, mut st) = (vec![0.0; rows * c], vec![0.0; rows * 2]);
        ops::layernorm_forward(&mut y, &mut st, &x, &w, &b, rows, c, c, 1e-6);
        let (mut wdx, mut wdw, mut wdb) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
        ops::layernorm_backward(&mut wdx, Some(&mut wdw), Some(&mut wdb), &dy, &x, &w, &st, rows, c);
        let std = d.up(&st);
        let (mut gdx, mut gdw, mut gdb, mut part) = (d.zeros(rows * c), d.zeros(c), d.zeros(c), DevBuf::default());
        let run = |gdx: &mut DevBuf<f32>, gdw: &mut DevBuf<f32>, gdb: &mut DevBuf<f32>, part: &mut DevBuf<f32>| {
            launch::layernorm_backward(d.gpu, part, gdx, Some(gdw), Some(gdb), &dyd, &xd, &wd, &std, rows, c).unwrap()
        };
        run(&mut gdx, &mut gdw, &mut gdb, &mut part);
        close(&d.down(&gdx), &wdx, d.tol(1e-5), &d.what("layernorm_backward dinp"));
        close(&d.down(&gdw), &wdw, d.tol(1e-5), &d.what("layernorm_backward dweight"));
        close(&d.down(&gdb), &wdb, d.tol(1e-5), &d.what("layernorm_backward dbias"));
        let first = (d.down(&gdx), d.down(&gdw));
        run(&mut gdx, &mut gdw, &mut gdb, &mut part);
        assert_eq!((d.down(&gdx), d.down(&gdw)), first, "{}", d.what("layernorm_backward repeats bit for bit"));
    }
}

#[test]
fn batchnorm_pieces() {
    for d in gpus("batchnorm_pieces") {
        let (rows, c, range) = (150, 300, 5..140usize);
        let (x, dy, alpha, shift) = (values(rows * c, 7), values(rows * c, 8), values(c, 9), values(c, 10));
        let (xd, dyd) = (d.up(&x), d.up(&dy));
        let (mut partials, mut part) = (Tensor::new(), DevBuf::default());
        let mut want = vec![0.0; c];
        ops::batchnorm_sum(&mut partials, &mut want, &x, range.clone(), c);
        let mut got = d.zeros(c);
        launch::batchnorm_sum(d.gpu, &mut part, &mut got, &xd, range.clone(), c).unwrap();
        close(&d.down(&got), &want, d.tol(1e-5), &d.what("batchnorm_sum"));
        let mean: Vec<f32> = want.iter().map(|s| s / range.len() as f32).collect();
        ops::batchnorm_sq_dev(&mut partials, &mut want, &x, &mean, range.clone(), c);
        launch::batchnorm_sq_dev(d.gpu, &mut part, &mut got, &xd, &d.up(&mean), range.clone(), c).unwrap();
        close(&d.down(&got), &want, d.tol(1e-5), &d.what("batchnorm_sq_dev"));
        let rstd: Vec<f32> = want.iter().map(|q| 1.0 / (q / range.len() as f32 + 1e-5).sqrt()).collect();
        // A ReLU's output as the mask: about half the values are 0.
        let mask: Vec<f32> = values(rows * c, 11).iter().map(|v| v.max(0.0)).collect();
        let maskd = d.up(&mask);
        let (md, rd) = (d.up(&mean), d.up(&rstd));
        for m in [None, Some(&mask[..])] {
            let (mut wsdy, mut wsdyx) = (vec![0.0; c], vec![0.0; c]);
            ops::batchnorm_grad_sums(&mut partials, &mut wsdy, &mut wsdyx, &dy, &x, &mean, &rstd, range.clone(), c, m);
            let (mut gsdy, mut gsdyx) = (d.zeros(c), d.zeros(c));
            let gm = m.map(|_| &maskd);
            launch::batchnorm_grad_sums(
                d.gpu,
                &mut part,
                &mut gsdy,
                &mut gsdyx,
                &dyd,
                &xd,
                &md,
                &rd,
                range.clone(),
                c,
                gm,
            )
            .unwrap();
            close(&d.down(&gsdy), &wsdy, d.tol(1e-5), &d.what("batchnorm_grad_sums sdy"));
            close(&d.down(&gsdyx), &wsdyx, d.tol(1e-5), &d.what("batchnorm_grad_sums sdyx"));
        }
        let mut want = vec![0.0; rows * c];
        let (ad, sd) = (d.up(&alpha), d.up(&shift));
        let mut got = d.zeros(rows * c);
        for relu in [false, true] {
            ops::batchnorm_affine(&mut want, &x, &alpha, &shift, rows, c, relu);
            launch::batchnorm_affine(d.gpu, &mut got, &xd, &ad, &sd, rows, c, relu).unwrap();
            close(&d.down(&got), &want, d.tol(1e-6), &d.what("batchnorm_affine"));
        }
        for m in [None, Some(&mask[..])] {
            ops::batchnorm_backward_dx(&mut want, &dy, &x, &alpha, &shift, &mean, rows, c, m);
            let gm = m.map(|_| &maskd);
            launch::batchnorm_backward_dx(d.gpu, &mut got, &dyd, &xd, &ad, &sd, &md, rows, c, gm).unwrap();
            close(&d.down(&got), &want, d.tol(1e-6), &d.what("batchnorm_backward_dx"));
        }
        // Rows past the input are refused.
        let e = launch::batchnorm_sum(d.gpu, &mut part, &mut d.zeros(c), &xd, 0..rows + 1, c).unwrap_err();
        assert!(e.contains("batchnorm_sum"), "{e}");
    }
}

#[test]
fn attention_softmax_and_the_cls_path() {
    for d in gpus("attention_softmax_and_the_cls_path") {
        // t > 32: the score rows' reductions span both warps of an emulated block.
        let (batch, t, dim, h) = (2, 37, 12, 3);
        let (qkv, dout, dcls) = (values(batch * t * 3 * dim, 11), values(batch * t * dim, 12), values(batch * dim, 13));
        let (qd, dod) = (d.up(&qkv), d.up(&dout));
        let (mut wo, mut wp) = (vec![0.0; batch * t * dim], vec![0.0; batch * h * t * t]);
        ops::attention_forward(&mut wo, &mut wp, &qkv, batch, t, dim, h);
        let (mut go, mut gp) = (d.zeros(wo.len()), d.zeros(wp.len()));
        launch::attention_forward(d.gpu, &mut go, &mut gp, &qd, batch, t, dim, h).unwrap();
        close(&d.down(&go), &wo, d.tol(1e-5), &d.what("attention_forward out"));
        close(&d.down(&gp), &wp, d.tol(1e-5), &d.what("attention_forward probs"));
        let mut scratch = Tensor::new();
        let mut wd = vec![0.0; batch * t * 3 * dim];
        ops::attention_backward(&mut wd, &mut scratch, &dout, &qkv, &wp, batch, t, dim, h);
        let (mut gd, mut gs) = (d.up(&vec![f32::NAN; wd.len()]), DevBuf::default());
        launch::attention_backward(d.gpu, &mut gd, &mut gs, &dod, &qd, &gp, batch, t, dim, h).unwrap();
        close(&d.down(&gd), &wd, d.tol(1e-5), &d.what("attention_backward dqkv"));
        let first = d.down(&gd);
        launch::attention_backward(d.gpu, &mut gd, &mut gs, &dod, &qd, &gp, batch, t, dim, h).unwrap();
        assert_eq!(d.down(&gd), first, "{}", d.what("attention_backward repeats bit for bit"));

        let (mut wo, mut wp) = (vec![0.0; batch * dim], vec![0.0; batch * h * t]);
        ops::attention_forward_cls(&mut wo, &mut wp, &qkv, batch, t, dim, h);
        let (mut go, mut gp) = (d.zeros(wo.len()), d.zeros(wp.len()));
        launch::attention_forward_cls(d.gpu, &mut go, &mut gp, &qd, batch, t, dim, h).unwrap();
        close(&d.down(&go), &wo, d.tol(1e-5), &d.what("attention_forward_cls out"));
        close(&d.down(&gp), &wp, d.tol(1e-5), &d.what("attention_forward_cls probs"));
        let mut wd = vec![0.0; batch * t * 3 * dim];
        ops::attention_backward_cls(&mut wd, &mut scratch, &dcls, &qkv, &wp, batch, t, dim, h);
        let mut gd = d.up(&vec![f32::NAN; wd.len()]);
        launch::attention_backward_cls(d.gpu, &mut gd, &d.up(&dcls), &qd, &gp, batch, t, dim, h).unwrap();
        close(&d.down(&gd), &wd, d.tol(1e-5), &d.what("attention_backward_cls dqkv"));
        let e = launch::attention_forward(d.gpu, &mut go, &mut gp, &qd, batch, t, dim, 5).unwrap_err();
        assert!(e.contains("heads"), "{e}");

        let (rows, n) = (5, 300);
        let x = values(rows * n, 14);
        let mut want = x.clone();
        want.chunks_mut(n).for_each(ops::softmax_forward_inplace);
        let mut got = d.up(&x);
        launch::softmax_forward_inplace(d.gpu, &mut got, rows, n).unwrap();
        close(&d.down(&got), &want, d.tol(1e-6), &d.what("softmax_forward_inplace"));
    }
}

#[test]
fn l2norm_and_the_loss() {
    for d in gpus("l2norm_and_the_loss") {
        let (rows, dim) = (9, 70);
        let (x, g) = (values(rows * dim, 15), values(rows * dim, 16));
        let xd = d.up(&x);
        let (mut wo, mut wn) = (vec![0.0; rows * dim], vec![0.0; rows]);
        ops::l2norm_forward(&mut wo, &mut wn, &x, rows, dim);
        let (mut go, mut gn) = (d.zeros(rows * dim), d.zeros(rows));
        launch::l2norm_forward(d.gpu, &mut go, &mut gn, &xd, rows, dim).unwrap();
        close(&d.down(&go), &wo, d.tol(1e-6), &d.what("l2norm_forward"));
        close(&d.down(&gn), &wn, d.tol(1e-6), &d.what("l2norm_forward norms"));
        let mut inpl = d.up(&x);
        launch::l2norm_inplace(d.gpu, &mut inpl, rows, dim).unwrap();
        close(&d.down(&inpl), &wo, d.tol(1e-6), &d.what("l2norm_inplace"));
        let mut wd = vec![0.0; rows * dim];
        ops::l2norm_backward(&mut wd, &g, &wo, &wn, rows, dim);
        let mut gd = d.zeros(rows * dim);
        launch::l2norm_backward(d.gpu, &mut gd, &d.up(&g), &go, &gn, rows, dim).unwrap();
        close(&d.down(&gd), &wd, d.tol(1e-5), &d.what("l2norm_backward"));

        let (rows, c) = (6, 333);
        let logits: Vec<f32> = values(rows * c, 17).iter().map(|v| v * 5.0).collect();
        let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 97) % c as u32).collect();
        let mut want = logits.clone();
        let wl = ops::crossentropy_softmax_inplace(&mut want, &labels, rows, c, 0.25);
        let mut got = d.up(&logits);
        let mut row_loss = DevBuf::default();
        let gl = launch::crossentropy_softmax_inplace(
            d.gpu,
            &mut got,
            &mut row_loss,
            &d.gpu.upload(&labels).unwrap(),
            rows,
            c,
            0.25,
        )
        .unwrap();
        close(&d.down(&got), &want, d.tol(1e-6), &d.what("crossentropy_softmax_inplace gradient"));
        assert!((gl - wl).abs() < d.tol(1e-5) as f64 * wl.abs(), "{}: {gl} vs {wl}", d.what("crossentropy loss"));
    }
}

#[test]
fn convolution_columns_and_layouts() {
    for d in gpus("convolution_columns_and_layouts") {
        // c ≠ k, so that swapped channel and kernel indices show.
        let g = ConvShape { images: 2, h: 5, w: 6, c: 4, k: 3, s: 2, p: 1 };
        let x = values(g.images * g.h * g.w * g.c, 18);
        let mut want = Tensor::new();
        ops::im2col(&mut want, &x, g);
        let mut cols = DevBuf::default();
        launch::im2col(d.gpu, &mut cols, &d.up(&x), g).unwrap();
        let n = want.len();
        assert_eq!(d.down(&cols)[..n], want[..], "{}", d.what("im2col"));
        let dcols = values(n, 19);
        let mut wdx = vec![0.0; x.len()];
        ops::col2im(&mut wdx, &dcols, g);
        let mut gdx = d.up(&vec![f32::NAN; x.len()]);
        launch::col2im(d.gpu, &mut gdx, &d.up(&dcols), g).unwrap();
        close(&d.down(&gdx), &wdx, d.tol(1e-6), &d.what("col2im"));
        let (batch, a, b) = (4, 3, 9);
        let w = values(batch * a * b, 21);
        let mut want = vec![0.0; w.len()];
        ops::swap_inner_axes(&mut want, &w, batch, a, b);
        let mut got = DevBuf::default();
        launch::swap_inner_axes(d.gpu, &mut got, &d.up(&w), batch, a, b).unwrap();
        assert_eq!(d.down(&got)[..w.len()], want[..], "{}", d.what("swap_inner_axes"));

        let (batch, c, img, p) = (2, 3, 8, 4);
        let imgs = values(batch * c * img * img, 20);
        let imd = d.up(&imgs);
        let mut want = Tensor::new();
        ops::patchify(&mut want, &imgs, batch, c, img, p);
        let mut got = DevBuf::default();
        launch::patchify(d.gpu, &mut got, &imd, batch, c, img, p).unwrap();
        assert_eq!(d.down(&got)[..imgs.len()], want[..imgs.len()], "{}", d.what("patchify"));
        ops::nchw_to_nhwc(&mut want, &imgs, batch, c, img * img);
        launch::nchw_to_nhwc(d.gpu, &mut got, &imd, batch, c, img * img).unwrap();
        assert_eq!(d.down(&got)[..imgs.len()], want[..imgs.len()], "{}", d.what("nchw_to_nhwc"));
        assert!(launch::patchify(d.gpu, &mut got, &imd, batch, c, img, 3).unwrap_err().contains("multiple"));
    }
}

#[test]
fn pooling() {
    for d in gpus("pooling") {
        let (images, h, w, c, k, s, p) = (2, 7, 6, 3, 3, 2, 1);
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        // Repeated values: ties must keep the first maximum, as the CPU.
        let x: Vec<f32> = values(images * h * w * c, 21).iter().map(|v| (v * 2.0).round()).collect();
        let xd = d.up(&x);
        let no = images * oh * ow * c;
        let (mut wo, mut wa) = (vec![0.0; no], vec![0u32; no]);
        ops::maxpool_forward(&mut wo, &mut wa, &x, (images, h, w, c), k, s, p);
        let (mut go, mut ga) = (d.zeros(no), d.gpu.zeros::<u32>(no).unwrap());
        launch::maxpool_forward(d.gpu, &mut go, &mut ga, &xd, (images, h, w, c), k, s, p).unwrap();
        assert_eq!(d.down(&go), wo, "{}", d.what("maxpool_forward"));
        assert_eq!(d.gpu.download(&ga).unwrap(), wa, "{}", d.what("maxpool_forward argmax"));
        let dout = values(no, 22);
        let mut wd = vec![0.0; x.len()];
        ops::maxpool_backward(&mut wd, &dout, &wa, (images, h, w, c), oh * ow * c);
        let mut gd = d.up(&vec![f32::NAN; x.len()]);
        launch::maxpool_backward(d.gpu, &mut gd, &d.up(&dout), &ga, (images, h, w, c), k, s, p).unwrap();
        close(&d.down(&gd), &wd, d.tol(1e-6), &d.what("maxpool_backward"));

        let hw = h * w;
        let mut wo = vec![0.0; images * c];
        ops::global_avg_forward(&mut wo, &x, images, hw, c);
        let mut go = d.zeros(images * c);
        launch::global_avg_forward(d.gpu, &mut go, &xd, images, hw, c).unwrap();
        close(&d.down(&go), &wo, d.tol(1e-6), &d.what("global_avg_forward"));
        let mut wd = vec![0.0; x.len()];
        ops::global_avg_backward(&mut wd, &wo, images, hw, c);
        let mut gd = d.zeros(x.len());
        launch::global_avg_backward(d.gpu, &mut gd, &d.up(&wo), images, hw, c).unwrap();
        close(&d.down(&gd), &wd, d.tol(1e-6), &d.what("global_avg_backward"));
    }
}

#[test]
fn optimiser_updates() {
    for d in gpus("optimiser_updates") {
        let n = 777;
        let (w0, g, m0) = (values(n, 23), values(n, 24), values(n, 25));
        let v0: Vec<f32> = values(n, 26).iter().map(|v| v.abs()).collect();
        let s = AdamWStep { step_size: 0.01, w1: 0.1, b2: 0.999, w2: 0.001, eps: 1e-8, bc2_sqrt: 0.3, decay: 0.99 };
        let (mut ww, mut wm, mut wv) = (w0.clone(), m0.clone(), v0.clone());
        ops::adamw_update(&mut ww, &g, &mut wm, &mut wv, s);
        let gd = d.up(&g);
        let (mut gw, mut gm, mut gv) = (d.up(&w0), d.up(&m0), d.up(&v0));
        launch::adamw_update(d.gpu, &mut gw, &gd, &mut gm, &mut gv, s).unwrap();
        close(&d.down(&gw), &ww, d.tol(1e-6), &d.what("adamw_update w"));
        close(&d.down(&gm), &wm, d.tol(1e-6), &d.what("adamw_update m"));
        close(&d.down(&gv), &wv, d.tol(1e-6), &d.what("adamw_update v"));

        let mut wk = w0.clone();
        ops::ema_update(&mut wk, &g, 0.99, 0.01);
        let mut gk = d.up(&w0);
        launch::ema_update(d.gpu, &mut gk, &gd, 0.99, 0.01).unwrap();
        close(&d.down(&gk), &wk, d.tol(1e-7), &d.what("ema_update"));

        let (wd, eta) = (1e-4f32, 0.001f64);
        let want_ratio = ops::lars_trust_ratio(&w0, &g, wd, eta);
        let (mut ratio, mut part) = (d.zeros(1), DevBuf::default());
        launch::lars_trust_ratio(d.gpu, &mut ratio, &mut part, &d.up(&w0), &gd, wd, eta).unwrap();
        close(&d.down(&ratio), &[want_ratio], d.tol(1e-6), &d.what("lars_trust_ratio"));
        launch::lars_trust_ratio(d.gpu, &mut ratio, &mut part, &d.zeros(n), &gd, wd, eta).unwrap();
        assert_eq!(d.down(&ratio), [1.0], "{}", d.what("lars_trust_ratio of a zero weight"));
        let (mut ww, mut wmu) = (w0.clone(), m0.clone());
        ops::lars_update(&mut ww, &g, &mut wmu, 0.1, 0.9, wd, want_ratio);
        let (mut gw, mut gmu) = (d.up(&w0), d.up(&m0));
        launch::lars_update(d.gpu, &mut gw, &gd, &mut gmu, &d.up(&[want_ratio]), 0.1, 0.9, wd).unwrap();
        close(&d.down(&gw), &ww, d.tol(1e-6), &d.what("lars_update w"));
        close(&d.down(&gmu), &wmu, d.tol(1e-6), &d.what("lars_update mu"));
    }
}

#[test]
fn tokens_sums_and_norms() {
    for d in gpus("tokens_sums_and_norms") {
        let (batch, t, dim) = (3, 5, 70);
        let (patches, cls, pos) = (values(batch * (t - 1) * dim, 27), values(dim, 28), values(t * dim, 29));
        let (pd, cd, posd) = (d.up(&patches), d.up(&cls), d.up(&pos));
        let n = batch * t * dim;
        for with_pos in [false, true] {
            let mut want = vec![0.0; n];
            ops::tokens_forward(&mut want, &patches, &cls, with_pos.then_some(&pos[..]), batch, t, dim);
            let mut got = d.up(&vec![f32::NAN; n]);
            launch::tokens_forward(d.gpu, &mut got, &pd, &cd, with_pos.then_some(&posd), batch, t, dim).unwrap();
            assert_eq!(d.down(&got), want, "{}", d.what(&format!("tokens_forward (pos {with_pos})")));
        }
        let dt = values(n, 30);
        let (mut wc, mut wp, mut wpa) = (vec![0.0; dim], vec![0.0; t * dim], vec![0.0; batch * (t - 1) * dim]);
        ops::tokens_backward(Some(&mut wc), Some(&mut wp), Some(&mut wpa), &dt, batch, t, dim);
        let (mut gc, mut gp, mut gpa, mut part) =
            (d.zeros(dim), d.zeros(t * dim), d.zeros(wpa.len()), DevBuf::default());
        launch::tokens_backward(
            d.gpu,
            &mut part,
            Some(&mut gc),
            Some(&mut gp),
            Some(&mut gpa),
            &d.up(&dt),
            batch,
            t,
            dim,
        )
        .unwrap();
        close(&d.down(&gc), &wc, d.tol(1e-6), &d.what("tokens_backward dcls"));
        close(&d.down(&gp), &wp, d.tol(1e-6), &d.what("tokens_backward dpos"));
        assert_eq!(d.down(&gpa), wpa, "{}", d.what("tokens_backward dpatches"));

        let (x, y) = (values(n, 31), values(n, 32));
        let (xd, yd) = (d.up(&x), d.up(&y));
        let mut want = vec![0.0; n];
        ops::add(&mut want, &x, &y);
        let mut got = d.zeros(n);
        launch::add(d.gpu, &mut got, &xd, &yd).unwrap();
        assert_eq!(d.down(&got), want, "{}", d.what("add"));
        let mut got = d.up(&x);
        launch::add_assign(d.gpu, &mut got, &yd).unwrap();
        assert_eq!(d.down(&got), want, "{}", d.what("add_assign"));
        let small = values(batch * dim, 33);
        let mut want = x.clone();
        ops::add_rows_strided(&mut want, &small, batch, t * dim, dim);
        let mut got = d.up(&x);
        launch::add_rows_strided(d.gpu, &mut got, &d.up(&small), batch, t * dim, dim).unwrap();
        assert_eq!(d.down(&got), want, "{}", d.what("add_rows_strided"));
        // 70 rows of 45: two chunks of column partials.
        let z = values(70 * 45, 40);
        let mut want = vec![1.0; 45];
        ops::col_sum(&mut want, &z, 70, 45, true);
        let mut got = d.up(&[1.0; 45]);
        launch::col_sum(d.gpu, &mut got, &mut part, &d.up(&z), 70, 45, true).unwrap();
        close(&d.down(&got), &want, d.tol(1e-6), &d.what("col_sum (accumulated)"));
        let big = values(100_003, 34);
        let want = ops::sum_sq_f64(&big);
        let bd = d.up(&big);
        let got = launch::sum_sq_f64(d.gpu, &bd).unwrap();
        assert!((got - want).abs() < 1e-12 * want, "{}: {got} vs {want}", d.what("sum_sq_f64"));
        assert_eq!(
            launch::sum_sq_f64(d.gpu, &bd).unwrap().to_bits(),
            got.to_bits(),
            "{}",
            d.what("sum_sq_f64 repeats")
        );
    }
}

/// f32 → bf16 bits, round to nearest even, NaN kept quiet (the reference for cast.cu).
fn bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if f.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

fn bf16(v: f32) -> f32 {
    f32::from_bits((bf16_bits(v) as u32) << 16)
}

#[test]
fn bf16_casts() {
    for d in gpus("bf16_casts") {
        let mut x = values(600, 35);
        // Ties (both directions), the largest finite values, infinities, NaN, denormals, zeros.
        x.extend([
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
            -0.0,
            0.0,
        ]);
        let n = x.len();
        let mut bits = DevBuf::default();
        launch::cast_to_bf16(d.gpu, &mut bits, &d.up(&x), n).unwrap();
        let hb = d.gpu.download(&bits).unwrap();
        for (i, (&b, &v)) in hb.iter().zip(&x).enumerate() {
            assert_eq!(b, bf16_bits(v), "{}[{i}] of {v}", d.what("cast_f32_to_bf16"));
        }
        assert_eq!(hb[n - 10], 0x3f80, "a tie rounds to even (down)");
        assert_eq!(hb[n - 9], 0x3f82, "a tie rounds to even (up)");
        let mut back = d.zeros(n);
        launch::cast_to_f32(d.gpu, &mut back, &bits, n).unwrap();
        for (i, v) in d.down(&back).iter().enumerate() {
            assert_eq!(v.to_bits(), (hb[i] as u32) << 16, "{}[{i}]", d.what("cast_bf16_to_f32"));
        }
    }
}

/// `got [m, n]` against the f64 product of the operands (rounded to bf16 first for bf16): within
/// `tol` of the sum of the terms' magnitudes (f32 accumulation).
#[allow(clippy::too_many_arguments)]
fn check_product(got: &[f32], a: &[f32], b: &[f32], g: Gemm, prec: Precision, beta_c: Option<&[f32]>, what: &str) {
    let round = |v: f32| if prec == Precision::Bf16 { bf16(v) } else { v };
    for i in 0..g.m {
        for j in 0..g.n {
            let (mut want, mut mag) = (0.0f64, 0.0f64);
            for p in 0..g.k {
                let x = if g.a_trans { a[p * g.m + i] } else { a[i * g.k + p] };
                let y = if g.b_trans { b[j * g.k + p] } else { b[p * g.n + j] };
                let t = round(x) as f64 * round(y) as f64;
                want += t;
                mag += t.abs();
            }
            want *= g.alpha as f64;
            if let Some(c) = beta_c {
                want += g.beta as f64 * c[i * g.n + j] as f64;
                mag += c[i * g.n + j].abs() as f64;
            }
            let v = got[i * g.n + j] as f64;
            assert!((v - want).abs() <= 1e-5 * mag.max(1e-30), "{what} [{i}, {j}]: {v} vs {want}");
        }
    }
}

#[test]
fn matmuls_in_both_precisions() {
    for d in gpus("matmuls_in_both_precisions") {
        let (rows, c, oc) = (67, 29, 45);
        let (x, w, b, dy) = (values(rows * c, 36), values(oc * c, 37), values(oc, 38), values(rows * oc, 39));
        let (xd, wd, bd, dyd) = (d.up(&x), d.up(&w), d.up(&b), d.up(&dy));
        for prec in [Precision::Fp32, Precision::Bf16] {
            let what = |s: &str| d.what(&format!("{s} ({prec:?})"));
            let mut work = MatmulWork::default();
            let fwd = Gemm { m: rows, n: oc, k: c, a_trans: false, b_trans: true, alpha: 1.0, beta: 0.0 };
            let mut out = d.zeros(rows * oc);
            launch::matmul_forward(d.gpu, prec, &mut work, &mut out, &xd, &wd, None, rows, c, oc).unwrap();
            check_product(&d.down(&out), &x, &w, fwd, prec, None, &what("matmul_forward"));
            launch::matmul_forward(d.gpu, prec, &mut work, &mut out, &xd, &wd, Some(&bd), rows, c, oc).unwrap();
            let bias_rows = b.repeat(rows);
            check_product(
                &d.down(&out),
                &x,
                &w,
                Gemm { beta: 1.0, ..fwd },
                prec,
                Some(&bias_rows),
                &what("matmul_forward+bias"),
            );
            let (mut dx, mut dw, mut db, mut part) =
                (d.zeros(rows * c), d.zeros(oc * c), d.zeros(oc), DevBuf::default());
            launch::matmul_backward(
                d.gpu,
                prec,
                &mut work,
                &mut part,
                Some(&mut dx),
                Some(&mut dw),
                Some(&mut db),
                &dyd,
                &xd,
                &wd,
                rows,
                c,
                oc,
            )
            .unwrap();
            let dinp = Gemm { m: rows, n: c, k: oc, a_trans: false, b_trans: false, alpha: 1.0, beta: 0.0 };
            check_product(&d.down(&dx), &dy, &w, dinp, prec, None, &what("matmul_backward dinp"));
            let dweight = Gemm { m: oc, n: c, k: rows, a_trans: true, b_trans: false, alpha: 1.0, beta: 0.0 };
            check_product(&d.down(&dw), &dy, &x, dweight, prec, None, &what("matmul_backward dweight"));
            let mut wdb = vec![0.0; oc];
            ops::col_sum(&mut wdb, &dy, rows, oc, false);
            close(&d.down(&db), &wdb, d.tol(1e-5), &what("matmul_backward dbias"));
            let mut nt = d.zeros(rows * rows);
            launch::matmul_nt(d.gpu, prec, &mut work, &mut nt, &xd, &xd, (rows, rows, c), 0.5).unwrap();
            let g = Gemm { m: rows, n: rows, k: c, a_trans: false, b_trans: true, alpha: 0.5, beta: 0.0 };
            check_product(&d.down(&nt), &x, &x, g, prec, None, &what("matmul_nt"));
        }
        // fp32 products are f32 ones: bf16 rounding would miss by ~4e-3 of the magnitude.
        let mut out = d.zeros(rows * oc);
        launch::matmul_forward(
            d.gpu,
            Precision::Fp32,
            &mut MatmulWork::default(),
            &mut out,
            &xd,
            &wd,
            None,
            rows,
            c,
            oc,
        )
        .unwrap();
        let mut want = vec![0.0; rows * oc];
        ops::matmul_forward(&mut want, &x, &w, None, rows, c, oc);
        close(&d.down(&out), &want, d.tol(2e-6), &d.what("matmul_forward fp32 against the CPU"));
        let mut wb = DevBuf::default();
        launch::matmul_aug_weight(d.gpu, &mut wb, &wd, &bd, oc, c).unwrap();
        let wbh = d.down(&wb);
        for r in 0..oc {
            assert_eq!(wbh[r * (c + 1)..r * (c + 1) + c], w[r * c..(r + 1) * c], "{}", d.what("matmul_aug_weight"));
            assert_eq!(wbh[r * (c + 1) + c], b[r], "{}", d.what("matmul_aug_weight bias"));
        }
    }
}
