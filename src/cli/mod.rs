//! The commands of the `mocov3` binary: one file each, holding its flags (a clap `Args`) and a
//! short handler that calls the library. `main.rs` only dispatches.

pub mod attention;
pub mod augment_preview;
pub mod bench;
pub mod convert;
pub mod device;
pub mod extract;
pub mod knn;
pub mod lincls;
pub mod presets;
pub mod pretrain;
pub mod quickstart;
pub mod report;
pub mod step;
pub mod study;

/// `--feature`, shared by the commands that read a checkpoint's features.
#[derive(clap::Args)]
pub struct FeatureArg {
    /// The ViT feature: `cls` (the cls token after the final norm; MoCo v3's protocol), `cls+avg`
    /// (cls and the mean patch token, 2·dim) or `lastN`, e.g. `last4` (cls tokens of the last N
    /// blocks, N·dim; both as DINO probes ViTs).
    #[arg(long = "feature", value_name = "FEATURE", default_value = "cls")]
    pub value: mocov3::eval::features::VitFeature,
}

pub use mocov3::train::probe::open_probe;

/// A flag's value that must be a whole number ≥ 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, not '{s}'")),
    }
}

/// A flag's value that must be a finite number > 0.
pub fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number, not '{s}'")),
    }
}

/// [`positive`], as f32.
pub fn positive_f32(s: &str) -> Result<f32, String> {
    positive(s).map(|v| v as f32)
}

/// Join the process group the launcher set up (a no-op when started alone), run the command,
/// and end. Over several processes only `distributed` commands run; a rank that fails (an error
/// or a panic) ends the whole job with its message (MPI_Abort), never leaving the others waiting.
pub fn run_in_world(distributed: bool, cmd: impl FnOnce() -> anyhow::Result<()>) {
    use mocov3::engine::comm;
    mocov3::engine::ignore_file_size_signal();
    if let Err(e) = comm::init_from_launcher() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let w = comm::world();
    let result = if w.world() == 1 {
        cmd()
    } else if !distributed {
        Err(anyhow::anyhow!(
            "this command runs in one process: under mpirun/srun only `pretrain` and `bench` run (data-parallel)"
        ))
    } else {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            let w = comm::world();
            eprintln!("rank {} of {} panicked: ending the job", w.rank(), w.world());
            w.abort(101)
        }));
        cmd()
    };
    match result {
        Ok(()) => w.finalize(),
        Err(e) if w.world() > 1 => {
            // One write, so that the launcher's own abort banner cannot land inside the line.
            use std::io::Write;
            let line = format!("error on rank {} of {}: {e:#}\n", w.rank(), w.world());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            w.abort(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Numbers that mean nothing (0 neighbours, epochs or batch; a NaN or negative temperature
    /// or lr) are refused by the flag parser, naming the flag.
    #[test]
    fn meaningless_numbers_are_refused_at_the_flag() {
        use clap::Parser;
        for args in [
            "knn --pixels --k 0",
            "knn --pixels --k 20,0",
            "knn --pixels --t nan",
            "knn --pixels --t=-1",
            "knn --pixels --test-limit 0",
            "lincls --checkpoint x --epochs 0",
            "lincls --checkpoint x --batch-size 0",
            "lincls --checkpoint x --lr=3,-1",
            "lincls --checkpoint x --lr inf",
            "quickstart --lincls-epochs 0",
        ] {
            let argv = std::iter::once("mocov3").chain(args.split_whitespace());
            let e = crate::Cli::try_parse_from(argv).err().unwrap_or_else(|| panic!("accepted: {args}"));
            assert!(e.to_string().contains("invalid value"), "{args}: {e}");
        }
        assert!(crate::Cli::try_parse_from(["mocov3", "knn", "--pixels", "--k", "5,20", "--t", "0.1"]).is_ok());
    }

    /// Every flag and argument of every command says what it does in `--help`.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no description)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let cmd = crate::Cli::command();
        walk(&cmd, "mocov3", &mut missing);
        assert!(cmd.get_subcommands().count() >= 10, "the walk sees the commands");
        assert!(missing.is_empty(), "flags without help:\n  {}", missing.join("\n  "));
    }
}
