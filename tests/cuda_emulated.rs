//! The CUDA kernels run on the CPU against the CPU ops: each file of src/engine/cuda/kernels/ is
//! compiled by the system C++ compiler with tests/cuda_emu/emu.h (a stand-in for the device
//! runtime: one host thread per CUDA thread, __syncthreads a barrier, shuffles through a slot
//! array) and launched with the geometry its comments state, on small odd shapes (tails, several
//! row chunks and column blocks). This checks the kernels' index math and semantics where no GPU
//! exists; it says nothing about GPU-only behaviour (memory model, occupancy, real warp timing).
//! Skipped, saying why, without a C++20 compiler; MOCOV3_REQUIRE_CXX=1 (CI) makes that a failure.

#![cfg(feature = "cuda")]

use libloading::Library;
use mocov3::engine::cuda::nvrtc;
use mocov3::engine::ops::{self, AdamWStep, ConvShape};
use mocov3::engine::tensor::Tensor;
use std::ffi::c_void;
use std::io::Write;
use std::process::Command;
use std::sync::OnceLock;

const EMU: &str = include_str!("cuda_emu/emu.h");
/// Threads per block here: 64 (two warps, so every block reduction crosses warps) instead of the
/// launchers' 256, since each emulated thread is a host thread; the kernels take any multiple of 32.
const BLOCK: u32 = 64;
const CHUNK_ROWS: usize = 64;

struct Emu {
    libs: Vec<(Vec<&'static str>, Library)>,
}

fn compiler() -> Option<String> {
    ["c++", "g++", "clang++"]
        .iter()
        .map(|s| s.to_string())
        .find(|c| Command::new(c).arg("--version").output().map(|o| o.status.success()).unwrap_or(false))
}

fn emu() -> Option<&'static Emu> {
    static E: OnceLock<Option<Emu>> = OnceLock::new();
    E.get_or_init(|| {
        let Some(cxx) = compiler() else {
            assert!(std::env::var("MOCOV3_REQUIRE_CXX").map_or(true, |v| v != "1"), "MOCOV3_REQUIRE_CXX=1 but no C++ compiler");
            let _ = writeln!(std::io::stderr(), "skipped: cuda_emulated: no C++ compiler (c++, g++ or clang++) to run the kernels on the CPU");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("mocov3-cuda-emu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One translation unit: each kernel file (with its prelude) in a namespace of its own, the
        // kernels keeping their C names (unique across files), one launcher export per kernel.
        let mut cpp = format!("{EMU}\n");
        let mut names = Vec::new();
        for &(file, src) in nvrtc::KERNEL_FILES {
            let ns = file.trim_end_matches(".cu");
            let body = nvrtc::program_source(file, src)
                .replace("extern __shared__ float smem[];", "float* smem = (float*)emu_dynamic_shared;");
            cpp.push_str(&format!("namespace {ns} {{\n{body}\n}}\n"));
            for n in nvrtc::kernel_names(src) {
                cpp.push_str(&format!(
                    "extern \"C\" void emu_{n}(unsigned gx, unsigned gy, unsigned bx, void** a) {{ emu_launch({ns}::{n}, gx, gy, bx, a); }}\n"
                ));
                names.push(n);
            }
        }
        let (cpp_path, so) = (dir.join("kernels.cpp"), dir.join("libkernels.so"));
        std::fs::write(&cpp_path, cpp).unwrap();
        let out = Command::new(&cxx)
            .args(["-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w", "-o"])
            .arg(&so)
            .arg(&cpp_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{cxx}:\n{}", String::from_utf8_lossy(&out.stderr));
        // SAFETY: our own library, with no initialisers besides the C++ runtime's.
        let libs = vec![(names, unsafe { Library::new(&so) }.unwrap())];
        Some(Emu { libs })
    })
    .as_ref()
}

/// A kernel argument as CUDA passes it: its bytes, in an 8-byte slot.
fn a<T: Copy>(v: T) -> [u64; 1] {
    assert!(std::mem::size_of::<T>() <= 8);
    let mut b = [0u64; 1];
    // SAFETY: T fits the slot; plain bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(&v as *const T as *const u8, b.as_mut_ptr() as *mut u8, std::mem::size_of::<T>())
    };
    b
}

impl Emu {
    fn launch(&self, name: &str, grid: (u32, u32), block: u32, mut args: Vec<[u64; 1]>) {
        let mut ptrs: Vec<*mut c_void> = args.iter_mut().map(|v| v.as_mut_ptr() as *mut c_void).collect();
        // One launch at a time: the stand-in's grid, barrier and shared memory are process-wide.
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let lib = &self.libs.iter().find(|(n, _)| n.contains(&name)).unwrap_or_else(|| panic!("no kernel {name}")).1;
        // SAFETY: emu_<name> is generated above with this signature; the arguments are the kernel's.
        unsafe {
            let f = lib
                .get::<unsafe extern "C" fn(u32, u32, u32, *mut *mut c_void)>(format!("emu_{name}\0").as_bytes())
                .unwrap();
            f(grid.0, grid.1, block, ptrs.as_mut_ptr());
        }
    }
}

macro_rules! launch {
    ($e:expr, $name:expr, $grid:expr, $block:expr; $($arg:expr),* $(,)?) => {
        $e.launch($name, $grid, $block, vec![$(a($arg)),*])
    };
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

#[track_caller]
fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

fn blocks(n: usize) -> u32 {
    // Fewer blocks than elements need: the grid-stride loops are exercised too.
    (n.div_ceil(BLOCK as usize) as u32).clamp(1, 2)
}

/// col_partials_finish: the ordered sum of column partials, `width` columns from `col0`.
#[allow(clippy::too_many_arguments)]
fn col_finish(
    e: &Emu,
    out: &mut [f32],
    partials: &[f32],
    chunks: usize,
    stride: usize,
    col0: usize,
    width: usize,
    acc: bool,
) {
    launch!(e, "col_partials_finish", (width.div_ceil(BLOCK as usize) as u32, 1), BLOCK;
        out.as_mut_ptr(), partials.as_ptr(), chunks as i32, stride as i32, col0 as i32, width as i32, acc as i32);
}

#[test]
fn activations() {
    let Some(e) = emu() else { return };
    let n = 1001;
    let (x, g) = (values(n, 1), values(n, 2));
    let mut want = vec![0.0; n];
    ops::gelu_forward(&mut want, &x);
    let mut got = vec![0.0; n];
    launch!(e, "gelu_forward", (blocks(n), 1), BLOCK; got.as_mut_ptr(), x.as_ptr(), n as u64);
    close(&got, &want, 1e-6, "gelu_forward");
    let (mut want, mut got) = (g.clone(), g.clone());
    ops::gelu_backward_inplace(&mut want, &x);
    launch!(e, "gelu_backward_inplace", (blocks(n), 1), BLOCK; got.as_mut_ptr(), x.as_ptr(), n as u64);
    close(&got, &want, 1e-5, "gelu_backward_inplace");
    let (mut want, mut got) = (vec![0.0; n], vec![0.0; n]);
    ops::relu_forward(&mut want, &x);
    launch!(e, "relu_forward", (blocks(n), 1), BLOCK; got.as_mut_ptr(), x.as_ptr(), n as u64);
    assert_eq!(got, want, "relu_forward");
    let mut inpl = x.clone();
    launch!(e, "relu_inplace", (blocks(n), 1), BLOCK; inpl.as_mut_ptr(), n as u64);
    assert_eq!(inpl, want, "relu_inplace");
    let (mut wd, mut gd) = (g.clone(), g.clone());
    ops::relu_backward_inplace(&mut wd, &want);
    launch!(e, "relu_backward_inplace", (blocks(n), 1), BLOCK; gd.as_mut_ptr(), want.as_ptr(), n as u64);
    assert_eq!(gd, wd, "relu_backward_inplace");
}

#[test]
fn layernorm_forward_and_backward() {
    let Some(e) = emu() else { return };
    let (rows, c) = (70, 45);
    let (x, w, b, dy) = (values(rows * c, 3), values(c, 4), values(c, 5), values(rows * c, 6));
    for stride in [c, c + 1] {
        let (mut want, mut wst) = (vec![0.0; rows * stride], vec![0.0; rows * 2]);
        ops::layernorm_forward(&mut want, &mut wst, &x, &w, &b, rows, c, stride, 1e-6);
        let (mut got, mut gst) = (vec![0.0; rows * stride], vec![0.0; rows * 2]);
        launch!(e, "layernorm_forward", (rows as u32, 1), BLOCK;
            got.as_mut_ptr(), gst.as_mut_ptr(), x.as_ptr(), w.as_ptr(), b.as_ptr(), rows as i32, c as i32, stride as i32, 1e-6f32);
        close(&got, &want, 2e-6, "layernorm_forward");
        close(&gst, &wst, 2e-6, "layernorm_forward stats");
    }
    let (mut y, mut st) = (vec![0.0; rows * c], vec![0.0; rows * 2]);
    ops::layernorm_forward(&mut y, &mut st, &x, &w, &b, rows, c, c, 1e-6);
    let (mut wdx, mut wdw, mut wdb) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
    ops::layernorm_backward(&mut wdx, Some(&mut wdw), Some(&mut wdb), &dy, &x, &w, &st, rows, c);
    let mut gdx = vec![0.0; rows * c];
    launch!(e, "layernorm_backward", (rows as u32, 1), BLOCK;
        gdx.as_mut_ptr(), dy.as_ptr(), x.as_ptr(), w.as_ptr(), st.as_ptr(), rows as i32, c as i32);
    close(&gdx, &wdx, 1e-5, "layernorm_backward dinp");
    let chunks = rows.div_ceil(CHUNK_ROWS);
    assert_eq!(chunks, 2);
    let mut part = vec![0.0; chunks * c];
    launch!(e, "layernorm_dweight_partial", (c.div_ceil(BLOCK as usize) as u32, chunks as u32), BLOCK;
        part.as_mut_ptr(), dy.as_ptr(), x.as_ptr(), st.as_ptr(), rows as i32, c as i32);
    let mut gdw = vec![0.0; c];
    col_finish(e, &mut gdw, &part, chunks, c, 0, c, false);
    close(&gdw, &wdw, 1e-5, "layernorm_backward dweight");
    launch!(e, "col_sum_partial", (c.div_ceil(BLOCK as usize) as u32, chunks as u32), BLOCK; part.as_mut_ptr(), dy.as_ptr(), rows as i32, c as i32);
    let mut gdb = vec![1.0; c];
    col_finish(e, &mut gdb, &part, chunks, c, 0, c, true);
    let plus1: Vec<f32> = wdb.iter().map(|v| v + 1.0).collect();
    close(&gdb, &plus1, 1e-5, "layernorm_backward dbias (col_sum, accumulated)");
}

#[test]
fn batchnorm_pieces() {
    let Some(e) = emu() else { return };
    let (rows, c, range) = (150, 300, 5..140usize);
    let (x, dy, alpha, shift) = (values(rows * c, 7), values(rows * c, 8), values(c, 9), values(c, 10));
    let chunks = range.len().div_ceil(CHUNK_ROWS);
    let grid = (c.div_ceil(BLOCK as usize) as u32, chunks as u32);
    let (r0, r1) = (range.start as i32, range.end as i32);
    let mut partials = Tensor::new();
    let mut want = vec![0.0; c];
    ops::batchnorm_sum(&mut partials, &mut want, &x, range.clone(), c);
    let mut part = vec![0.0; chunks * 2 * c];
    launch!(e, "batchnorm_sum_partial", grid, BLOCK; part.as_mut_ptr(), x.as_ptr(), r0, r1, c as i32);
    let mut got = vec![0.0; c];
    col_finish(e, &mut got, &part, chunks, c, 0, c, false);
    close(&got, &want, 1e-5, "batchnorm_sum");
    let mean: Vec<f32> = want.iter().map(|s| s / range.len() as f32).collect();
    ops::batchnorm_sq_dev(&mut partials, &mut want, &x, &mean, range.clone(), c);
    launch!(e, "batchnorm_sq_dev_partial", grid, BLOCK; part.as_mut_ptr(), x.as_ptr(), mean.as_ptr(), r0, r1, c as i32);
    col_finish(e, &mut got, &part, chunks, c, 0, c, false);
    close(&got, &want, 1e-5, "batchnorm_sq_dev");
    let rstd: Vec<f32> = want.iter().map(|q| 1.0 / (q / range.len() as f32 + 1e-5).sqrt()).collect();
    let (mut wsdy, mut wsdyx) = (vec![0.0; c], vec![0.0; c]);
    ops::batchnorm_grad_sums(&mut partials, &mut wsdy, &mut wsdyx, &dy, &x, &mean, &rstd, range.clone(), c);
    launch!(e, "batchnorm_grad_sums_partial", grid, BLOCK;
        part.as_mut_ptr(), dy.as_ptr(), x.as_ptr(), mean.as_ptr(), rstd.as_ptr(), r0, r1, c as i32);
    let (mut gsdy, mut gsdyx) = (vec![0.0; c], vec![0.0; c]);
    col_finish(e, &mut gsdyx, &part, chunks, 2 * c, 0, c, false);
    col_finish(e, &mut gsdy, &part, chunks, 2 * c, c, c, false);
    close(&gsdy, &wsdy, 1e-5, "batchnorm_grad_sums sdy");
    close(&gsdyx, &wsdyx, 1e-5, "batchnorm_grad_sums sdyx");
    let (mut want, mut got) = (vec![0.0; rows * c], vec![0.0; rows * c]);
    ops::batchnorm_affine(&mut want, &x, &alpha, &shift, rows, c);
    launch!(e, "batchnorm_affine", (blocks(rows * c), 1), BLOCK;
        got.as_mut_ptr(), x.as_ptr(), alpha.as_ptr(), shift.as_ptr(), rows as i32, c as i32);
    close(&got, &want, 1e-6, "batchnorm_affine");
    ops::batchnorm_backward_dx(&mut want, &dy, &x, &alpha, &shift, &mean, rows, c);
    launch!(e, "batchnorm_backward_dx", (blocks(rows * c), 1), BLOCK;
        got.as_mut_ptr(), dy.as_ptr(), x.as_ptr(), alpha.as_ptr(), shift.as_ptr(), mean.as_ptr(), rows as i32, c as i32);
    close(&got, &want, 1e-6, "batchnorm_backward_dx");
}

#[test]
fn attention_softmax_and_the_cls_path() {
    let Some(e) = emu() else { return };
    // t > 32: the score rows' reductions span both warps of a block.
    let (batch, t, d, h) = (2, 37, 12, 3);
    let scale = ops::attention_scale(d, h);
    let (qkv, dout, dcls) = (values(batch * t * 3 * d, 11), values(batch * t * d, 12), values(batch * d, 13));
    let (mut wo, mut wp) = (vec![0.0; batch * t * d], vec![0.0; batch * h * t * t]);
    ops::attention_forward(&mut wo, &mut wp, &qkv, batch, t, d, h);
    let (mut go, mut gp) = (vec![0.0; batch * t * d], vec![0.0; batch * h * t * t]);
    let grid = (t as u32, (batch * h) as u32);
    launch!(e, "attention_forward", grid, BLOCK; go.as_mut_ptr(), gp.as_mut_ptr(), qkv.as_ptr(), batch as i32, t as i32, d as i32, h as i32, scale);
    close(&go, &wo, 1e-5, "attention_forward out");
    close(&gp, &wp, 1e-5, "attention_forward probs");
    let mut scratch = Tensor::new();
    let mut wd = vec![0.0; batch * t * 3 * d];
    ops::attention_backward(&mut wd, &mut scratch, &dout, &qkv, &wp, batch, t, d, h);
    let (mut gd, mut gs) = (vec![f32::NAN; batch * t * 3 * d], vec![0.0; batch * h * t * t]);
    let args = |gd: &mut Vec<f32>, gs: &mut Vec<f32>| {
        vec![
            a(gd.as_mut_ptr()),
            a(gs.as_mut_ptr()),
            a(dout.as_ptr()),
            a(qkv.as_ptr()),
            a(wp.as_ptr()),
            a(batch as i32),
            a(t as i32),
            a(d as i32),
            a(h as i32),
            a(scale),
        ]
    };
    e.launch("attention_backward_dq", grid, BLOCK, args(&mut gd, &mut gs));
    e.launch("attention_backward_dkv", grid, BLOCK, args(&mut gd, &mut gs));
    close(&gd, &wd, 1e-5, "attention_backward dqkv");

    let (mut wo, mut wp) = (vec![0.0; batch * d], vec![0.0; batch * h * t]);
    ops::attention_forward_cls(&mut wo, &mut wp, &qkv, batch, t, d, h);
    let (mut go, mut gp) = (vec![0.0; batch * d], vec![0.0; batch * h * t]);
    launch!(e, "attention_forward_cls", ((batch * h) as u32, 1), BLOCK; go.as_mut_ptr(), gp.as_mut_ptr(), qkv.as_ptr(), batch as i32, t as i32, d as i32, h as i32, scale);
    close(&go, &wo, 1e-5, "attention_forward_cls out");
    close(&gp, &wp, 1e-5, "attention_forward_cls probs");
    let mut wd = vec![0.0; batch * t * 3 * d];
    ops::attention_backward_cls(&mut wd, &mut scratch, &dcls, &qkv, &wp, batch, t, d, h);
    let mut gd = vec![f32::NAN; batch * t * 3 * d];
    launch!(e, "attention_backward_cls", ((batch * h) as u32, 1), BLOCK;
        gd.as_mut_ptr(), dcls.as_ptr(), qkv.as_ptr(), wp.as_ptr(), batch as i32, t as i32, d as i32, h as i32, scale);
    close(&gd, &wd, 1e-5, "attention_backward_cls dqkv");

    let (rows, n) = (5, 300);
    let x = values(rows * n, 14);
    let mut want = x.clone();
    want.chunks_mut(n).for_each(ops::softmax_forward_inplace);
    let mut got = x.clone();
    launch!(e, "softmax_forward_inplace", (rows as u32, 1), BLOCK; got.as_mut_ptr(), rows as i32, n as i32);
    close(&got, &want, 1e-6, "softmax_forward_inplace");
}

#[test]
fn l2norm_and_the_loss() {
    let Some(e) = emu() else { return };
    let (rows, d) = (9, 70);
    let (x, g) = (values(rows * d, 15), values(rows * d, 16));
    let (mut wo, mut wn) = (vec![0.0; rows * d], vec![0.0; rows]);
    ops::l2norm_forward(&mut wo, &mut wn, &x, rows, d);
    let (mut go, mut gn) = (vec![0.0; rows * d], vec![0.0; rows]);
    launch!(e, "l2norm_forward", (rows as u32, 1), BLOCK; go.as_mut_ptr(), gn.as_mut_ptr(), x.as_ptr(), rows as i32, d as i32);
    close(&go, &wo, 1e-6, "l2norm_forward");
    close(&gn, &wn, 1e-6, "l2norm_forward norms");
    let mut inpl = x.clone();
    launch!(e, "l2norm_inplace", (rows as u32, 1), BLOCK; inpl.as_mut_ptr(), rows as i32, d as i32);
    close(&inpl, &wo, 1e-6, "l2norm_inplace");
    let (mut wd, mut gd) = (vec![0.0; rows * d], vec![0.0; rows * d]);
    ops::l2norm_backward(&mut wd, &g, &wo, &wn, rows, d);
    launch!(e, "l2norm_backward", (rows as u32, 1), BLOCK; gd.as_mut_ptr(), g.as_ptr(), wo.as_ptr(), wn.as_ptr(), rows as i32, d as i32);
    close(&gd, &wd, 1e-5, "l2norm_backward");

    let (rows, c) = (6, 333);
    let logits: Vec<f32> = values(rows * c, 17).iter().map(|v| v * 5.0).collect();
    let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 97) % c as u32).collect();
    let mut want = logits.clone();
    let wl = ops::crossentropy_softmax_inplace(&mut want, &labels, rows, c, 0.25);
    let (mut got, mut row_loss, mut total) = (logits.clone(), vec![0.0f64; rows], [0.0f64]);
    launch!(e, "crossentropy_softmax_inplace", (rows as u32, 1), BLOCK;
        got.as_mut_ptr(), row_loss.as_mut_ptr(), labels.as_ptr(), rows as i32, c as i32, 0.25f32);
    launch!(e, "sum_f64_finish", (1, 1), BLOCK; total.as_mut_ptr(), row_loss.as_ptr(), rows as i32);
    close(&got, &want, 1e-6, "crossentropy_softmax_inplace gradient");
    assert!((total[0] - wl).abs() < 1e-5 * wl.abs(), "crossentropy loss {} vs {wl}", total[0]);
}

#[test]
fn convolution_columns_and_layouts() {
    let Some(e) = emu() else { return };
    let g = ConvShape { images: 2, h: 5, w: 6, c: 3, k: 3, s: 2, p: 1 };
    let (oh, ow) = g.out_hw();
    let x = values(g.images * g.h * g.w * g.c, 18);
    let mut want = Tensor::new();
    ops::im2col(&mut want, &x, g);
    let kk = g.c * g.k * g.k;
    let n = g.images * oh * ow * kk;
    let mut got = vec![f32::NAN; n];
    let geo = |p: *mut f32, q: *const f32| {
        vec![
            a(p),
            a(q),
            a(g.images as i32),
            a(g.h as i32),
            a(g.w as i32),
            a(g.c as i32),
            a(g.k as i32),
            a(g.s as i32),
            a(g.p as i32),
            a(oh as i32),
            a(ow as i32),
        ]
    };
    e.launch("im2col", (blocks(n), 1), BLOCK, geo(got.as_mut_ptr(), x.as_ptr()));
    assert_eq!(got, want[..n], "im2col");
    let dcols = values(n, 19);
    let mut wdx = vec![0.0; x.len()];
    ops::col2im(&mut wdx, &dcols, g);
    let mut gdx = vec![f32::NAN; x.len()];
    e.launch("col2im", (blocks(x.len()), 1), BLOCK, geo(gdx.as_mut_ptr(), dcols.as_ptr()));
    close(&gdx, &wdx, 1e-6, "col2im");

    let (batch, c, img, p) = (2, 3, 8, 4);
    let imgs = values(batch * c * img * img, 20);
    let mut want = Tensor::new();
    ops::patchify(&mut want, &imgs, batch, c, img, p);
    let mut got = vec![f32::NAN; imgs.len()];
    launch!(e, "patchify", (blocks(imgs.len()), 1), BLOCK; got.as_mut_ptr(), imgs.as_ptr(), batch as i32, c as i32, img as i32, p as i32);
    assert_eq!(got, want[..imgs.len()], "patchify");
    ops::nchw_to_nhwc(&mut want, &imgs, batch, c, img * img);
    launch!(e, "nchw_to_nhwc", (blocks(imgs.len()), 1), BLOCK; got.as_mut_ptr(), imgs.as_ptr(), batch as i32, c as i32, (img * img) as i32);
    assert_eq!(got, want[..imgs.len()], "nchw_to_nhwc");
}

#[test]
fn pooling() {
    let Some(e) = emu() else { return };
    let (images, h, w, c, k, s, p) = (2, 7, 6, 3, 3, 2, 1);
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    // Repeated values: ties must keep the first maximum, as the CPU.
    let x: Vec<f32> = values(images * h * w * c, 21).iter().map(|v| (v * 2.0).round()).collect();
    let no = images * oh * ow * c;
    let (mut wo, mut wa) = (vec![0.0; no], vec![0u32; no]);
    ops::maxpool_forward(&mut wo, &mut wa, &x, (images, h, w, c), k, s, p);
    let (mut go, mut ga) = (vec![0.0; no], vec![0u32; no]);
    let geo = [images, h, w, c, k, s, p, oh, ow].map(|v| a(v as i32));
    let mut args = vec![a(go.as_mut_ptr()), a(ga.as_mut_ptr()), a(x.as_ptr())];
    args.extend(geo);
    e.launch("maxpool_forward", (blocks(no), 1), BLOCK, args);
    assert_eq!(go, wo, "maxpool_forward");
    assert_eq!(ga, wa, "maxpool_forward argmax");
    let dout = values(no, 22);
    let mut wd = vec![0.0; x.len()];
    ops::maxpool_backward(&mut wd, &dout, &wa, (images, h, w, c), oh * ow * c);
    let mut gd = vec![f32::NAN; x.len()];
    let mut args = vec![a(gd.as_mut_ptr()), a(dout.as_ptr()), a(wa.as_ptr())];
    args.extend(geo);
    e.launch("maxpool_backward", (blocks(x.len()), 1), BLOCK, args);
    close(&gd, &wd, 1e-6, "maxpool_backward");

    let hw = h * w;
    let (mut wo, mut go) = (vec![0.0; images * c], vec![0.0; images * c]);
    ops::global_avg_forward(&mut wo, &x, images, hw, c);
    launch!(e, "global_avg_forward", (1, 1), BLOCK; go.as_mut_ptr(), x.as_ptr(), images as i32, hw as i32, c as i32);
    close(&go, &wo, 1e-6, "global_avg_forward");
    let (mut wd, mut gd) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    ops::global_avg_backward(&mut wd, &wo, images, hw, c);
    launch!(e, "global_avg_backward", (blocks(x.len()), 1), BLOCK; gd.as_mut_ptr(), wo.as_ptr(), images as i32, hw as i32, c as i32);
    close(&gd, &wd, 1e-6, "global_avg_backward");
}

#[test]
fn optimiser_updates() {
    let Some(e) = emu() else { return };
    let n = 777;
    let (w0, g, m0, v0) =
        (values(n, 23), values(n, 24), values(n, 25), values(n, 26).iter().map(|v| v.abs()).collect::<Vec<_>>());
    let s = AdamWStep { step_size: 0.01, w1: 0.1, b2: 0.999, w2: 0.001, eps: 1e-8, bc2_sqrt: 0.3, decay: 0.99 };
    let (mut ww, mut wm, mut wv) = (w0.clone(), m0.clone(), v0.clone());
    ops::adamw_update(&mut ww, &g, &mut wm, &mut wv, s);
    let (mut gw, mut gm, mut gv) = (w0.clone(), m0.clone(), v0.clone());
    launch!(e, "adamw_update", (blocks(n), 1), BLOCK; gw.as_mut_ptr(), g.as_ptr(), gm.as_mut_ptr(), gv.as_mut_ptr(), n as u64,
        s.step_size, s.w1, s.b2, s.w2, s.eps, s.bc2_sqrt, s.decay);
    close(&gw, &ww, 1e-6, "adamw_update w");
    close(&gm, &wm, 1e-6, "adamw_update m");
    close(&gv, &wv, 1e-6, "adamw_update v");

    let (mut wk, mut gk) = (w0.clone(), w0.clone());
    ops::ema_update(&mut wk, &g, 0.99, 0.01);
    launch!(e, "ema_update", (blocks(n), 1), BLOCK; gk.as_mut_ptr(), g.as_ptr(), n as u64, 0.99f32, 0.01f32);
    close(&gk, &wk, 1e-7, "ema_update");

    let (wd, eta) = (1e-4f32, 0.001f64);
    let want_ratio = ops::lars_trust_ratio(&w0, &g, wd, eta);
    let nb = 2u32;
    let (mut part, mut ratio) = (vec![0.0f64; 2 * nb as usize], [0.0f32]);
    launch!(e, "lars_norms_partial", (nb, 1), BLOCK; part.as_mut_ptr(), w0.as_ptr(), g.as_ptr(), n as u64, wd);
    launch!(e, "lars_trust_ratio", (1, 1), BLOCK; ratio.as_mut_ptr(), part.as_ptr(), nb as i32, eta);
    close(&ratio, &[want_ratio], 1e-6, "lars_trust_ratio");
    let zero = vec![0.0f32; n];
    launch!(e, "lars_norms_partial", (nb, 1), BLOCK; part.as_mut_ptr(), zero.as_ptr(), g.as_ptr(), n as u64, wd);
    launch!(e, "lars_trust_ratio", (1, 1), BLOCK; ratio.as_mut_ptr(), part.as_ptr(), nb as i32, eta);
    assert_eq!(ratio[0], 1.0, "lars_trust_ratio of a zero weight");
    let (mut ww, mut wmu, mut gw, mut gmu) = (w0.clone(), m0.clone(), w0.clone(), m0.clone());
    ops::lars_update(&mut ww, &g, &mut wmu, 0.1, 0.9, wd, want_ratio);
    let r = [want_ratio];
    launch!(e, "lars_update", (blocks(n), 1), BLOCK; gw.as_mut_ptr(), g.as_ptr(), gmu.as_mut_ptr(), r.as_ptr(), n as u64, 0.1f32, 0.9f32, wd);
    close(&gw, &ww, 1e-6, "lars_update w");
    close(&gmu, &wmu, 1e-6, "lars_update mu");
}

#[test]
fn tokens_sums_and_norms() {
    let Some(e) = emu() else { return };
    let (batch, t, d) = (3, 5, 70);
    let (patches, cls, pos) = (values(batch * (t - 1) * d, 27), values(d, 28), values(t * d, 29));
    let n = batch * t * d;
    for with_pos in [false, true] {
        let p = with_pos.then_some(&pos[..]);
        let mut want = vec![0.0; n];
        ops::tokens_forward(&mut want, &patches, &cls, p, batch, t, d);
        let mut got = vec![f32::NAN; n];
        let pp = if with_pos { pos.as_ptr() } else { std::ptr::null() };
        launch!(e, "tokens_forward", (blocks(n), 1), BLOCK; got.as_mut_ptr(), patches.as_ptr(), cls.as_ptr(), pp, batch as i32, t as i32, d as i32);
        assert_eq!(got, want, "tokens_forward (pos {with_pos})");
    }
    let dt = values(n, 30);
    let (mut wc, mut wp, mut wpa) = (vec![0.0; d], vec![0.0; t * d], vec![0.0; batch * (t - 1) * d]);
    ops::tokens_backward(Some(&mut wc), Some(&mut wp), Some(&mut wpa), &dt, batch, t, d);
    let (mut gc, mut gpa) = (vec![0.0; d], vec![0.0; wpa.len()]);
    launch!(e, "tokens_backward_cls", (1, 1), BLOCK; gc.as_mut_ptr(), dt.as_ptr(), batch as i32, t as i32, d as i32);
    launch!(e, "tokens_backward_patches", (blocks(wpa.len()), 1), BLOCK; gpa.as_mut_ptr(), dt.as_ptr(), batch as i32, t as i32, d as i32);
    close(&gc, &wc, 1e-6, "tokens_backward dcls");
    assert_eq!(gpa, wpa, "tokens_backward dpatches");
    // dpos: col_sum over the images of dtokens as [batch, t·d] (t·d > 256: two column blocks).
    let mut part = vec![0.0; t * d];
    launch!(e, "col_sum_partial", ((t * d).div_ceil(BLOCK as usize) as u32, 1), BLOCK; part.as_mut_ptr(), dt.as_ptr(), batch as i32, (t * d) as i32);
    let mut gp = vec![0.0; t * d];
    col_finish(e, &mut gp, &part, 1, t * d, 0, t * d, false);
    close(&gp, &wp, 1e-6, "tokens_backward dpos (col_sum)");

    let (x, y) = (values(n, 31), values(n, 32));
    let (mut want, mut got) = (vec![0.0; n], vec![0.0; n]);
    ops::add(&mut want, &x, &y);
    launch!(e, "add", (blocks(n), 1), BLOCK; got.as_mut_ptr(), x.as_ptr(), y.as_ptr(), n as u64);
    assert_eq!(got, want, "add");
    let mut got = x.clone();
    launch!(e, "add_assign", (blocks(n), 1), BLOCK; got.as_mut_ptr(), y.as_ptr(), n as u64);
    assert_eq!(got, want, "add_assign");
    let small = values(batch * d, 33);
    let (mut want, mut got) = (x.clone(), x.clone());
    ops::add_rows_strided(&mut want, &small, batch, t * d, d);
    launch!(e, "add_rows_strided", (1, 1), BLOCK; got.as_mut_ptr(), small.as_ptr(), batch as i32, (t * d) as i32, d as i32);
    assert_eq!(got, want, "add_rows_strided");
    let want = ops::sum_sq_f64(&x);
    let (mut part, mut total) = (vec![0.0f64; 3], [0.0f64]);
    launch!(e, "sum_sq_f64_partial", (3, 1), BLOCK; part.as_mut_ptr(), x.as_ptr(), n as u64);
    launch!(e, "sum_f64_finish", (1, 1), BLOCK; total.as_mut_ptr(), part.as_ptr(), 3i32);
    assert!((total[0] - want).abs() < 1e-12 * want, "sum_sq_f64: {} vs {want}", total[0]);
}

/// f32 → bf16 bits, round to nearest even, NaN kept quiet (the reference for cast.cu).
fn bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if f.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[test]
fn bf16_casts_and_the_linear_helpers() {
    let Some(e) = emu() else { return };
    let mut x = values(600, 34);
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
    let mut bits = vec![0u16; n];
    launch!(e, "cast_f32_to_bf16", (blocks(n), 1), BLOCK; bits.as_mut_ptr(), x.as_ptr(), n as u64);
    for (i, (&b, &v)) in bits.iter().zip(&x).enumerate() {
        assert_eq!(b, bf16_bits(v), "cast_f32_to_bf16[{i}] of {v}");
    }
    assert_eq!(bits[n - 10], 0x3f80, "a tie rounds to even (down)");
    assert_eq!(bits[n - 9], 0x3f82, "a tie rounds to even (up)");
    let mut back = vec![0.0f32; n];
    launch!(e, "cast_bf16_to_f32", (blocks(n), 1), BLOCK; back.as_mut_ptr(), bits.as_ptr(), n as u64);
    for i in 0..n {
        assert_eq!(back[i].to_bits(), (bits[i] as u32) << 16, "cast_bf16_to_f32[{i}]");
    }

    let (rows, oc, c) = (4, 5, 6);
    let (bias, w) = (values(oc, 35), values(oc * c, 36));
    let mut y = vec![0.0; rows * oc];
    launch!(e, "fill_rows", (1, 1), BLOCK; y.as_mut_ptr(), bias.as_ptr(), rows as i32, oc as i32);
    assert_eq!(y, bias.repeat(rows), "fill_rows");
    let mut wb = vec![0.0; oc * (c + 1)];
    launch!(e, "matmul_aug_weight", (1, 1), BLOCK; wb.as_mut_ptr(), w.as_ptr(), bias.as_ptr(), oc as i32, c as i32);
    for r in 0..oc {
        assert_eq!(wb[r * (c + 1)..r * (c + 1) + c], w[r * c..(r + 1) * c], "matmul_aug_weight row {r}");
        assert_eq!(wb[r * (c + 1) + c], bias[r], "matmul_aug_weight bias {r}");
    }
}
