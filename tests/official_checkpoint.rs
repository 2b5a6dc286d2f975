//! Reading checkpoints of the official code (fixtures from scripts/make_checkpoint_fixtures.py:
//! the same state saved by torch.save in the zip and the legacy format, and as safetensors).

mod common;

use common::tiny;
use mocov3::interop::official::load_into;
use mocov3::moco::{MoCo, MocoConfig};
use mocov3::models::backbone::BackboneConfig;
use mocov3::nn::Module;
use mocov3::optim::{AdamW, Optimizer};

fn adamw() -> Optimizer {
    Optimizer::AdamW(AdamW::new(0.1))
}
use safetensors::SafeTensors;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Every tensor of a model (parameters and buffers, both encoders) as bits, by key.
fn tensor_bits(m: &mut MoCo) -> Vec<(String, Vec<u32>)> {
    let mut v = Vec::new();
    m.visit_tensors(&mut |k, _, d| v.push((k, d.iter().map(|x| x.to_bits()).collect::<Vec<_>>())));
    v
}

fn floats(st: &SafeTensors, key: &str) -> Vec<f32> {
    st.tensor(key).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn zip_and_legacy_checkpoints_load_exactly() {
    let bytes = std::fs::read(fixture("official_expected.safetensors")).unwrap();
    let want = SafeTensors::deserialize(&bytes).unwrap();
    for file in ["official_zip.pth.tar", "official_legacy.pth.tar"] {
        let mut model = MoCo::new(&tiny(16), 9);
        let mut o = adamw();
        let info = load_into(&fixture(file), &mut model, &mut o).unwrap();
        let Optimizer::AdamW(opt) = o else { unreachable!() };
        assert_eq!(info.epoch, 3);
        assert_eq!(info.arch.as_deref(), Some("vit_test"));
        let mut n = 0;
        model.visit_tensors(&mut |key, _, data| {
            assert_eq!(*data, floats(&want, &format!("state_dict.module.{key}")), "{file}: {key}");
            n += 1;
        });
        assert_eq!(n, want.names().iter().filter(|k| k.starts_with("state_dict.")).count());
        assert_eq!(opt.step, 1);
        let keys = model.trainable_keys();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(opt.exp_avg[i], floats(&want, &format!("optimizer.exp_avg.{k}")), "{file}: {k}");
            assert_eq!(opt.exp_avg_sq[i], floats(&want, &format!("optimizer.exp_avg_sq.{k}")), "{file}: {k}");
        }
    }
}

#[test]
fn mismatches_and_damage_are_clear_errors() {
    // A model of another width: the first tensor's shape is named.
    let e = format!(
        "{:#}",
        load_into(&fixture("official_zip.pth.tar"), &mut MoCo::new(&tiny(32), 0), &mut adamw()).err().unwrap()
    );
    assert!(e.contains("module.base_encoder.cls_token") && e.contains("shape"), "{e}");
    // Truncated files in both formats.
    let dir = std::env::temp_dir().join(format!("mocov3-official-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["official_zip.pth.tar", "official_legacy.pth.tar"] {
        let b = std::fs::read(fixture(file)).unwrap();
        let cut = dir.join(file);
        std::fs::write(&cut, &b[..b.len() * 2 / 3]).unwrap();
        let e = format!("{:#}", load_into(&cut, &mut MoCo::new(&tiny(16), 0), &mut adamw()).err().unwrap());
        assert!(e.contains(file) && e.contains("truncated"), "{e}");
    }
    let junk = dir.join("junk.pth.tar");
    std::fs::write(&junk, b"hello world, not a checkpoint").unwrap();
    let e = format!("{:#}", load_into(&junk, &mut MoCo::new(&tiny(16), 0), &mut adamw()).err().unwrap());
    assert!(e.contains("junk.pth.tar"), "{e}");
}

#[test]
fn shapes_are_inferred_from_the_weights() {
    let s = mocov3::interop::official::infer_shape(&fixture("official_legacy.pth.tar")).unwrap();
    assert_eq!((s.dim, s.depth, s.patch, s.in_chans, s.img, s.mlp_dim, s.out_dim), (16, 1, 8, 3, 16, 32, 8));
}

#[test]
fn official_layout_round_trips_bit_exactly() {
    // official (zip) -> ours -> official layout -> ours: every tensor bit-identical.
    let mut a = MoCo::new(&tiny(16), 9);
    load_into(&fixture("official_zip.pth.tar"), &mut a, &mut adamw()).unwrap();
    let path = std::env::temp_dir().join(format!("mocov3-roundtrip-{}.pth.tar", std::process::id()));
    mocov3::interop::writer::save(&path, &mocov3::interop::official::to_official(&mut a, 3, "vit_test")).unwrap();
    let mut b = MoCo::new(&tiny(16), 1);
    let info = load_into(&path, &mut b, &mut adamw()).unwrap();
    assert_eq!(info.epoch, 3);
    assert_eq!(tensor_bits(&mut a), tensor_bits(&mut b));
}

#[test]
fn backbone_only_layouts_load_bit_exactly() {
    use mocov3::interop::{official, writer};
    let mut a = MoCo::new(&tiny(16), 9);
    load_into(&fixture("official_legacy.pth.tar"), &mut a, &mut adamw()).unwrap();
    let dir = std::env::temp_dir().join(format!("mocov3-backbone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (deit, timm) = (dir.join("deit.pth"), dir.join("timm.pth"));
    writer::save(&deit, &official::to_deit(&mut a)).unwrap();
    writer::save(&timm, &official::to_timm(&mut a)).unwrap();
    let bits = |m: &mut MoCo| {
        let mut v = Vec::new();
        m.base.backbone.visit(&mut |p| v.push((p.name.clone(), p.w.iter().map(|x| x.to_bits()).collect::<Vec<_>>())));
        v
    };
    let want = bits(&mut a);
    for file in [deit.clone(), timm, fixture("official_zip.pth.tar")] {
        let mut b = MoCo::new(&tiny(16), 2);
        official::load_backbone(&file, &mut b.base.backbone).unwrap();
        assert_eq!(bits(&mut b), want, "{}", file.display());
    }
    let e = official::load_backbone(&deit, &mut MoCo::new(&tiny(32), 2).base.backbone).unwrap_err().to_string();
    assert!(e.contains("shape"), "{e}");
}

#[test]
fn missing_and_unexpected_keys_are_named() {
    use mocov3::interop::writer::{self, Obj};
    let mut a = MoCo::new(&tiny(16), 9);
    let mut sd = Vec::new();
    a.visit_tensors(&mut |k, s, d| sd.push((format!("module.{k}"), Obj::Float(s.to_vec(), d.clone()))));
    let dir = std::env::temp_dir().join(format!("mocov3-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let without: Vec<(String, Obj)> =
        sd.iter().filter(|(k, _)| !k.ends_with("blocks.0.norm2.bias")).map(|(k, v)| (k.clone(), clone(v))).collect();
    let missing = dir.join("missing.pth.tar");
    writer::save(&missing, &Obj::Dict(vec![("state_dict".into(), Obj::OrderedDict(without))])).unwrap();
    let e = load_into(&missing, &mut MoCo::new(&tiny(16), 0), &mut adamw()).err().unwrap().to_string();
    assert!(e.contains("module.base_encoder.blocks.0.norm2.bias") && e.contains("missing"), "{e}");
    let mut extra: Vec<(String, Obj)> = sd.iter().map(|(k, v)| (k.clone(), clone(v))).collect();
    extra.push(("module.base_encoder.fc_norm.weight".into(), Obj::Float(vec![16], vec![1.0; 16])));
    let unexpected = dir.join("unexpected.pth.tar");
    writer::save(&unexpected, &Obj::Dict(vec![("state_dict".into(), Obj::OrderedDict(extra))])).unwrap();
    let e = load_into(&unexpected, &mut MoCo::new(&tiny(16), 0), &mut adamw()).err().unwrap().to_string();
    assert!(e.contains("unexpected") && e.contains("module.base_encoder.fc_norm.weight"), "{e}");
}

fn clone(o: &mocov3::interop::writer::Obj) -> mocov3::interop::writer::Obj {
    use mocov3::interop::writer::Obj;
    match o {
        Obj::Float(s, d) => Obj::Float(s.clone(), d.clone()),
        _ => unreachable!("only tensors here"),
    }
}

#[test]
fn resnet_official_layout_round_trips_and_names_its_shape() {
    use mocov3::models::backbone::ResNetConfig;
    use mocov3::optim::OptimizerKind;
    let cfg = MocoConfig {
        backbone: BackboneConfig::ResNet(ResNetConfig { depth: 18, cifar: true, img: 8, in_chans: 1 }),
        mlp_dim: 32,
        out_dim: 16,
        t: 1.0,
    };
    // One LARS step so that weights, BN running statistics and the momentum encoder move.
    let mut a = MoCo::new(&cfg, 5);
    let mut rng = mocov3::engine::rng::Rng::new(3);
    let x: Vec<f32> = (0..2 * 4 * 64).map(|_| rng.normal()).collect();
    a.forward_backward(&x, 4, 0.9);
    Optimizer::new(OptimizerKind::Lars, 1e-6, false).update(&mut a.trainable_params(), 0.1);
    let path = std::env::temp_dir().join(format!("mocov3-resnet-roundtrip-{}.pth.tar", std::process::id()));
    mocov3::interop::writer::save(&path, &mocov3::interop::official::to_official(&mut a, 7, "resnet18")).unwrap();
    let mut b = MoCo::new(&cfg, 1);
    let info = load_into(&path, &mut b, &mut Optimizer::new(OptimizerKind::Lars, 1e-6, false)).unwrap();
    assert_eq!((info.epoch, info.arch.as_deref()), (7, Some("resnet18")));
    let (ta, tb) = (tensor_bits(&mut a), tensor_bits(&mut b));
    assert!(ta.iter().any(|(k, _)| k == "base_encoder.layer1.0.bn1.running_mean"));
    assert!(ta.iter().any(|(k, _)| k == "base_encoder.fc.0.weight"));
    assert_eq!(ta, tb);
    let r = mocov3::interop::official::infer_resnet(&path).unwrap().expect("a ResNet");
    assert_eq!((r.depth, r.cifar, r.in_chans, r.mlp_dim, r.out_dim), (18, true, 1, 32, 16));
    assert!(mocov3::interop::official::infer_resnet(&fixture("official_zip.pth.tar")).unwrap().is_none());
}

#[test]
fn convert_records_the_recipe_a_resume_keeps() {
    let out = std::env::temp_dir().join(format!("mocov3-convert-{}.safetensors", std::process::id()));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_mocov3"))
        .args(["convert", fixture("official_zip.pth.tar").to_str().unwrap(), "--to", "safetensors"])
        .args(["--out", out.to_str().unwrap(), "--heads", "2", "--set", "epochs=7", "--set", "batch_size=32"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let (_, _, state) = mocov3::train::checkpoint::load(&out).unwrap();
    assert_eq!((state.config.epochs, state.config.batch_size, state.config.dim), (7, 32, Some(16)));
    let _ = std::fs::remove_file(&out);
}

#[test]
fn a_conv_stem_round_trips_and_is_recognised() {
    // vit_conv_* layout: patch_embed.proj.{0,1,3,4,6,7,9} (3 stages and the 1×1), BN buffers.
    let mut cfg = tiny(16);
    if let BackboneConfig::Vit(v) = &mut cfg.backbone {
        (v.stop_grad_conv1, v.conv_stem) = (false, true);
    }
    let mut a = MoCo::new(&cfg, 9);
    // Running statistics away from their initial values, so the buffers are really compared.
    let x: Vec<f32> = (0..4 * 3 * 256).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    a.base.backbone.forward(&x, 4, 2);
    let path = std::env::temp_dir().join(format!("mocov3-convstem-{}.pth.tar", std::process::id()));
    mocov3::interop::writer::save(&path, &mocov3::interop::official::to_official(&mut a, 1, "vit_conv_test")).unwrap();
    let s = mocov3::interop::official::infer_shape(&path).unwrap();
    assert!(s.conv_stem);
    // Three stride-2 stages stand for patch 8: 16 px → a 2×2 grid.
    assert_eq!((s.dim, s.depth, s.patch, s.in_chans, s.img), (16, 1, 8, 3, 16));
    let mut b = MoCo::new(&cfg, 1);
    load_into(&path, &mut b, &mut adamw()).unwrap();
    let (ta, tb) = (tensor_bits(&mut a), tensor_bits(&mut b));
    assert!(ta.iter().any(|(k, _)| k == "base_encoder.patch_embed.proj.7.running_var"));
    assert!(ta.iter().any(|(k, _)| k == "momentum_encoder.patch_embed.proj.9.bias"));
    assert_eq!(ta, tb);
    // A patch-projection model does not take it.
    let e = format!("{:#}", load_into(&path, &mut MoCo::new(&tiny(16), 0), &mut adamw()).err().unwrap());
    assert!(e.contains("patch_embed.proj.weight"), "{e}");
    std::fs::remove_file(&path).ok();
}

#[test]
fn the_official_layout_records_what_the_weights_do_not_tell() {
    // A conv stem standing for patch 7 on 28 px images (3 stride-2 stages: the weights alone
    // read as patch 8 on 32 px) with 2 heads: `to_official` records them, `infer_shape` reads
    // them back, so `convert` back to safetensors needs no --heads or --set.
    let mut cfg = tiny(16);
    if let BackboneConfig::Vit(v) = &mut cfg.backbone {
        (v.img, v.patch, v.in_chans, v.conv_stem, v.stop_grad_conv1) = (28, 7, 1, true, false);
    }
    let mut a = MoCo::new(&cfg, 3);
    let path = std::env::temp_dir().join(format!("mocov3-record-{}.pth.tar", std::process::id()));
    mocov3::interop::writer::save(&path, &mocov3::interop::official::to_official(&mut a, 1, "vit_conv_test")).unwrap();
    let s = mocov3::interop::official::infer_shape(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!((s.heads, s.img, s.patch, s.conv_stem, s.dim), (Some(2), 28, 7, true, 16));
}
