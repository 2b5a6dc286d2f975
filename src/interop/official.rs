//! Load a checkpoint of the official `main_moco.py` (`module.base_encoder.*`,
//! `module.momentum_encoder.*`, `module.predictor.*`, `epoch`, `optimizer`) into our model and
//! AdamW state. Every key must match: missing, unexpected and mis-shaped tensors are errors that
//! name the key.

use super::pickle::Value;
use super::torchfile::TorchFile;
use crate::engine::tensor::Tensor;
use crate::moco::MoCo;
use crate::nn::Module;
use crate::optim::Optimizer;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

pub struct OfficialInfo {
    /// The next epoch (as `main_moco.py` saves it).
    pub epoch: i64,
    pub arch: Option<String>,
}

/// Fill `model` (built with the matching configuration) and `opt` from an official checkpoint.
pub fn load_into(path: &Path, model: &mut MoCo, opt: &mut Optimizer) -> Result<OfficialInfo> {
    let f = TorchFile::open(path)?;
    let p = path.display();
    let Some(Value::Dict(sd)) = f.root.get("state_dict") else {
        bail!("{p}: no state_dict: not a checkpoint of the official main_moco.py")
    };
    let mut file: HashMap<String, &Value> = HashMap::new();
    for (k, v) in sd {
        let Value::Str(k) = k else { bail!("{p}: a state_dict key is not a string") };
        file.insert(k.strip_prefix("module.").unwrap_or(k).to_string(), v);
    }
    let mut seen = 0usize;
    let mut err: Option<anyhow::Error> = None;
    model.visit_tensors(&mut |key, shape, data| {
        if err.is_some() {
            return;
        }
        let Some(t) = file.get(&key) else {
            err = Some(anyhow::anyhow!("{p}: key module.{key} is missing (the model configuration may differ)"));
            return;
        };
        match f.tensor_f32(t) {
            Ok((s, v)) if s == shape || (shape.is_empty() && s.is_empty()) => {
                *data = v;
                seen += 1;
            }
            Ok((s, _)) => err = Some(anyhow::anyhow!("{p}: module.{key} has shape {s:?}, the model expects {shape:?}")),
            Err(e) => err = Some(e.context(format!("{p}: reading module.{key}"))),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if seen != file.len() {
        let mut ours = std::collections::HashSet::new();
        model.visit_tensors(&mut |k, _, _| {
            ours.insert(k);
        });
        let mut extra: Vec<&String> = file.keys().filter(|k| !ours.contains(*k)).collect();
        extra.sort();
        bail!(
            "{p}: unexpected keys (the model configuration may differ): module.{}",
            extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", module.")
        );
    }
    // Optimiser state (AdamW exp_avg / exp_avg_sq / step, LARS mu): indices follow
    // model.parameters() (base, momentum, predictor); only parameters with a gradient have state.
    if let Some(optim) = f.root.get("optimizer") {
        let mut all: Vec<bool> = model.base.params_mut().iter().map(|q| q.trainable).collect();
        all.extend(model.momentum.params_mut().iter().map(|q| q.trainable));
        all.extend(model.predictor.params_mut().iter().map(|q| q.trainable));
        let trainable_pos: Vec<Option<usize>> = {
            let mut k = 0;
            all.iter().map(|&t| t.then(|| (k, k += 1).0)).collect()
        };
        let params = model.trainable_params();
        let Some(Value::Dict(state)) = optim.get("state") else { bail!("{p}: optimizer has no state") };
        let sizes: Vec<usize> = params.iter().map(|q| q.len()).collect();
        opt.zero_state(&sizes);
        let mut steps = 0u64;
        for (idx, st) in state {
            let i = idx.as_int().context("optimizer state index is not an integer")? as usize;
            let Some(Some(pos)) = trainable_pos.get(i) else {
                bail!("{p}: optimizer state for parameter {i}, which is not trainable here");
            };
            for (name, bufs) in opt.state_mut() {
                let dst = &mut bufs[*pos];
                let t = st.get(name).with_context(|| format!("{p}: optimizer state {i} lacks {name}"))?;
                let (_, v) = f.tensor_f32(t)?;
                if v.len() != dst.len() {
                    bail!("{p}: optimizer {name} of parameter {i} has {} values, the parameter {}", v.len(), dst.len());
                }
                *dst = v;
            }
            if let Some(s) = st.get("step") {
                steps = match s {
                    Value::Tensor { .. } => f.tensor_f32(s)?.1[0] as u64,
                    other => other.as_int().unwrap_or(0) as u64,
                };
            }
        }
        opt.set_steps(steps);
    }
    let epoch = f.root.get("epoch").and_then(|v| v.as_int()).unwrap_or(0);
    let arch = match f.root.get("arch") {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(OfficialInfo { epoch, arch })
}

/// What the weights of an official ResNet checkpoint say: depth (a bottleneck `conv3` means 50),
/// the stem (a 3×3 `conv1` is the CIFAR variant), input channels and head widths. `None` when the
/// file holds a ViT.
pub struct ResNetShape {
    pub depth: usize,
    pub cifar: bool,
    pub in_chans: usize,
    pub mlp_dim: usize,
    pub out_dim: usize,
}

pub fn infer_resnet(path: &Path) -> Result<Option<ResNetShape>> {
    let f = TorchFile::open(path)?;
    let Some(Value::Dict(sd)) = f.root.get("state_dict") else {
        bail!("{}: no state_dict: not a checkpoint of the official main_moco.py", path.display())
    };
    let mut shapes: HashMap<&str, &Vec<usize>> = HashMap::new();
    for (k, v) in sd {
        if let (Value::Str(k), Value::Tensor { shape, .. }) = (k, v) {
            shapes.insert(k.strip_prefix("module.").unwrap_or(k), shape);
        }
    }
    let Some(conv1) = shapes.get("base_encoder.conv1.weight") else { return Ok(None) };
    let get = |k: &str| shapes.get(k).copied().with_context(|| format!("{}: {k} is missing", path.display()));
    let (fc0, fc3) = (get("base_encoder.fc.0.weight")?, get("base_encoder.fc.3.weight")?);
    Ok(Some(ResNetShape {
        depth: if shapes.contains_key("base_encoder.layer1.0.conv3.weight") { 50 } else { 18 },
        cifar: conv1.get(2) == Some(&3),
        in_chans: conv1[1],
        mlp_dim: fc0[0],
        out_dim: fc3[0],
    }))
}

/// What the weights of an official checkpoint say about the model: (dim, depth, patch, in_chans,
/// image size, mlp_dim, out_dim, learned-or-fixed position embedding present). The number of heads
/// and whether the patch projection was frozen are not in the weights.
pub struct InferredShape {
    pub dim: usize,
    pub depth: usize,
    pub patch: usize,
    pub in_chans: usize,
    pub img: usize,
    pub mlp_dim: usize,
    pub out_dim: usize,
    /// The convolutional stem of `vit_conv_*` (`patch_embed.proj.0.weight` …) in place of the
    /// patch projection.
    pub conv_stem: bool,
    /// Attention heads, when the file records them (`mocov3_vit`, written by `convert --to
    /// official`; the weights do not tell).
    pub heads: Option<usize>,
}

/// The top-level key of an official-layout file under which `to_official` records a ViT's
/// heads, image size and patch size.
pub const RECORD_KEY: &str = "mocov3_vit";

pub fn infer_shape(path: &Path) -> Result<InferredShape> {
    let f = TorchFile::open(path)?;
    let p = path.display();
    let Some(Value::Dict(sd)) = f.root.get("state_dict") else {
        bail!("{p}: no state_dict: not a checkpoint of the official main_moco.py")
    };
    let shape = |key: &str| -> Result<Vec<usize>> {
        for (k, v) in sd {
            if let (Value::Str(k), Value::Tensor { shape, .. }) = (k, v) {
                if k.strip_prefix("module.").unwrap_or(k) == key {
                    return Ok(shape.clone());
                }
            }
        }
        bail!("{p}: key module.{key} is missing: not a MoCo v3 ViT checkpoint")
    };
    // (dim, chans, patch, conv stem). A conv stem of s stride-2 stages (`proj.0`, `proj.3`, …, then
    // the 1×1 `proj.{3s}`) stands for patch 2^s, the official form (16 for 224 px); a stem that
    // stood for another patch (3 stages for 28 px and patch 7) needs img_size and patch_size set.
    let (dim, in_chans, patch, conv_stem) = match shape("base_encoder.patch_embed.proj.0.weight") {
        Ok(c0) => {
            let conv3 = |i: usize| {
                shape(&format!("base_encoder.patch_embed.proj.{}.weight", 3 * i))
                    .is_ok_and(|w| w.len() == 4 && w[2] == 3)
            };
            let mut stages = 0;
            while conv3(stages) {
                stages += 1;
            }
            let last = shape(&format!("base_encoder.patch_embed.proj.{}.weight", 3 * stages))?;
            if stages == 0 || c0.len() != 4 || last.len() != 4 || last[2] != 1 {
                bail!("{p}: patch_embed.proj.* is not a conv stem (3×3 convolutions, then a 1×1 one)");
            }
            (last[0], c0[1], 1 << stages, true)
        }
        Err(_) => {
            let pe = shape("base_encoder.patch_embed.proj.weight")?;
            if pe.len() != 4 || pe[2] != pe[3] {
                bail!("{p}: patch_embed.proj.weight has shape {pe:?}, expected [dim, chans, p, p]");
            }
            (pe[0], pe[1], pe[2], false)
        }
    };
    let pos = shape("base_encoder.pos_embed")?;
    let grid = ((pos[1] - 1) as f64).sqrt().round() as usize;
    if pos.len() != 3 || grid * grid + 1 != pos[1] {
        bail!("{p}: pos_embed has shape {pos:?}, expected [1, 1 + grid², dim]");
    }
    let mut depth = 0;
    while shape(&format!("base_encoder.blocks.{depth}.norm1.weight")).is_ok() {
        depth += 1;
    }
    let h0 = shape("base_encoder.head.0.weight")?;
    let h6 = shape("base_encoder.head.6.weight")?;
    let mut shape = InferredShape {
        dim,
        depth,
        patch,
        in_chans,
        img: grid * patch,
        mlp_dim: h0[0],
        out_dim: h6[0],
        conv_stem,
        heads: None,
    };
    // What the weights cannot tell (heads; a conv stem's patch), recorded by `to_official`.
    if let Some(rec) = f.root.get(RECORD_KEY) {
        let int = |k: &str| rec.get(k).and_then(|v| v.as_int()).filter(|&v| v > 0).map(|v| v as usize);
        shape.heads = int("heads");
        if let (Some(img), Some(patch)) = (int("img_size"), int("patch_size")) {
            (shape.img, shape.patch) = (img, patch);
        }
    }
    Ok(shape)
}

/// The official checkpoint layout of a model: `{'epoch', 'arch', 'state_dict'}` with the DDP
/// `module.` prefix (what `main_lincls.py --pretrained` and `convert_to_deit.py` read). The
/// optimizer state is not written.
pub fn to_official(model: &mut MoCo, epoch: i64, arch: &str) -> super::writer::Obj {
    to_official_with(model, epoch, arch, None)
}

/// As [`to_official`], with the optimiser state when `opt` is given, in the form of
/// `torch.optim.AdamW.state_dict()` (`step` as a float tensor) or of the official LARS's (`mu`):
/// indices over all parameters (base, momentum, predictor), state only for trainable ones.
pub fn to_official_with(
    model: &mut MoCo,
    epoch: i64,
    arch: &str,
    opt: Option<(&Optimizer, f64)>,
) -> super::writer::Obj {
    use super::writer::Obj;
    let mut sd = Vec::new();
    model.visit_tensors(&mut |key, shape, data| {
        let t = if key.ends_with("num_batches_tracked") {
            Obj::Long(shape.to_vec(), data.iter().map(|&v| v as i64).collect())
        } else {
            Obj::Float(shape.to_vec(), data.to_vec())
        };
        sd.push((format!("module.{key}"), t));
    });
    let mut top = vec![
        ("epoch".into(), Obj::Int(epoch)),
        ("arch".into(), Obj::Str(arch.into())),
        ("state_dict".into(), Obj::OrderedDict(sd)),
    ];
    if let Some(v) = model.cfg.backbone.vit() {
        // Not in the weights, and a key the official code never reads: `convert --to
        // safetensors` takes heads, image and patch size from it.
        let rec = [("heads", v.heads), ("img_size", v.img), ("patch_size", v.patch)];
        top.push((
            RECORD_KEY.into(),
            Obj::Dict(rec.iter().map(|(k, n)| (k.to_string(), Obj::Int(*n as i64))).collect()),
        ));
    }
    if let Some((opt, lr)) = opt {
        let mut flags: Vec<bool> = model.base.params_mut().iter().map(|q| q.trainable).collect();
        flags.extend(model.momentum.params_mut().iter().map(|q| q.trainable));
        flags.extend(model.predictor.params_mut().iter().map(|q| q.trainable));
        let shapes: Vec<Vec<usize>> = model.trainable_params().iter().map(|q| q.shape.clone()).collect();
        let tensor = |k: usize, v: &[f32]| Obj::Float(shapes[k].clone(), v.to_vec());
        // Per trainable parameter k, its state as the official optimiser keeps it.
        let per_param = |k: usize| -> Option<Obj> {
            match opt {
                Optimizer::AdamW(o) => (k < o.exp_avg.len()).then(|| {
                    Obj::Dict(vec![
                        ("step".into(), Obj::Float(vec![], vec![o.step as f32])),
                        ("exp_avg".into(), tensor(k, &o.exp_avg[k])),
                        ("exp_avg_sq".into(), tensor(k, &o.exp_avg_sq[k])),
                    ])
                }),
                Optimizer::Lars(o) => (k < o.mu.len()).then(|| Obj::Dict(vec![("mu".into(), tensor(k, &o.mu[k]))])),
            }
        };
        let mut state = Vec::new();
        let mut k = 0;
        for (i, &t) in flags.iter().enumerate() {
            if t {
                if let Some(st) = per_param(k) {
                    state.push((i as i64, st));
                }
                k += 1;
            }
        }
        let params = ("params".into(), Obj::List((0..flags.len() as i64).map(Obj::Int).collect()));
        let group = match opt {
            Optimizer::AdamW(o) => vec![
                ("lr".into(), Obj::F64(lr)),
                ("betas".into(), Obj::Tuple(vec![Obj::F64(o.beta1), Obj::F64(o.beta2)])),
                ("eps".into(), Obj::F64(o.eps)),
                ("weight_decay".into(), Obj::F64(o.weight_decay)),
                ("amsgrad".into(), Obj::Bool(false)),
                ("maximize".into(), Obj::Bool(false)),
                ("foreach".into(), Obj::None),
                ("capturable".into(), Obj::Bool(false)),
                ("differentiable".into(), Obj::Bool(false)),
                ("fused".into(), Obj::None),
                ("decoupled_weight_decay".into(), Obj::Bool(true)),
                params,
            ],
            // The official moco/optimizer.py LARS's defaults.
            Optimizer::Lars(o) => vec![
                ("lr".into(), Obj::F64(lr)),
                ("weight_decay".into(), Obj::F64(o.weight_decay)),
                ("momentum".into(), Obj::F64(o.momentum)),
                ("trust_coefficient".into(), Obj::F64(o.trust_coefficient)),
                params,
            ],
        };
        let optimizer = Obj::Dict(vec![
            ("state".into(), Obj::IntDict(state)),
            ("param_groups".into(), Obj::List(vec![Obj::Dict(group)])),
        ]);
        top.push(("optimizer".into(), optimizer));
    }
    Obj::Dict(top)
}

/// The layout `convert_to_deit.py` writes: `{'model': backbone state_dict}` without the
/// projector (`head.*`) and without prefixes.
pub fn to_deit(model: &mut MoCo) -> super::writer::Obj {
    use super::writer::Obj;
    let mut sd = Vec::new();
    model.visit_tensors(&mut |key, shape, data| {
        if let Some(k) = key.strip_prefix("base_encoder.") {
            if !k.starts_with("head.") {
                sd.push((k.to_string(), Obj::Float(shape.to_vec(), data.to_vec())));
            }
        }
    });
    Obj::Dict(vec![("model".into(), Obj::OrderedDict(sd))])
}

/// The backbone alone as a timm `VisionTransformer` state_dict (no wrapper, no head).
pub fn to_timm(model: &mut MoCo) -> super::writer::Obj {
    match to_deit(model) {
        super::writer::Obj::Dict(mut top) => top.remove(0).1,
        other => other,
    }
}

/// Load a backbone-only file into a backbone: the DeiT layout (`{'model': ...}`), a plain timm or
/// torchvision state_dict, a `main_lincls.py` checkpoint (`state_dict` with `module.` keys and a
/// classifier), or an official pre-training checkpoint (its `base_encoder`). Classifier /
/// projector keys (`head.*`, `fc.*`) are ignored; every backbone tensor (and BatchNorm buffer)
/// must be present with the right shape.
pub fn load_backbone(path: &Path, net: &mut crate::models::backbone::Backbone) -> Result<()> {
    let f = TorchFile::open(path)?;
    let p = path.display();
    let dict = f.root.get("model").or_else(|| f.root.get("state_dict")).unwrap_or(&f.root);
    let Value::Dict(items) = dict else { bail!("{p}: no state_dict found") };
    let mut by_name: HashMap<String, &Value> = HashMap::new();
    for (k, v) in items {
        let Value::Str(k) = k else { continue };
        let k = k.strip_prefix("module.").unwrap_or(k);
        let k = k.strip_prefix("base_encoder.").unwrap_or(k);
        let skip = ["momentum_encoder.", "predictor.", "head.", "fc."];
        if skip.iter().any(|s| k.starts_with(s)) {
            continue;
        }
        by_name.insert(k.to_string(), v);
    }
    let mut err = None;
    let mut take = |name: &str, shape: &[usize], data: &mut Tensor| {
        if err.is_some() {
            return;
        }
        match by_name.get(name) {
            None => err = Some(anyhow::anyhow!("{p}: backbone key {name} is missing")),
            Some(t) => match f.tensor_f32(t) {
                Ok((s, v)) if s == shape => data.assign(v),
                Ok((s, _)) => err = Some(anyhow::anyhow!("{p}: {name} has shape {s:?}, the model expects {shape:?}")),
                Err(e) => err = Some(e),
            },
        }
    };
    net.visit(&mut |param| take(&param.name, &param.shape, &mut param.w));
    net.visit_buffers(&mut |b| take(&b.name, &b.shape, b.data));
    err.map_or(Ok(()), Err)
}
