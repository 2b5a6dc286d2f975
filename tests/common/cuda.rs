//! The GPUs the CUDA tests run on: the emulated one (engine/cuda/emu; always, unless no C++20
//! compiler exists: then a skip that says so, or a failure under MOCOV3_REQUIRE_CXX=1) and GPU 0
//! where the driver and CUDA 13 libraries load (else a skip that says why, or a failure under
//! MOCOV3_REQUIRE_GPU=1). Each is opened once per test binary.

use mocov3::engine::cuda::{self, DevBuf, Gpu};
use std::io::Write;
use std::sync::OnceLock;

/// One GPU under test, with the helpers the tests use on it.
#[derive(Clone, Copy)]
pub struct Dev {
    pub gpu: &'static Gpu,
    pub name: &'static str,
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

fn emulated() -> Result<&'static Gpu, &'static String> {
    static G: OnceLock<Result<Gpu, String>> = OnceLock::new();
    G.get_or_init(Gpu::emulated).as_ref()
}

fn real() -> Result<&'static Gpu, &'static String> {
    static G: OnceLock<Result<Gpu, String>> = OnceLock::new();
    G.get_or_init(|| {
        cuda::probe().map_err(|e| e.lines().next().unwrap_or_default().to_string())?;
        Gpu::new(0).map_err(|e| format!("no usable GPU: {e}"))
    })
    .as_ref()
}

/// Every GPU `test` can run on here, skips said on stderr.
pub fn gpus(test: &str) -> Vec<Dev> {
    let mut v = Vec::new();
    match emulated() {
        Ok(gpu) => v.push(Dev { gpu, name: "emulated" }),
        Err(e) => {
            assert!(!required("MOCOV3_REQUIRE_CXX"), "MOCOV3_REQUIRE_CXX=1 but the emulated GPU failed: {e}");
            skip(test, &format!("emulated GPU: {e}"));
        }
    }
    match real() {
        Ok(gpu) => v.push(Dev { gpu, name: "gpu0" }),
        Err(e) => {
            assert!(!required("MOCOV3_REQUIRE_GPU"), "MOCOV3_REQUIRE_GPU=1 but: {e}");
            skip(test, &format!("on a GPU: {e}"));
        }
    }
    v
}

impl Dev {
    pub fn up(&self, v: &[f32]) -> DevBuf<f32> {
        self.gpu.upload(v).unwrap()
    }

    pub fn zeros(&self, n: usize) -> DevBuf<f32> {
        self.gpu.zeros(n).unwrap()
    }

    pub fn down(&self, b: &DevBuf<f32>) -> Vec<f32> {
        self.gpu.download(b).unwrap()
    }

    /// The tolerance on this GPU: `t` emulated, 10 t on a real one (its expf, erff and sqrtf
    /// differ from the host's libm by a few ulps).
    pub fn tol(&self, t: f32) -> f32 {
        if self.gpu.is_emulated() {
            t
        } else {
            10.0 * t
        }
    }

    /// A check's name with the GPU's.
    pub fn what(&self, s: &str) -> String {
        format!("{s} [{}]", self.name)
    }
}

/// Values in [-2, 2) from a fixed sequence.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
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

/// Every element within `tol · (1 + |want|)`.
#[track_caller]
pub fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}
