//! `mocov3 presets`: the named configurations.

use anyhow::Result;
use mocov3::train::config::PRESETS;

pub fn run() -> Result<()> {
    let width = PRESETS.iter().map(|p| p.0.len()).max().unwrap_or(0);
    for (name, what) in PRESETS {
        println!("{name:width$}  {what}");
    }
    Ok(())
}
