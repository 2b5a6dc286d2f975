//! `--device` (src/cli/device.rs, compiled here as the binary compiles it): `cpu`, `cuda`,
//! `cuda:N` and the errors, through clap as a command parses it. Without a driver, `--device
//! cuda` is a usage error naming libcuda.so.1 and the fix; without the `cuda` feature, one saying
//! how to rebuild.

#[path = "../src/cli/device.rs"]
#[allow(dead_code)]
mod device;

use clap::Parser;
use device::Device;

#[derive(Parser, Debug)]
struct Cmd {
    #[arg(long, default_value = "cpu", value_parser = device::parse)]
    device: Device,
}

fn parse(args: &[&str]) -> Result<Device, String> {
    Cmd::try_parse_from(std::iter::once("mocov3").chain(args.iter().copied()))
        .map(|c| c.device)
        .map_err(|e| e.to_string())
}

#[test]
fn cpu_is_the_default_and_bad_values_are_refused() {
    assert_eq!(parse(&[]).unwrap(), Device::Cpu);
    assert_eq!(parse(&["--device", "cpu"]).unwrap(), Device::Cpu);
    assert!(parse(&["--device", "tpu"]).unwrap_err().contains("`cpu`, `cuda` or `cuda:N`"));
    assert!(parse(&["--device", "cuda:x"]).unwrap_err().contains("must be a number"));
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_without_a_driver_is_a_usage_error_naming_libcuda_and_the_fix() {
    use mocov3::engine::cuda::Lib;
    use std::io::Write;
    if Lib::Driver.is_present() {
        let _ = writeln!(std::io::stderr(), "skipped: --device cuda without a driver: libcuda.so.1 is present here");
        if mocov3::engine::cuda::probe().is_ok() {
            assert_eq!(parse(&["--device", "cuda:1"]).unwrap(), Device::Cuda(1));
        }
        return;
    }
    for v in ["cuda", "cuda:0", "CUDA:3"] {
        let e = parse(&["--device", v]).unwrap_err();
        assert!(e.contains("invalid value") && e.contains("--device"), "{e}");
        assert!(e.contains("libcuda.so.1") && e.contains("install the NVIDIA driver"), "{e}");
    }
    let _ = writeln!(std::io::stderr(), "--device cuda here:\n{}", parse(&["--device", "cuda"]).unwrap_err());
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_in_a_build_without_the_feature_says_how_to_rebuild() {
    let e = parse(&["--device", "cuda"]).unwrap_err();
    assert!(e.contains("built without CUDA") && e.contains("--features cuda"), "{e}");
}

#[test]
fn pretrain_device_cuda_without_a_driver_exits_with_the_clear_error() {
    #[cfg(feature = "cuda")]
    if mocov3::engine::cuda::Lib::Driver.is_present() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: a driver is present here");
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mocov3"))
        .args(["pretrain", "--preset", "tiny-synthetic", "--device", "cuda", "--print-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let want = if cfg!(feature = "cuda") { "libcuda.so.1" } else { "--features cuda" };
    assert!(err.contains(want) && !err.contains("panicked"), "{err}");
}
