//! `mocov3 extract`: backbone features of a dataset split, to safetensors.

use anyhow::Result;
use std::path::PathBuf;

use super::{open_probe, FeatureArg};

#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint written by `mocov3 pretrain` (or `convert`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// train or test
    #[arg(long, default_value = "test")]
    split: String,
    /// Dataset (default: the checkpoint's).
    #[arg(long)]
    dataset: Option<String>,
    /// Folder holding the dataset files (searched before the system locations).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output file (tensors `features` [n, dim] and `labels` [n]).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    feature: FeatureArg,
    /// Compute threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> Result<()> {
    mocov3::engine::init_threads(a.threads);
    let mut p = open_probe(&a.checkpoint, &a.dataset, &a.data_dir)?;
    let set = match a.split.as_str() {
        "train" => &p.train,
        "test" => &p.test,
        other => anyhow::bail!("--split must be train or test, not '{other}'"),
    };
    let net = &mut p.model.base.backbone;
    net.set_keep_activations(false);
    let (f, d) = mocov3::eval::features::backbone(net, set, set.len(), &p.plain, 256, a.feature.value)?;
    let fb: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
    let lb: Vec<u8> = set.labels.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect();
    use safetensors::tensor::{Dtype, TensorView};
    let views = vec![
        ("features".to_string(), TensorView::new(Dtype::F32, vec![set.len(), d], &fb)?),
        ("labels".to_string(), TensorView::new(Dtype::I64, vec![set.len()], &lb)?),
    ];
    let tmp = a.out.with_extension("tmp");
    safetensors::tensor::serialize_to_file(views, &None, &tmp)?;
    std::fs::rename(&tmp, &a.out)?;
    println!(
        "extract: {} {} features of dim {d} (L2-normalised) and labels -> {}",
        set.len(),
        a.feature.value,
        a.out.display()
    );
    Ok(())
}
