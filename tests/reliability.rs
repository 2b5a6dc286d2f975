//! Reliability of `mocov3 pretrain` as a process: killed at random moments (SIGKILL) and resumed
//! each time, it ends with the weights of an uninterrupted run, bit for bit, and every checkpoint
//! it left on disk reads back; a checkpoint write that fails (the file-size limit) stops the run
//! with a message naming the file and keeps the previous checkpoint and no temporary file.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mocov3");

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocov3-rel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The tiny preset for `epochs` × `steps` steps, a checkpoint after every step.
fn args(out: &Path, epochs: usize, steps: usize) -> Vec<String> {
    let a = format!(
        "pretrain --preset tiny-synthetic --batch-size 16 --threads 1 --epochs {epochs} --max-steps-per-epoch {steps} \
         --checkpoint-every 1 --quiet --out {}",
        out.display()
    );
    a.split_whitespace().map(String::from).collect()
}

/// A small deterministic generator for the kill times.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn killed_at_random_and_resumed_it_ends_bit_exactly() {
    let (straight, soak) = (tmp("straight"), tmp("soak"));
    assert!(Command::new(BIN).args(args(&straight, 3, 12)).status().unwrap().success());
    let ckpt = soak.join("checkpoint.safetensors");
    // 8 kills, each once the run has passed a random step (of 36), a random 0-4 ms later: within
    // a step or a checkpoint write.
    let mut rng = Lcg(7);
    let mut targets: Vec<u64> = (0..8).map(|_| 1 + rng.below(34)).collect();
    targets.sort();
    let (mut kills, mut resumes) = (0, 0);
    let start_run = |resumes: &mut usize| {
        let mut a = args(&soak, 3, 12);
        if ckpt.exists() {
            a.extend(["--resume".into(), ckpt.display().to_string()]);
            *resumes += 1;
        }
        Command::new(BIN).args(&a).stderr(Stdio::piped()).spawn().unwrap()
    };
    for &target in &targets {
        let mut child = start_run(&mut resumes);
        let t = Instant::now();
        loop {
            let step = mocov3::train::checkpoint::read_state(&ckpt).map(|s| s.step).unwrap_or(0);
            if step >= target || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "no progress past step {step}");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(5)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // Never a checkpoint that does not read.
        mocov3::train::checkpoint::load(&ckpt).expect("a checkpoint left by a killed run reads back");
    }
    let out = start_run(&mut resumes).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = mocov3::train::checkpoint::read_state(&ckpt).unwrap();
    assert_eq!((s.epoch, s.iter, s.step), (3, 0, 36));
    assert!(kills >= 6, "only {kills} of 8 kills landed before the run ended");
    assert!(
        common::checkpoint_bits(&ckpt) == common::checkpoint_bits(&straight.join("checkpoint.safetensors")),
        "weights differ after {kills} kills"
    );
    assert_eq!(common::logged_steps(&soak), common::logged_steps(&straight), "the log reads as one run");
    eprintln!("kill soak: {kills} SIGKILLs, {resumes} resumes, final weights bit-identical");
}

#[test]
fn a_failed_checkpoint_write_keeps_the_previous_one() {
    let out = tmp("fsize");
    let mut a = args(&out, 2, 3);
    a.extend(["--stop-after-epochs".into(), "1".into()]);
    assert!(Command::new(BIN).args(&a).status().unwrap().success());
    let ckpt = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    let size = before.len() as u64;

    let mut resume = args(&out, 2, 3);
    resume.extend(["--resume".into(), ckpt.display().to_string()]);
    let mut cmd = Command::new(BIN);
    cmd.args(&resume);
    // SAFETY: setrlimit only changes this child's limits before exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: size / 2, rlim_max: size / 2 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "a clear error, not a signal: {err}");
    assert!(err.contains("checkpoint.safetensors.tmp") && err.contains("is intact"), "{err}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), before, "the previous checkpoint is untouched");
    assert!(!out.join("checkpoint.safetensors.tmp").exists(), "the partial file is removed");
}
