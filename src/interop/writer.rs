//! Writing `torch.save`-compatible files (zip format): a pickle of dicts, strings, integers and
//! tensors (`torch._utils._rebuild_tensor_v2` over `FloatStorage` / `LongStorage`), and a stored
//! zip archive with the records `torch.load` reads (`data.pkl`, `data/<key>`, `byteorder`,
//! `version`).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// A value to pickle.
pub enum Obj {
    Int(i64),
    F64(f64),
    Bool(bool),
    None,
    Str(String),
    List(Vec<Obj>),
    Tuple(Vec<Obj>),
    /// A dict with integer keys (the optimizer's `state`).
    IntDict(Vec<(i64, Obj)>),
    /// A plain dict (string keys, insertion order).
    Dict(Vec<(String, Obj)>),
    /// A `collections.OrderedDict` (what `state_dict()` returns).
    OrderedDict(Vec<(String, Obj)>),
    /// An f32 tensor (contiguous).
    Float(Vec<usize>, Vec<f32>),
    /// An i64 tensor (contiguous), e.g. `num_batches_tracked`.
    Long(Vec<usize>, Vec<i64>),
}

use crate::engine::crc::crc32;

struct Pickler {
    out: Vec<u8>,
    storages: Vec<Vec<u8>>,
}

impl Pickler {
    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if (i32::MIN as i64..=i32::MAX as i64).contains(&v) {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn ints_tuple(&mut self, v: &[usize]) {
        self.out.push(b'(');
        for &x in v {
            self.int(x as i64);
        }
        self.out.push(b't');
    }
    fn tensor(&mut self, storage_type: &str, shape: &[usize], bytes: Vec<u8>) {
        let key = self.storages.len().to_string();
        let numel: usize = shape.iter().product();
        self.storages.push(bytes);
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(b'(');
        // persistent id ('storage', torch.XStorage, key, 'cpu', numel)
        self.out.push(b'(');
        self.str("storage");
        self.global("torch", storage_type);
        self.str(&key);
        self.str("cpu");
        self.int(numel as i64);
        self.out.push(b't');
        self.out.push(b'Q');
        self.int(0);
        self.ints_tuple(shape);
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        self.ints_tuple(&stride);
        self.out.push(0x89); // requires_grad False
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R");
        self.out.extend_from_slice(b"tR");
    }
    fn obj(&mut self, o: &Obj) {
        match o {
            Obj::Int(v) => self.int(*v),
            Obj::F64(v) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&v.to_be_bytes());
            }
            Obj::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Obj::None => self.out.push(b'N'),
            Obj::Str(s) => self.str(s),
            Obj::List(items) | Obj::Tuple(items) => {
                let list = matches!(o, Obj::List(_));
                self.out.push(if list { b']' } else { b'(' });
                if list && !items.is_empty() {
                    self.out.push(b'(');
                }
                for v in items {
                    self.obj(v);
                }
                if list {
                    if !items.is_empty() {
                        self.out.push(b'e');
                    }
                } else {
                    self.out.push(b't');
                }
            }
            Obj::IntDict(items) => {
                self.out.push(b'}');
                if !items.is_empty() {
                    self.out.push(b'(');
                    for (k, v) in items {
                        self.int(*k);
                        self.obj(v);
                    }
                    self.out.push(b'u');
                }
            }
            Obj::Dict(items) | Obj::OrderedDict(items) => {
                if matches!(o, Obj::OrderedDict(_)) {
                    self.global("collections", "OrderedDict");
                    self.out.extend_from_slice(b")R");
                } else {
                    self.out.push(b'}');
                }
                if !items.is_empty() {
                    self.out.push(b'(');
                    for (k, v) in items {
                        self.str(k);
                        self.obj(v);
                    }
                    self.out.push(b'u');
                }
            }
            Obj::Float(shape, v) => {
                self.tensor("FloatStorage", shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            Obj::Long(shape, v) => self.tensor("LongStorage", shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        }
    }
}

fn zip(entries: &[(String, &[u8])]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        if out.len() > u32::MAX as usize || data.len() > u32::MAX as usize {
            bail!("checkpoint too large for the zip writer (over 4 GB)");
        }
        let offset = out.len() as u32;
        let crc = crc32(data);
        let head = |sig: u32, central: bool, buf: &mut Vec<u8>| {
            buf.extend_from_slice(&sig.to_le_bytes());
            if central {
                buf.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            buf.extend_from_slice(&20u16.to_le_bytes()); // version needed
            buf.extend_from_slice(&0u16.to_le_bytes()); // flags
            buf.extend_from_slice(&0u16.to_le_bytes()); // stored
            buf.extend_from_slice(&0u32.to_le_bytes()); // time, date
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
            buf.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                buf.extend_from_slice(&[0u8; 6]); // comment len, disk, internal attrs
                buf.extend_from_slice(&0u32.to_le_bytes()); // external attrs
                buf.extend_from_slice(&offset.to_le_bytes());
            }
            buf.extend_from_slice(name.as_bytes());
        };
        head(0x0403_4b50, false, &mut out);
        out.extend_from_slice(data);
        head(0x0201_4b50, true, &mut central);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Ok(out)
}

/// Write `root` as a `torch.save` zip file at `path` (through a temporary file and a rename).
pub fn save(path: &Path, root: &Obj) -> Result<()> {
    let mut p = Pickler { out: vec![0x80, 2], storages: Vec::new() };
    p.obj(root);
    p.out.push(b'.');
    let archive = "archive";
    let mut entries: Vec<(String, &[u8])> = vec![(format!("{archive}/data.pkl"), &p.out)];
    entries.push((format!("{archive}/byteorder"), b"little"));
    for (i, s) in p.storages.iter().enumerate() {
        entries.push((format!("{archive}/data/{i}"), s));
    }
    entries.push((format!("{archive}/version"), b"3\n"));
    let bytes = zip(&entries)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_reader() {
        let path = std::env::temp_dir().join(format!("mocov3-writer-{}.pth.tar", std::process::id()));
        let root = Obj::Dict(vec![
            ("epoch".into(), Obj::Int(7)),
            ("arch".into(), Obj::Str("vit_small".into())),
            (
                "state_dict".into(),
                Obj::OrderedDict(vec![
                    ("module.w".into(), Obj::Float(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5])),
                    ("module.n".into(), Obj::Long(vec![], vec![300])),
                ]),
            ),
        ]);
        save(&path, &root).unwrap();
        let f = super::super::torchfile::TorchFile::open(&path).unwrap();
        assert_eq!(f.root.get("epoch").and_then(|v| v.as_int()), Some(7));
        let sd = f.root.get("state_dict").unwrap();
        let (s, v) = f.tensor_f32(sd.get("module.w").unwrap()).unwrap();
        assert_eq!((s, v), (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]));
        let (s, v) = f.tensor_f32(sd.get("module.n").unwrap()).unwrap();
        assert_eq!((s, v), (vec![], vec![300.0]));
    }
}
