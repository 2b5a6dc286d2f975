//! The pre-training configuration: named presets, a TOML file, and command-line overrides, in
//! that order of precedence (later wins).

pub use super::actions::OnSpike;
use crate::data::augment::AugmentKind;
use crate::moco::MocoConfig;
use crate::models::backbone::{BackboneConfig, ResNetConfig};
use crate::models::vit::{arch_dims, VitConfig, ARCHS};
use crate::nn::posembed::PosEmbedKind;
use crate::optim::OptimizerKind;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// vit_tiny | vit_small | vit_base | vit_large | vit_huge (dim/depth/heads below override),
    /// or resnet18 | resnet50.
    pub arch: String,
    // Optional keys default to None, not to the default preset's value: TOML has no null, so a
    // None is simply absent when a configuration is merged.
    #[serde(default)]
    pub dim: Option<usize>,
    #[serde(default)]
    pub depth: Option<usize>,
    #[serde(default)]
    pub heads: Option<usize>,
    pub img_size: usize,
    pub patch_size: usize,
    pub pos_embed: PosEmbedKind,
    pub stop_grad_conv1: bool,
    /// ViT only: the convolutional stem (3×3 stride-2 conv → BN → ReLU stages, then a 1×1 conv)
    /// in place of the patch projection, as the official `vit_conv_small` / `vit_conv_base`
    /// (which set it by their name, with one block fewer: depth 11).
    pub conv_stem: bool,
    /// ViT-BN (the paper's §6.3): BatchNorm instead of LayerNorm in front of every MLP block
    /// (SyncBN over processes; each view its own batch), as in ViT-BN-L/7.
    #[serde(default)]
    pub vit_bn: bool,
    /// ResNet only: the CIFAR stem (3×3 stride-1 first convolution, no max-pool).
    pub cifar_stem: bool,
    pub moco_mlp_dim: usize,
    pub moco_dim: usize,
    #[serde(serialize_with = "f32_decimal")]
    pub moco_t: f32,
    pub moco_m: f64,
    pub moco_m_cos: bool,
    /// adamw (the ViT recipes) | lars (the ResNet recipes).
    pub optimizer: OptimizerKind,
    /// Base learning rate; the effective one is lr × batch_size / 256.
    pub lr: f64,
    pub weight_decay: f64,
    /// Exclude biases, norms, cls token and position embedding from weight decay (the official
    /// code decays everything).
    pub exclude_norm_bias_decay: bool,
    pub batch_size: usize,
    pub epochs: usize,
    pub warmup_epochs: f64,
    pub crop_min: f64,
    /// official (crop, colour jitter, grayscale, blur, solarize, flip; asymmetric views) or
    /// crop-flip.
    pub augment: AugmentKind,
    /// Range of the Gaussian blur's σ in pixels (official 0.1–2.0 for 224 px images).
    #[serde(serialize_with = "f32_decimal")]
    pub blur_sigma_min: f32,
    #[serde(serialize_with = "f32_decimal")]
    pub blur_sigma_max: f32,
    /// fashion-mnist | mnist | cifar10 | cifar100 | imagenet | folder:PATH | synthetic
    pub dataset: String,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Image folders: replace an image that does not decode by the next one (and count it)
    /// instead of stopping with an error that names the file.
    pub skip_corrupt: bool,
    /// Threads that prepare batches ahead of the step (0: on the compute pool between steps, the
    /// right choice when the step runs on the same cores).
    pub loader_workers: usize,
    /// Batches prepared ahead when `loader_workers` > 0.
    pub loader_depth: usize,
    /// Stop each epoch after this many steps (for smoke tests; the schedules still assume the
    /// shortened epoch).
    #[serde(default)]
    pub max_steps_per_epoch: Option<usize>,
    pub seed: u64,
    /// Compute threads (0 = one per core).
    pub threads: usize,
    pub out_dir: PathBuf,
    /// Print and log metrics every this many steps.
    pub log_every: usize,
    /// Run the kNN monitor every this many steps (0: off).
    pub knn_every: usize,
    /// Size of the monitor's queue of training features (0: 10% of the training set).
    pub knn_bank: usize,
    /// Held-out labelled images (from the test split) the monitor classifies.
    pub knn_eval: usize,
    pub knn_k: usize,
    #[serde(serialize_with = "f32_decimal")]
    pub knn_t: f32,
    /// Checkpoint within an epoch too, every this many steps (0: off).
    #[serde(default)]
    pub checkpoint_every_steps: usize,
    /// Checkpoint within an epoch too, once this many minutes have passed since the last
    /// checkpoint (0: off): a kill loses at most this much work.
    #[serde(default = "default_checkpoint_minutes")]
    pub checkpoint_every_minutes: f64,
    /// Keep the last K checkpoints as `checkpoints/step-N.safetensors` beside the latest
    /// `checkpoint.safetensors` (0: the latest only).
    #[serde(default)]
    pub keep_checkpoints: usize,
    /// A gradient spike: a layer's gradient norm above this many times its running median (0:
    /// off); logged as an event.
    #[serde(default = "default_spike_threshold")]
    pub spike_threshold: f64,
    /// Steps in each layer's running median.
    #[serde(default = "default_spike_window")]
    pub spike_window: usize,
    /// A kNN dip: the monitor's accuracy this many points below its running best (0: off).
    #[serde(default = "default_dip_threshold")]
    pub dip_threshold: f64,
    /// What a spike of the first layer (the patch projection) triggers: log, freeze-patch,
    /// clip:V, skip, rollback[:F] (see `train::actions`).
    #[serde(default)]
    pub on_spike: OnSpike,
    /// Steps between the in-memory snapshots `on_spike = "rollback"` returns to.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Fault injection, to try `on_spike`: the first layer's gradient is multiplied by 1000 at
    /// these steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject_spike: Vec<u64>,
}

pub(super) fn default_snapshot_every() -> u64 {
    100
}

pub(super) fn default_spike_threshold() -> f64 {
    5.0
}

pub(super) fn default_spike_window() -> usize {
    100
}

pub(super) fn default_dip_threshold() -> f64 {
    3.0
}

pub(super) fn default_checkpoint_minutes() -> f64 {
    30.0
}

impl Default for PretrainConfig {
    fn default() -> Self {
        preset("fashion-mnist").unwrap()
    }
}

pub use super::presets::{preset, PRESETS};

/// Merge the keys of a TOML table over `cfg` (unknown keys and wrong types are errors).
pub fn merge_toml(cfg: &PretrainConfig, table: toml::Table, origin: &str) -> Result<PretrainConfig> {
    let mut base = toml::Table::try_from(cfg).context("serialising the configuration")?;
    for (k, v) in table {
        base.insert(k, v);
    }
    toml::Value::Table(base).try_into().with_context(|| format!("invalid configuration in {origin}"))
}

pub fn merge_file(cfg: &PretrainConfig, path: &Path) -> Result<PretrainConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let c = merge_toml(cfg, table, &path.display().to_string())?;
    // A value the file set that no model or run accepts is the file's error.
    c.model(1).with_context(|| format!("config {}", path.display()))?;
    Ok(c)
}

/// Apply `key=value` overrides; the value is read as TOML (numbers, booleans, strings; a bare
/// word is taken as a string).
pub fn merge_sets(cfg: &PretrainConfig, sets: &[String]) -> Result<PretrainConfig> {
    let mut table = toml::Table::new();
    for s in sets {
        let Some((k, v)) = s.split_once('=') else { bail!("--set expects key=value, got '{s}'") };
        let (k, v) = (k.trim(), v.trim());
        let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
            Ok(mut t) => t.remove("v").unwrap(),
            Err(_) => toml::Value::String(v.to_string()),
        };
        table.insert(k.to_string(), value);
    }
    merge_toml(cfg, table, "--set")
}

/// An f32 key written as the decimal it was given (0.2, not 0.20000000298023224: TOML and JSON
/// hold f64s); reading it back gives the same f32.
fn f32_decimal<S: serde::Serializer>(v: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(v.to_string().parse::<f64>().unwrap_or(*v as f64))
}

/// The most compute threads a configuration may ask for (the engine's cap).
pub use crate::engine::MAX_THREADS;

/// Keys a resumed run may change: where it writes, how it runs, how often it logs. Every other
/// key shapes the model, the data or the schedules, so a resumed run keeps it.
pub const RUN_KEYS: &[&str] = &[
    "out_dir",
    "threads",
    "data_dir",
    "skip_corrupt",
    "loader_workers",
    "loader_depth",
    "log_every",
    "checkpoint_every_steps",
    "checkpoint_every_minutes",
    "keep_checkpoints",
    "spike_threshold",
    "spike_window",
    "dip_threshold",
];

/// Whether a resumed run of `trained` may change `key`: a [`RUN_KEYS`] entry, except the spike
/// detector's settings when `on_spike` acts on its spikes (then they shape the training).
fn is_run_key(trained: &PretrainConfig, key: &str) -> bool {
    RUN_KEYS.contains(&key) && !(trained.on_spike != OnSpike::Log && matches!(key, "spike_threshold" | "spike_window"))
}

/// The keys (other than [`RUN_KEYS`]) on which `asked` differs from the configuration a
/// checkpoint was trained with, as `key = checkpoint value, asked value` lines.
pub fn resume_conflicts(checkpoint: &PretrainConfig, asked: &PretrainConfig) -> Result<Vec<String>> {
    let (a, b) = (toml::Table::try_from(checkpoint)?, toml::Table::try_from(asked)?);
    let run_key = |k: &str| is_run_key(checkpoint, k);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).filter(|k| !run_key(k)).collect();
    keys.sort();
    keys.dedup();
    // f32 keys are serialised as the decimals they were given (`f32_decimal`), so every value
    // shows as written.
    let show = |v: Option<&toml::Value>| match v {
        None => "(unset)".to_string(),
        Some(v) => v.to_string(),
    };
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: the checkpoint has {}, asked {}", show(a.get(k)), show(b.get(k))))
        .collect())
}

/// The configuration a run resumed from `checkpoint` continues with: the one it was trained
/// with (`trained`), the [`RUN_KEYS`] taken from `asked`. Any other key on which `asked` differs
/// is an error that names each one. The one place the resume rule lives: `pretrain --resume`,
/// the quickstart and the training loop all call it.
pub fn resumed(
    trained: &PretrainConfig,
    asked: &PretrainConfig,
    checkpoint: &std::path::Path,
) -> Result<PretrainConfig> {
    let conflicts = resume_conflicts(trained, asked)?;
    if !conflicts.is_empty() {
        bail!(
            "{}: a resumed run keeps the configuration it was started with (its lr and momentum schedules \
             depend on it); this command asks for another configuration:\n  {}\ndrop those settings, or start a new run in \
             another --out",
            checkpoint.display(),
            conflicts.join("\n  ")
        );
    }
    let mut table = toml::Table::try_from(trained)?;
    let run_side = toml::Table::try_from(asked)?;
    for k in RUN_KEYS.iter().filter(|k| is_run_key(trained, k)) {
        if let Some(v) = run_side.get(*k) {
            table.insert(k.to_string(), v.clone());
        }
    }
    table.try_into().context("the resumed configuration")
}

impl PretrainConfig {
    /// The model configuration for images of `chans` channels; checks every shape constraint.
    pub fn model(&self, chans: usize) -> Result<MocoConfig> {
        let backbone = match self.arch.as_str() {
            "resnet18" | "resnet50" => {
                if self.stop_grad_conv1 || self.conv_stem || self.vit_bn {
                    bail!(
                        "stop_grad_conv1, conv_stem and vit_bn apply to ViTs only: set them to false for {}",
                        self.arch
                    );
                }
                let r = ResNetConfig {
                    depth: if self.arch == "resnet50" { 50 } else { 18 },
                    cifar: self.cifar_stem,
                    img: self.img_size,
                    in_chans: chans,
                };
                r.validate().map_err(|e| anyhow::anyhow!("invalid model configuration: {e}"))?;
                BackboneConfig::ResNet(r)
            }
            _ => BackboneConfig::Vit(self.vit(chans)?),
        };
        self.check_training()?;
        Ok(MocoConfig { backbone, mlp_dim: self.moco_mlp_dim, out_dim: self.moco_dim, t: self.moco_t })
    }

    fn vit(&self, chans: usize) -> Result<VitConfig> {
        let Some((d, depth, heads)) = arch_dims(&self.arch) else {
            bail!("unknown arch '{}': expected one of {}, resnet18, resnet50", self.arch, ARCHS.join(", "))
        };
        let vit = VitConfig {
            img: self.img_size,
            patch: self.patch_size,
            in_chans: chans,
            dim: self.dim.unwrap_or(d),
            depth: self.depth.unwrap_or(depth),
            heads: self.heads.unwrap_or(heads),
            mlp_ratio: 4,
            pos: self.pos_embed,
            stop_grad_conv1: self.stop_grad_conv1,
            conv_stem: self.conv_stem || self.arch.starts_with("vit_conv_"),
            mlp_bn: self.vit_bn,
        };
        vit.validate().map_err(|e| anyhow::anyhow!("invalid model configuration: {e}"))?;
        Ok(vit)
    }

    fn check_training(&self) -> Result<()> {
        if self.batch_size < 2 {
            bail!("batch_size must be at least 2 (BatchNorm needs two samples per view)");
        }
        if !(self.moco_t.is_finite() && self.moco_t > 0.0) {
            bail!("moco_t must be a positive number, not {}", self.moco_t);
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("lr must be a positive number, not {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("weight_decay must be a number at least 0, not {}", self.weight_decay);
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            bail!("warmup_epochs must be a number at least 0, not {}", self.warmup_epochs);
        }
        if self.moco_mlp_dim == 0 || self.moco_dim == 0 {
            bail!("moco_mlp_dim and moco_dim must be at least 1");
        }
        if self.max_steps_per_epoch == Some(0) {
            bail!("max_steps_per_epoch must be at least 1 (or unset)");
        }
        if self.threads > MAX_THREADS {
            bail!("threads = {}: at most {MAX_THREADS} (0 means one per core)", self.threads);
        }
        if self.knn_every > 0 && !(self.knn_k >= 1 && self.knn_t.is_finite() && self.knn_t > 0.0) {
            bail!("the kNN monitor (knn_every > 0) needs knn_k at least 1 and a positive knn_t");
        }
        if !(0.0..=1.0).contains(&self.moco_m) {
            bail!("moco_m must be in [0, 1]");
        }
        if self.epochs == 0 {
            bail!("epochs must be at least 1");
        }
        for (k, v) in [("spike_threshold", self.spike_threshold), ("dip_threshold", self.dip_threshold)] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{k} must be a number at least 0 (0: off), not {v}");
            }
        }
        if self.on_spike != OnSpike::Log && self.spike_threshold <= 0.0 {
            bail!(
                "on_spike = \"{}\" acts on detected spikes: set spike_threshold above 0",
                String::from(self.on_spike)
            );
        }
        if self.on_spike == OnSpike::FreezePatch && self.stop_grad_conv1 && !self.conv_stem {
            bail!(
                "on_spike = \"freeze-patch\" freezes the patch projection, which stop_grad_conv1 = true already fixes: \
                 set stop_grad_conv1 = false (a learned projection, frozen when it spikes) or choose another on_spike"
            );
        }
        if self.snapshot_every == 0 {
            bail!("snapshot_every must be at least 1 step");
        }
        if self.spike_window < 3 {
            bail!("spike_window must be at least 3 steps, not {}", self.spike_window);
        }
        if !(self.checkpoint_every_minutes.is_finite() && self.checkpoint_every_minutes >= 0.0) {
            bail!(
                "checkpoint_every_minutes must be a number at least 0 (0: off), not {}",
                self.checkpoint_every_minutes
            );
        }
        if !(self.crop_min > 0.0 && self.crop_min <= 1.0) {
            bail!("crop_min must be in (0, 1]");
        }
        if !(self.blur_sigma_min > 0.0 && self.blur_sigma_min <= self.blur_sigma_max) {
            bail!("blur_sigma_min must be positive and at most blur_sigma_max");
        }
        Ok(())
    }

    /// The steps an epoch of `full` steps is run for: all, or `max_steps_per_epoch` of them.
    pub fn steps_per_epoch(&self, full: usize) -> usize {
        self.max_steps_per_epoch.map_or(full, |m| m.min(full))
    }

    /// The effective peak learning rate, lr × batch / 256.
    pub fn peak_lr(&self) -> f64 {
        self.lr * self.batch_size as f64 / 256.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_run_may_change_only_how_it_runs() {
        let c = preset("fashion-mnist").unwrap();
        let run_side = merge_sets(&c, &["threads=1".into(), "out_dir=\"x\"".into(), "log_every=3".into()]).unwrap();
        assert!(resume_conflicts(&c, &run_side).unwrap().is_empty());
        let longer = merge_sets(&run_side, &["epochs=50".into(), "lr=1e-3".into()]).unwrap();
        let got = resume_conflicts(&c, &longer).unwrap();
        assert_eq!(got, ["epochs: the checkpoint has 25, asked 50", "lr: the checkpoint has 0.002, asked 0.001"]);
        let capped = PretrainConfig { max_steps_per_epoch: Some(3), ..c.clone() };
        assert_eq!(
            resume_conflicts(&c, &capped).unwrap(),
            ["max_steps_per_epoch: the checkpoint has (unset), asked 3"]
        );
        let colder = PretrainConfig { moco_t: 0.1, ..c.clone() };
        assert_eq!(resume_conflicts(&c, &colder).unwrap(), ["moco_t: the checkpoint has 0.2, asked 0.1"]);

        // `resumed`: the run keys come from the command line, the rest from the checkpoint, and
        // a changed key is an error naming it and the checkpoint.
        let ck = std::path::Path::new("runs/x/checkpoint.safetensors");
        let got = resumed(&c, &run_side, ck).unwrap();
        assert_eq!((got.threads, got.log_every, got.out_dir.clone()), (1, 3, PathBuf::from("x")));
        assert_eq!((got.epochs, got.lr), (c.epochs, c.lr));
        let keep_dir = PretrainConfig { data_dir: Some("d".into()), ..c.clone() };
        assert_eq!(
            resumed(&keep_dir, &c, ck).unwrap().data_dir,
            Some(PathBuf::from("d")),
            "an unset data_dir keeps the run's"
        );
        let e = resumed(&c, &colder, ck).unwrap_err().to_string();
        assert!(
            e.contains("runs/x/checkpoint.safetensors") && e.contains("moco_t: the checkpoint has 0.2, asked 0.1"),
            "{e}"
        );
    }

    #[test]
    fn meaningless_settings_are_refused_with_the_key_name() {
        let c = merge_sets(&preset("tiny-synthetic").unwrap(), &["knn_every=5".to_string()]).unwrap();
        assert!(c.model(1).is_ok(), "the base configuration is valid");
        for (set, key) in [
            ("lr=nan", "lr"),
            ("lr=-1e-3", "lr"),
            ("lr=inf", "lr"),
            ("moco_t=nan", "moco_t"),
            ("weight_decay=-0.1", "weight_decay"),
            ("warmup_epochs=nan", "warmup_epochs"),
            ("moco_dim=0", "moco_dim"),
            ("max_steps_per_epoch=0", "max_steps_per_epoch"),
            ("threads=100000", "threads"),
            ("knn_t=0.0", "knn_t"),
            ("batch_size=1", "batch_size"),
        ] {
            let bad = merge_sets(&c, &[set.to_string()]).and_then(|b| b.model(1).map(|_| b));
            let e = bad.err().unwrap_or_else(|| panic!("{set} was accepted")).to_string();
            assert!(e.contains(key), "{set}: {e}");
        }
    }

    #[test]
    fn presets_build_and_overrides_apply() {
        for (name, _) in PRESETS {
            let c = preset(name).unwrap();
            c.model(3).unwrap();
        }
        let c = preset("fashion-mnist").unwrap();
        let c = merge_sets(&c, &["epochs=3".into(), "pos_embed=learned".into(), "lr = 0.001".into()]).unwrap();
        assert_eq!((c.epochs, c.pos_embed, c.lr), (3, PosEmbedKind::Learned, 0.001));
        let e = format!("{:#}", merge_sets(&c, &["epochz=3".into()]).unwrap_err());
        assert!(e.contains("epochz"), "{e}");
        let bad = merge_sets(&c, &["heads=5".into()]).unwrap();
        let e = bad.model(1).unwrap_err().to_string();
        assert!(e.contains("heads"), "{e}");
        // Merging (as every command does) keeps unset optional keys unset.
        let m = merge_sets(&preset("vit_small").unwrap(), &[]).unwrap().model(3).unwrap();
        let v = m.backbone.vit().unwrap();
        assert_eq!((v.dim, v.depth, v.heads, v.tokens(), v.conv_stem), (384, 12, 12, 197, false));
        let m = preset("vit_conv_small").unwrap().model(3).unwrap();
        let v = m.backbone.vit().unwrap();
        assert_eq!((v.dim, v.depth, v.tokens(), v.conv_stem, v.stop_grad_conv1), (384, 11, 197, true, false));
        // The fixed patch projection has nothing to freeze in a conv stem. 28 px with patch 7
        // takes three stages (28 → 14 → 7 → 4: the 4×4 grid); 24 px with patch 6 would need a 4×4
        // grid too, but three stages give 3×3.
        let cs = preset("fashion-mnist").unwrap();
        let v = cs.model(1).unwrap().backbone.vit().unwrap().clone();
        assert_eq!((v.conv_stem, v.stop_grad_conv1, v.tokens()), (true, false, 17));
        let e = merge_sets(&cs, &["stop_grad_conv1=true".into()]).unwrap().model(1).unwrap_err().to_string();
        assert!(e.contains("stop_grad_conv1=false"), "{e}");
        let e = merge_sets(&cs, &["img_size=24".into(), "patch_size=6".into()]).unwrap();
        let e = e.model(1).unwrap_err().to_string();
        assert!(e.contains("3×3 grid, not the 4×4"), "{e}");
        let r = preset("resnet50").unwrap();
        assert_eq!(
            (r.optimizer, r.lr, r.weight_decay, r.moco_t, r.crop_min),
            (OptimizerKind::Lars, 0.6, 1e-6, 1.0, 0.2)
        );
        let m = r.model(3).unwrap();
        assert_eq!((m.backbone.dim(), m.mlp_dim, m.out_dim), (2048, 4096, 256));
        let e = merge_sets(&r, &["stop_grad_conv1=true".into()]).unwrap().model(3).unwrap_err().to_string();
        assert!(e.contains("ViTs only"), "{e}");
        let e = merge_sets(&r, &["img_size=16".into()]).unwrap().model(3).unwrap_err().to_string();
        assert!(e.contains("too small"), "{e}");
        let e = merge_sets(&r, &["conv_stem=true".into()]).unwrap().model(3).unwrap_err().to_string();
        assert!(e.contains("ViTs only"), "{e}");
    }

    #[test]
    fn instability_actions_that_cannot_act_are_refused() {
        let t = preset("tiny-synthetic").unwrap();
        let bad = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            merge_sets(&t, &sets).unwrap().model(1).unwrap_err().to_string()
        };
        let e = bad(&["on_spike=\"freeze-patch\"", "stop_grad_conv1=true"]);
        assert!(e.contains("set stop_grad_conv1 = false"), "{e}");
        let e = bad(&["on_spike=\"skip\"", "spike_threshold=0"]);
        assert!(e.contains("spike_threshold above 0"), "{e}");
        let e = bad(&["on_spike=\"rollback\"", "snapshot_every=0"]);
        assert!(e.contains("snapshot_every"), "{e}");
        let e = merge_sets(&t, &["on_spike=\"clip:-1\"".to_string()]).unwrap_err();
        assert!(format!("{e:#}").contains("clip:V"), "{e:#}");
        // A run whose actions act on the detector keeps its settings on resume.
        let acting = merge_sets(&t, &["on_spike=\"skip\"".to_string()]).unwrap();
        let asked = merge_sets(&acting, &["spike_threshold=3".to_string()]).unwrap();
        let e = resumed(&acting, &asked, std::path::Path::new("ck")).unwrap_err().to_string();
        assert!(e.contains("spike_threshold"), "{e}");
        let watching = merge_sets(&t, &["spike_threshold=3".to_string()]).unwrap();
        assert_eq!(resumed(&t, &watching, std::path::Path::new("ck")).unwrap().spike_threshold, 3.0);
        let ok = merge_sets(&t, &["on_spike=\"freeze-patch\"".to_string(), "stop_grad_conv1=false".to_string()]);
        assert!(ok.unwrap().model(1).is_ok());
    }
}
