//! `mocov3 study`: the paper's instability and position-embedding experiments at this
//! machine's scale, one resumable command with a report.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Study directory: one folder per run, study.json (the plan), report.md, knn.png,
    /// grads.png. An existing study there is continued: finished runs are reused, an interrupted
    /// one resumes.
    #[arg(long, default_value = "runs/study")]
    out: PathBuf,
    /// Time for the whole study (e.g. 90m, 3h): the base run's step rate is measured here and
    /// fixes the epochs every run trains (kept in study.json when the study is continued).
    #[arg(long, default_value = "90m", conflicts_with = "epochs")]
    budget: String,
    /// Epochs per run instead of a budget.
    #[arg(long, value_parser = super::at_least_one)]
    epochs: Option<usize>,
    /// The base configuration the runs vary (its patch projection learned, its PE sin-cos):
    /// a preset (see `mocov3 presets`).
    #[arg(long, default_value = "fashion-mnist")]
    preset: String,
    /// Override any configuration key of the base: --set key=value (repeatable), e.g.
    /// --set max_steps_per_epoch=50.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Linear-probe epochs on each run's cached features.
    #[arg(long, default_value_t = 30, value_parser = super::at_least_one)]
    lincls_epochs: usize,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Rewrite report.md and the figures from the runs finished so far; train nothing.
    #[arg(long)]
    report_only: bool,
    /// No per-step progress of the runs (the study's own lines stay).
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: Args) -> Result<()> {
    use mocov3::train::{budget, config, study};
    let mut base = config::merge_sets(&config::preset(&a.preset)?, &a.sets)?;
    (base.data_dir, base.threads) = (a.data_dir, a.threads);
    let opts = study::StudyOptions {
        out: a.out,
        base,
        budget: if a.epochs.is_some() { None } else { Some(budget::parse_duration(&a.budget)?) },
        epochs: a.epochs,
        lincls_epochs: a.lincls_epochs,
        quiet: a.quiet,
        report_only: a.report_only,
    };
    let report = study::run(&opts)?;
    println!("study report: {}", report.display());
    Ok(())
}
