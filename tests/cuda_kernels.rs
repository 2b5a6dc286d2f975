//! The CUDA backend on a machine without a GPU (feature `cuda`): every kernel file compiles with
//! NVRTC for `sm_90` (a CUBIN) and `compute_90` (the PTX fallback), with no error and no
//! warning; every CPU op has its kernel; and without a driver the backend reports the missing
//! library instead of panicking. NVRTC runs on the CPU: CI installs it from the PyPI wheel
//! `nvidia-cuda-nvrtc` (see `.ci/run`) and sets MOCOV3_REQUIRE_NVRTC=1, which turns a missing
//! libnvrtc from a skip into a failure.

#![cfg(feature = "cuda")]

use mocov3::engine::cuda::{self, nccl, nvrtc, Lib};
use std::io::Write;

/// A line on the real stderr (not the test harness's capture), so a skip is visible in CI's log.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The architecture CI compiles for: Hopper (H100/H200).
const ARCH: u32 = 90;

#[test]
fn every_kernel_compiles_with_nvrtc_for_sm_90_and_compute_90() {
    if let Err(e) = cuda::probe_nvrtc() {
        assert!(
            std::env::var("MOCOV3_REQUIRE_NVRTC").map_or(true, |v| v != "1"),
            "MOCOV3_REQUIRE_NVRTC=1 but NVRTC cannot be loaded:\n{e}"
        );
        say("skipped: every_kernel_compiles_with_nvrtc_for_sm_90_and_compute_90: libnvrtc.so.13 not found \
             (pip install nvidia-cuda-nvrtc==13.0.88 into a venv and put its site-packages/nvidia/cu13/lib on \
             LD_LIBRARY_PATH, as .ci/run does)");
        return;
    }
    let (major, minor) = nvrtc::version().unwrap();
    let mut failures = Vec::new();
    let mut kernels = 0;
    for &(file, src) in nvrtc::KERNEL_FILES {
        let names = nvrtc::kernel_names(src);
        assert!(!names.is_empty(), "{file} defines no kernel");
        for target in [nvrtc::Target::Cubin(ARCH), nvrtc::Target::Ptx(ARCH)] {
            match nvrtc::compile(file, src, target) {
                Err(e) => failures.push(e),
                Ok(c) if !c.log.is_empty() => {
                    failures.push(format!("{file} for {}: NVRTC said:\n{}", target.arch(), c.log))
                }
                Ok(c) => match target {
                    nvrtc::Target::Cubin(_) => {
                        if !c.image.starts_with(b"\x7fELF") {
                            failures.push(format!("{file}: the sm_{ARCH} image is not an ELF CUBIN"));
                        }
                    }
                    nvrtc::Target::Ptx(_) => {
                        let ptx = String::from_utf8_lossy(&c.image);
                        if !ptx.contains(&format!(".target sm_{ARCH}")) {
                            failures.push(format!("{file}: the PTX does not target sm_{ARCH}"));
                        }
                        for n in &names {
                            if !ptx.contains(&format!(".entry {n}(")) {
                                failures.push(format!("{file}: kernel {n} missing from the PTX"));
                            }
                        }
                    }
                },
            }
        }
        kernels += names.len();
    }
    assert!(failures.is_empty(), "NVRTC {major}.{minor}:\n{}", failures.join("\n\n"));
    say(&format!(
        "NVRTC {major}.{minor}: {} kernel files ({kernels} kernels) compiled for sm_{ARCH} and compute_{ARCH}",
        nvrtc::KERNEL_FILES.len()
    ));
}

/// Every op of `engine/ops/` (ARCHITECTURE.md's table) with the kernels that implement it on
/// the GPU; the GEMMs themselves are cuBLASLt's.
const OPS: &[(&str, &[&str])] = &[
    ("gelu_forward", &["gelu_forward"]),
    ("gelu_backward_inplace", &["gelu_backward_inplace"]),
    ("relu_forward", &["relu_forward"]),
    ("relu_inplace", &["relu_inplace"]),
    ("relu_backward_inplace", &["relu_backward_inplace"]),
    ("attention_forward", &["attention_forward"]),
    ("attention_backward", &["attention_backward_dq", "attention_backward_dkv"]),
    ("attention_forward_cls", &["attention_forward_cls"]),
    ("attention_backward_cls", &["attention_backward_cls"]),
    ("softmax_forward_inplace", &["softmax_forward_inplace"]),
    ("layernorm_forward", &["layernorm_forward"]),
    (
        "layernorm_backward",
        &["layernorm_backward", "layernorm_dweight_partial", "col_sum_partial", "col_partials_finish"],
    ),
    ("batchnorm_sum", &["batchnorm_sum_partial", "col_partials_finish"]),
    ("batchnorm_sq_dev", &["batchnorm_sq_dev_partial", "col_partials_finish"]),
    ("batchnorm_affine", &["batchnorm_affine"]),
    ("batchnorm_grad_sums", &["batchnorm_grad_sums_partial", "col_partials_finish"]),
    ("batchnorm_backward_dx", &["batchnorm_backward_dx"]),
    ("im2col", &["im2col"]),
    ("col2im", &["col2im"]),
    ("swap_inner_axes", &["swap_inner_axes"]),
    ("patchify", &["patchify"]),
    ("nchw_to_nhwc", &["nchw_to_nhwc"]),
    ("maxpool_forward", &["maxpool_forward"]),
    ("maxpool_backward", &["maxpool_backward"]),
    ("global_avg_forward", &["global_avg_forward"]),
    ("global_avg_backward", &["global_avg_backward"]),
    ("l2norm_forward", &["l2norm_forward"]),
    ("l2norm_backward", &["l2norm_backward"]),
    ("l2norm_inplace", &["l2norm_inplace"]),
    ("crossentropy_softmax_inplace", &["crossentropy_softmax_inplace", "sum_f64_finish"]),
    ("adamw_update", &["adamw_update"]),
    ("lars_trust_ratio", &["lars_norms_partial", "lars_trust_ratio"]),
    ("lars_update", &["lars_update"]),
    ("ema_update", &["ema_update"]),
    ("tokens_forward", &["tokens_forward"]),
    ("tokens_backward", &["tokens_backward_cls", "tokens_backward_patches", "col_sum_partial", "col_partials_finish"]),
    ("add_rows_strided", &["add_rows_strided"]),
    ("col_sum", &["col_sum_partial", "col_partials_finish"]),
    ("add", &["add"]),
    ("add_assign", &["add_assign"]),
    ("sum_sq_f64", &["sum_sq_f64_partial", "sum_f64_finish"]),
    ("matmul_forward", &["fill_rows", "cast_f32_to_bf16"]),
    ("matmul_forward_aug", &["matmul_aug_weight", "cast_f32_to_bf16"]),
];

#[test]
fn every_cpu_op_has_its_kernels_and_every_kernel_a_shape_comment() {
    let mut defined = std::collections::HashMap::new();
    for &(file, src) in nvrtc::KERNEL_FILES {
        for n in nvrtc::kernel_names(src) {
            assert!(defined.insert(n, file).is_none(), "kernel {n} defined twice");
        }
        // The line before each kernel is its comment (a shape comment, as on the CPU).
        let lines: Vec<&str> = src.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains("__global__ void ") {
                assert!(
                    i > 0 && lines[i - 1].trim_start().starts_with("//"),
                    "{file}:{}: kernel without a comment",
                    i + 1
                );
            }
        }
    }
    for (op, kernels) in OPS {
        for k in *kernels {
            assert!(defined.contains_key(k), "CPU op {op}: no kernel {k}");
        }
    }
    // And no kernel that no op uses (besides the bf16 read-back).
    let used: std::collections::HashSet<&str> = OPS.iter().flat_map(|(_, k)| k.iter().copied()).collect();
    for k in defined.keys() {
        assert!(used.contains(k) || *k == "cast_bf16_to_f32", "kernel {k} serves no listed op");
    }
}

#[test]
fn without_a_driver_probe_and_device_creation_name_libcuda_and_do_not_panic() {
    if Lib::Driver.is_present() {
        say("skipped: without_a_driver_...: libcuda.so.1 is present here (this test checks the error without one)");
        return;
    }
    let e = cuda::probe().unwrap_err();
    assert!(e.contains("libcuda.so.1") && e.contains("install the NVIDIA driver"), "{e}");
    assert!(e.contains("--device cpu"), "{e}");
    let e2 = cuda::CudaDevice::new(0).err().expect("no driver, yet a device opened");
    assert_eq!(e, e2);
    let e3 = cuda::probe_multi_gpu().unwrap_err();
    assert!(e3.contains("libcuda.so.1"), "{e3}");
    if !nccl::is_present() {
        assert!(e3.contains("libnccl.so.2") && e3.contains("nvidia-nccl-cu13"), "{e3}");
    }
    say(&format!("the error without a driver:\n{e}"));
}

#[test]
fn nccl_is_opened_by_its_soname_which_cudarc_does_not_try() {
    assert_eq!(nccl::NCCL_NAMES[0], "libnccl.so.2");
    // Why the backend opens NCCL itself: cudarc's candidate names miss the soname. If a later
    // cudarc tries it, engine/cuda/nccl.rs can go back to cudarc's loader.
    let candidates = cudarc::get_lib_name_candidates("nccl");
    assert!(!candidates.iter().any(|c| c == "libnccl.so.2"), "cudarc now tries libnccl.so.2: {candidates:?}");
    if nccl::is_present() {
        let v = nccl::version().unwrap();
        assert!(v >= 22700, "NCCL {v}: the bindings are 2.27's");
        // SAFETY: only dlopens cudarc's candidate names.
        let cudarc_finds = unsafe { cudarc::nccl::sys::is_culib_present() };
        say(&format!("NCCL {v} loaded by its soname (cudarc's own loader finds it: {cudarc_finds})"));
    } else {
        assert!(nccl::version().unwrap_err().contains("libnccl.so.2"));
        say("skipped (in part): nccl_is_opened_by_its_soname...: libnccl.so.2 not found (pip install nvidia-nccl-cu13, put site-packages/nvidia/nccl/lib on LD_LIBRARY_PATH)");
    }
}
