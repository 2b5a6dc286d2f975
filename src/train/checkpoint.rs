//! Native checkpoints: one safetensors file with every tensor of the run (both encoders, the
//! predictor, BatchNorm buffers, the optimiser's state: AdamW moments or LARS momentum) and the training state as JSON metadata. Keys
//! follow the official layout without the DDP `module.` prefix (`base_encoder.blocks.0...`).
//! Writes go to a temporary file that is renamed over the old one, so a crash never leaves a
//! half-written checkpoint; a CRC-32 of the tensors in the metadata is checked on load.

use super::actions::Control;
use super::config::PretrainConfig;
use crate::moco::{MoCo, TensorVisitor};
use crate::optim::Optimizer;
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: u32 = 1;

/// Metadata key of the CRC-32 of every tensor's bytes, in the order they are written.
const CHECKSUM_KEY: &str = "tensors_crc32";

/// Name prefix of the rollback snapshot's tensors.
const SNAPSHOT_PREFIX: &str = "snapshot.";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    /// The epoch to run next, or the one in progress when `iter` > 0.
    pub epoch: usize,
    /// Steps of `epoch` already taken (a checkpoint written within an epoch); 0 at its start.
    #[serde(default)]
    pub iter: usize,
    /// Optimiser steps taken so far.
    pub step: u64,
    pub in_chans: usize,
    pub config: PretrainConfig,
    /// The detectors' windows and what the instability actions changed (lr scale, frozen layer,
    /// rollback snapshot).
    #[serde(default)]
    pub control: Control,
}

/// Every tensor of the model and optimiser as (name, shape, values): the in-memory copy a
/// rollback restores ([`super::actions`]), saved in checkpoints under `snapshot.<name>`.
pub type Snapshot = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A copy of every tensor of the model and the optimiser.
pub fn snapshot(model: &mut MoCo, opt: &mut Optimizer) -> Snapshot {
    let mut v = Vec::new();
    for_each_tensor(model, opt, &mut |name, shape, data| v.push((name, shape.to_vec(), data.clone())));
    v
}

/// Put a [`snapshot`] back (the optimiser's step count aside).
pub fn restore(model: &mut MoCo, opt: &mut Optimizer, snap: &Snapshot) -> Result<()> {
    let mut it = snap.iter();
    let mut bad = None;
    for_each_tensor(model, opt, &mut |name, _, data| match it.next() {
        Some((n, _, v)) if *n == name && v.len() == data.len() => data.copy_from_slice(v),
        _ => bad = bad.take().or(Some(name)),
    });
    match bad.or_else(|| it.next().map(|(n, _, _)| n.clone())) {
        Some(n) => bail!("the rollback snapshot does not match the model at tensor '{n}'"),
        None => Ok(()),
    }
}

/// Every named tensor of the model and optimiser, as (name, shape, mutable data).
fn for_each_tensor(model: &mut MoCo, opt: &mut Optimizer, f: &mut TensorVisitor) {
    model.visit_tensors(&mut |name, shape, data| f(name, shape, data));
    let keys = model.trainable_keys();
    let shapes: Vec<Vec<usize>> = model.trainable_params().iter().map(|p| p.shape.clone()).collect();
    for (state, bufs) in opt.state_mut() {
        if bufs.len() == keys.len() {
            for ((n, s), b) in keys.iter().zip(&shapes).zip(bufs.iter_mut()) {
                f(format!("optimizer.{state}.{n}"), s, b);
            }
        }
    }
}

pub fn save(path: &Path, model: &mut MoCo, opt: &Optimizer, state: &TrainState) -> Result<()> {
    save_run(path, model, opt, state, None)
}

/// [`save`], with the rollback snapshot (when the run keeps one) as `snapshot.<name>` tensors.
pub fn save_run(
    path: &Path,
    model: &mut MoCo,
    opt: &Optimizer,
    state: &TrainState,
    snap: Option<&Snapshot>,
) -> Result<()> {
    let mut opt = opt.clone();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let bytes = |data: &[f32]| -> Vec<u8> { data.iter().flat_map(|v| v.to_le_bytes()).collect() };
    for_each_tensor(model, &mut opt, &mut |name, shape, data| owned.push((name, shape.to_vec(), bytes(data))));
    for (name, shape, data) in snap.into_iter().flatten() {
        owned.push((format!("{SNAPSHOT_PREFIX}{name}"), shape.clone(), bytes(data)));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let mut crc = crate::engine::crc::Crc32::new();
    owned.iter().for_each(|(_, _, b)| crc.update(b));
    let mut meta = HashMap::new();
    meta.insert("mocov3".to_string(), serde_json::to_string(state)?);
    meta.insert(CHECKSUM_KEY.to_string(), format!("{:08x}", crc.finish()));
    meta.insert("optimizer_step".to_string(), opt.steps().to_string());
    let bytes = safetensors::tensor::serialize(views, &Some(meta))?;
    let tmp = path.with_extension("safetensors.tmp");
    let written = (|| -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("cannot flush {} to disk", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    })();
    if let Err(e) = written {
        // A partial file must not fill the disk; the previous checkpoint is untouched.
        let _ = std::fs::remove_file(&tmp);
        let kept = if path.exists() {
            format!("the previous checkpoint {} is intact", path.display())
        } else {
            "no earlier checkpoint exists".into()
        };
        return Err(e.context(format!(
            "writing the checkpoint failed ({} bytes; is the disk full or the file size limited?); {kept}",
            bytes.len()
        )));
    }
    Ok(())
}

/// The training state kept in a checkpoint's metadata.
fn parse_state(info: Option<&str>, path: &Path) -> Result<TrainState> {
    let info = info.with_context(|| {
        format!("{} has no mocov3 training state: it was not written by `mocov3 pretrain`", path.display())
    })?;
    let state: TrainState =
        serde_json::from_str(info).with_context(|| format!("{}: unreadable training state", path.display()))?;
    if state.format != FORMAT {
        bail!("{}: checkpoint format {} is not supported (expected {FORMAT})", path.display(), state.format);
    }
    Ok(state)
}

/// The training state (epoch, step, configuration) of a checkpoint, from its header alone
/// (the tensors are not read; [`load`] checks them).
pub fn read_state(path: &Path) -> Result<TrainState> {
    use std::io::Read;
    let fix = "it is corrupt or truncated: resume from an earlier checkpoint or start the run again";
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).with_context(|| format!("checkpoint {}: no header; {fix}", path.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        bail!("checkpoint {}: a header of {len} bytes; {fix}", path.display());
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).with_context(|| format!("checkpoint {}: truncated header; {fix}", path.display()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| anyhow::anyhow!("checkpoint {}: header: {e}; {fix}", path.display()))?;
    parse_state(header.get("__metadata__").and_then(|m| m.get("mocov3")).and_then(|s| s.as_str()), path)
}

/// Load a checkpoint written by [`save`]: the model, the optimiser and the training state.
pub fn load(path: &Path) -> Result<(MoCo, Optimizer, TrainState)> {
    load_run(path).map(|(m, o, s, _)| (m, o, s))
}

/// [`load`], with the rollback snapshot if the checkpoint holds one.
pub fn load_run(path: &Path) -> Result<(MoCo, Optimizer, TrainState, Option<Snapshot>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let fix = "it is corrupt or truncated: resume from an earlier checkpoint or start the run again";
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("checkpoint {}: {e}; {fix}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("checkpoint {}: {e}; {fix}", path.display()))?;
    let state = parse_state(meta.metadata().as_ref().and_then(|m| m.get("mocov3")).map(|s| s.as_str()), path)?;
    let steps: u64 = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("optimizer_step").or_else(|| m.get("adam_step")))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let c = &state.config;
    let cfg = c.model(state.in_chans).with_context(|| format!("checkpoint {}: its training state", path.display()))?;
    // The metadata describes the model; a damaged one must not make it allocate what the file
    // cannot hold.
    let need = cfg.min_floats();
    if need > (bytes.len() / 4) as u128 {
        bail!(
            "checkpoint {}: its training state describes a model of at least {need} values, but the file holds only {} \
             bytes; {fix}",
            path.display(),
            bytes.len()
        );
    }
    let want_crc = meta.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)).cloned();
    let mut crc = crate::engine::crc::Crc32::new();
    let mut model = MoCo::new(&cfg, c.seed);
    if let Some((layer, _)) = &state.control.frozen {
        // Frozen by an instability action: not trained, so no optimiser state.
        model.freeze_base_layer(layer);
    }
    let mut opt = Optimizer::new(c.optimizer, c.weight_decay, c.exclude_norm_bias_decay);
    let sizes: Vec<usize> = model.trainable_params().iter().map(|p| p.len()).collect();
    opt.set_steps(steps);
    if steps > 0 {
        opt.zero_state(&sizes);
    }
    let mut err: Option<anyhow::Error> = None;
    let mut snap: Option<Snapshot> = state.control.snapshot.map(|_| Vec::new());
    let mut read = |name: String, shape: &[usize], data: &mut Vec<f32>| {
        if err.is_some() {
            return;
        }
        match st.tensor(&name) {
            Err(_) => {
                err = Some(anyhow::anyhow!(
                    "{}: tensor '{name}' is missing: the file is damaged or was written for another model or version",
                    path.display()
                ))
            }
            Ok(t) if t.dtype() != Dtype::F32 || t.shape() != shape => {
                err = Some(anyhow::anyhow!(
                    "{}: tensor '{name}' has shape {:?} ({:?}), the model expects {shape:?} (f32)",
                    path.display(),
                    t.shape(),
                    t.dtype()
                ))
            }
            Ok(t) => {
                crc.update(t.data());
                for (v, b) in data.iter_mut().zip(t.data().chunks_exact(4)) {
                    *v = f32::from_le_bytes(b.try_into().unwrap_or([0; 4]));
                }
                if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                    err = Some(anyhow::anyhow!(
                        "{}: tensor '{name}' holds {} at index {i}: a diverged or damaged run; resume from an \
                         earlier checkpoint",
                        path.display(),
                        data[i]
                    ))
                }
            }
        }
    };
    for_each_tensor(&mut model, &mut opt, &mut |name, shape, data| {
        if let Some(snap) = &mut snap {
            snap.push((name.clone(), shape.to_vec(), vec![0.0; data.len()]));
        }
        read(name, shape, data);
    });
    // The snapshot's tensors follow the model's, in the same order (as [`save_run`] writes them).
    for (name, shape, v) in snap.iter_mut().flatten() {
        read(format!("{SNAPSHOT_PREFIX}{name}"), shape, v);
    }
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(w) = want_crc {
        let got = format!("{:08x}", crc.finish());
        if got != w {
            bail!("checkpoint {}: the tensors' checksum is {got}, the file says {w}; {fix}", path.display());
        }
    }
    Ok((model, opt, state, snap))
}
