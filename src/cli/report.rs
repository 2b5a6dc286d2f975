//! `mocov3 report`: the curves of a run directory as a PNG.

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The run directory (holding metrics.jsonl, and lincls.jsonl when probed).
    run_dir: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let out = mocov3::report::render(&a.run_dir)?;
    println!("report: {}", out.display());
    Ok(())
}
