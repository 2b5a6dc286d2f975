//! Data-parallel pre-training over MPI (built with `--features mpi`; needs Open MPI's `mpirun`,
//! which `scripts/test.sh` installs): two processes with global batch 16 train as one process
//! with batch 16 (losses within 1e-5; final weights within 1e-5 for a ViT with BN heads, 1e-4
//! for a ResNet-18 with SyncBN everywhere; the ranks' own check that they hold bit-identical
//! weights after every epoch passes), a 2-process run killed and resumed ends bit-exactly as an uninterrupted one,
//! and ranks that disagree or fail end the job with the failing rank's message instead of
//! hanging.
#![cfg(feature = "mpi")]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mocov3");

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocov3-dp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `pretrain` on the tiny synthetic preset, batch 16, `epochs` × `steps` steps, every loss logged.
fn pretrain_args(out: &Path, epochs: usize, steps: usize, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["pretrain", "--preset", "tiny-synthetic", "--batch-size", "16", "--threads", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--epochs".into(), epochs.to_string(), "--max-steps-per-epoch".into(), steps.to_string()]);
    a.extend(["--out".into(), out.display().to_string(), "--set".into(), "log_every=1".into()]);
    for s in extra {
        a.extend(["--set".into(), s.to_string()]);
    }
    a
}

/// `mpirun` for Open MPI as root in a container: allowed explicitly, no ptrace-based copies.
fn mpirun() -> Command {
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .process_group(0);
    c
}

/// Wait for `child` at most `limit`; a job still running then is killed (with its process group)
/// and the test fails: a hang is a bug.
fn wait_or_kill(mut child: Child, limit: Duration, what: &str) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > limit {
            kill_group(&child);
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_group(child: &Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
}

fn run_ok(mut cmd: Command, what: &str) -> String {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("mpirun not found");
    let out = wait_or_kill(child, Duration::from_secs(600), what);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{what} failed:\n{err}\n{}", String::from_utf8_lossy(&out.stdout));
    err
}

fn one_process(args: &[String]) -> String {
    let mut c = Command::new(BIN);
    c.args(args);
    run_ok(c, "one process")
}

fn two_ranks(args: &[String]) -> String {
    let mut c = mpirun();
    c.args(["-np", "2", BIN]).args(args);
    run_ok(c, "mpirun -np 2")
}

fn logged_losses(out: &Path) -> Vec<f64> {
    common::logged_steps(out).into_iter().map(|(_, loss)| loss).collect()
}

fn tensors(out: &Path) -> Vec<(String, Vec<f32>)> {
    common::checkpoint_tensors(&out.join("checkpoint.safetensors"))
}

/// Two ranks against one process: the same losses within 1e-5 relative, and every tensor
/// (weights, BN buffers, optimiser state) within `tol` of its largest magnitude (at least 0.01).
fn check_parity(name: &str, extra: &[&str], tol: f64) {
    let (one, two) = (tmp(&format!("{name}-1")), tmp(&format!("{name}-2")));
    one_process(&pretrain_args(&one, 2, 3, extra));
    let err = two_ranks(&pretrain_args(&two, 2, 3, extra));
    assert!(err.contains("8 on each of 2: MPI"), "the run says how it is split:\n{err}");
    let (a, b) = (logged_losses(&one), logged_losses(&two));
    assert_eq!(a.len(), 6, "6 steps logged");
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{name} step {}: loss {x} alone, {y} on 2 ranks", i + 1);
    }
    let (ta, tb) = (tensors(&one), tensors(&two));
    assert_eq!(ta.len(), tb.len());
    let mut worst = 0.0f64;
    for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        // Elements whose exact gradient is zero: the key third of a qkv bias (softmax is
        // shift-invariant in the keys) and the final norm's bias (the projector's first BN
        // removes a constant shift). AdamW turns their rounding noise into steps of up to the
        // lr, in one process as in two: they are compared against the lr, the rest strictly (as
        // tests/parity.rs does).
        let d = va.len() / 3;
        let loose = if na.ends_with("qkv.bias") {
            d..2 * d
        } else if na.ends_with("encoder.norm.bias") || na.ends_with("encoder.head.1.running_mean") {
            // (and the running mean of the BN after the projector's first layer, which follows
            // that bias; it is not used in training)
            0..va.len()
        } else {
            0..0
        };
        let noise = va[loose.clone()].iter().zip(&vb[loose.clone()]).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(noise <= 1e-3, "{name}: {na}, where the gradient is zero, differs by {noise}");
        let strict = |v: &[f32]| [&v[..loose.start], &v[loose.end..]].concat();
        let (va, vb) = (strict(va), strict(vb));
        // Relative to the tensor's largest magnitude, floored at 0.01: tensors that are all
        // near zero (zero-initialised biases after a few lr-sized AdamW steps, the running mean
        // of a BN after a linear layer, ~1e-8) hold rounding noise of the order of 1e-9.
        let scale = va.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-2) as f64;
        let diff = va.iter().zip(&vb).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
        worst = worst.max(diff / scale);
        assert!(diff <= tol * scale, "{name}: {na} differs by {diff:e} (largest value {scale:e})");
    }
    eprintln!("{name}: {} tensors, largest relative difference {worst:e}", ta.len());
}

#[test]
fn two_ranks_train_as_one_process_vit() {
    check_parity("vit", &[], 1e-5);
}

#[test]
fn two_ranks_train_as_one_process_resnet18() {
    check_parity(
        "resnet18",
        &[
            "arch=\"resnet18\"",
            "cifar_stem=true",
            "stop_grad_conv1=false",
            "optimizer=\"lars\"",
            "lr=0.3",
            "moco_t=1.0",
        ],
        // BatchNorms over a few rows amplify rounding: two orders of summation (8 + 8 rows
        // all-reduced against 16) move the LARS buffer of one BN bias by 5.7e-5 of its scale
        // after 6 steps (every other tensor stays under 7e-6), and the official float32 ResNet
        // step sits a median 0.07% from float64 (tests/resnet_parity.rs). A wrong all-reduce or
        // per-rank BN statistics differ by percents.
        1e-4,
    );
}

/// Killed (SIGKILL to the whole job) after its first epoch's checkpoint, then resumed: the final
/// checkpoint and the log equal those of a run that was never interrupted, bit for bit.
#[test]
fn a_killed_two_rank_run_resumes_bit_exactly() {
    let (straight, split) = (tmp("straight"), tmp("killed"));
    two_ranks(&pretrain_args(&straight, 3, 40, &[]));

    let mut cmd = mpirun();
    cmd.args(["-np", "2", BIN]).args(pretrain_args(&split, 3, 40, &[]));
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut killed_after = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("epoch 1/3 done") {
            kill_group(&child);
            killed_after = Some(line);
            break;
        }
    }
    let _ = child.wait();
    assert!(killed_after.is_some(), "the run never reported its first epoch");
    let state = mocov3::train::checkpoint::read_state(&split.join("checkpoint.safetensors")).unwrap();
    assert!(state.epoch < 3, "killed before the end (checkpoint of epoch {})", state.epoch);

    let ck = split.join("checkpoint.safetensors").display().to_string();
    let mut resume = vec!["pretrain".to_string(), "--resume".into(), ck, "--threads".into(), "1".into()];
    resume.extend(["--set".into(), "log_every=1".into()]);
    two_ranks(&resume);
    let bits = |d: &Path| common::checkpoint_bits(&d.join("checkpoint.safetensors"));
    assert!(bits(&split) == bits(&straight), "weights differ after the resume");
    assert_eq!(logged_losses(&split), logged_losses(&straight));
}

/// Ranks started with different settings refuse to train, and say so; a rank that fails before
/// its first collective ends the job (MPI_Abort) instead of leaving the other waiting.
#[test]
fn ranks_that_disagree_or_fail_end_the_job_with_a_message() {
    let out = tmp("mismatch");
    let mut a = pretrain_args(&out, 1, 2, &[]);
    let mut b = a.clone();
    b.extend(["--lr".into(), "0.5".into()]);
    let mut cmd = mpirun();
    cmd.args(["-np", "1", BIN]).args(&a).arg(":").args(["-np", "1", BIN]).args(&b);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let o = wait_or_kill(child, Duration::from_secs(120), "mismatched ranks");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("differ in build or settings"), "{err}");

    a.extend(["--dataset".into(), "folder:/nonexistent".into()]);
    let mut cmd = mpirun();
    cmd.args(["-np", "1", BIN]).args(pretrain_args(&out, 1, 2, &[])).arg(":").args(["-np", "1", BIN]).args(&a);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let o = wait_or_kill(child, Duration::from_secs(120), "a failing rank");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("error on rank 1 of 2"), "{err}");
}

/// A checkpoint of 2 processes resumes in one (the batch is global): the schedule goes on, and
/// the losses follow the 2-process run's within 1e-5.
#[test]
fn a_two_rank_checkpoint_resumes_in_one_process() {
    let (two, moved) = (tmp("ws-two"), tmp("ws-moved"));
    two_ranks(&pretrain_args(&two, 2, 3, &[]));
    let mut a = pretrain_args(&moved, 2, 3, &[]);
    a.extend(["--stop-after-epochs".into(), "1".into()]);
    two_ranks(&a);
    let ck = moved.join("checkpoint.safetensors").display().to_string();
    one_process(&["pretrain".into(), "--resume".into(), ck, "--threads".into(), "2".into()]);
    let (want, got) = (logged_losses(&two), logged_losses(&moved));
    assert_eq!(want.len(), got.len());
    for (x, y) in want.iter().zip(&got) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{x} on 2 ranks, {y} resumed alone");
    }
}
