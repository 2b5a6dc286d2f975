//! `mocov3 quickstart`: pre-train the Fashion-MNIST preset, score it and raw pixels, report.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory (pre-training, scores, report); an existing run there is resumed or re-scored.
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    /// Pre-training epochs (default: the preset's).
    #[arg(long, conflicts_with = "budget")]
    epochs: Option<usize>,
    /// Fit the whole command into this much time (e.g. 60m, 1h30m): the step rate is measured
    /// here first and fixes the number of epochs, and so the schedules (kept on a resume).
    #[arg(long)]
    budget: Option<String>,
    /// Linear-probe epochs on cached features.
    #[arg(long, default_value_t = 100, value_parser = super::at_least_one)]
    lincls_epochs: usize,
    /// Base lrs the linear probe chooses from on 10% of the training features held out (for
    /// the model and the raw pixels alike); the test split is only used for the final score
    /// [default: 0.001,0.003,0.01,0.03,0.1,0.3,1,3,10; with --lincls-l2 1,3,10,30,100].
    #[arg(long, value_delimiter = ',', value_parser = super::positive)]
    lincls_lr: Option<Vec<f64>>,
    /// Probe the L2-normalised features kNN reads as they are (the quickstart's earlier probe)
    /// instead of standardising each dimension first (`lincls --cached --standardize`).
    #[arg(long)]
    lincls_l2: bool,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> Result<()> {
    mocov3::train::quickstart::run(&mocov3::train::quickstart::QuickstartOptions {
        out: a.out,
        epochs: a.epochs,
        budget: a.budget,
        lincls_epochs: a.lincls_epochs,
        lincls_lr: a.lincls_lr,
        lincls_l2: a.lincls_l2,
        data_dir: a.data_dir,
        threads: a.threads,
    })
}
