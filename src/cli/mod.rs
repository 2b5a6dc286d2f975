//! The commands of the `mocov3` binary: one file each, holding its flags (a clap `Args`) and a
//! short handler that calls the library. `main.rs` only dispatches.

pub mod augment_preview;
pub mod bench;
pub mod convert;
pub mod extract;
pub mod knn;
pub mod lincls;
pub mod presets;
pub mod pretrain;
pub mod quickstart;
pub mod report;
pub mod step;

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
