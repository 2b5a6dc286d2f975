//! `torch.save` files: the zip format (`archive/data.pkl` + `archive/data/<key>`, stored
//! uncompressed) and the legacy format (magic number, protocol, system info, the object, the
//! storage keys, then each storage as a count and raw little-endian data).

use super::pickle::{self, Value};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

pub struct TorchFile {
    pub root: Value,
    storages: HashMap<String, Vec<u8>>,
    path: String,
}

fn elem_size(dtype: &str) -> Result<usize> {
    Ok(match dtype {
        "FloatStorage" | "IntStorage" => 4,
        "DoubleStorage" | "LongStorage" => 8,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "BoolStorage" | "ByteStorage" | "CharStorage" => 1,
        other => bail!("unsupported storage type {other}"),
    })
}

fn half_to_f32(h: u16) -> f32 {
    let (s, e, m) = ((h >> 15) as u32, ((h >> 10) & 0x1f) as u32, (h & 0x3ff) as u32);
    let bits = match (e, m) {
        (0, 0) => s << 31,
        (0, _) => return if s == 1 { -1.0 } else { 1.0 } * (m as f32) * 2f32.powi(-24),
        (31, _) => (s << 31) | 0x7f80_0000 | (m << 13),
        _ => (s << 31) | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Minimal zip reading: the central directory, stored (uncompressed) entries, zip64 sizes.
/// Every offset and size read from the file is checked against its length (checked arithmetic:
/// a damaged field is an error, never a panic or a huge allocation).
fn unzip(bytes: &[u8], path: &str) -> Result<HashMap<String, Vec<u8>>> {
    let corrupt = || anyhow::anyhow!("{path}: corrupt or truncated zip archive (a field points past the end)");
    let field =
        |o: usize, n: usize| -> Result<&[u8]> { o.checked_add(n).and_then(|e| bytes.get(o..e)).ok_or_else(corrupt) };
    let le16 = |o: usize| -> Result<usize> { Ok(u16::from_le_bytes(field(o, 2)?.try_into()?) as usize) };
    let le32 = |o: usize| -> Result<usize> { Ok(u32::from_le_bytes(field(o, 4)?.try_into()?) as usize) };
    let le64 = |o: usize| -> Result<usize> {
        usize::try_from(u64::from_le_bytes(field(o, 8)?.try_into()?)).map_err(|_| corrupt())
    };
    let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(corrupt);
    let eocd = (0..bytes.len().saturating_sub(21))
        .rev()
        .take(70_000)
        .find(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .with_context(|| format!("{path}: truncated zip archive (no end of central directory)"))?;
    let mut count = le16(eocd + 10)?;
    let mut cd = le32(eocd + 16)?;
    if (count == 0xffff || cd == 0xffff_ffff) && eocd >= 20 && bytes[eocd - 20..eocd - 16] == [0x50, 0x4b, 0x06, 0x07] {
        let z64 = le64(eocd - 12)?;
        if add(z64, 56)? > bytes.len() {
            bail!("{path}: truncated zip64 directory");
        }
        count = le64(z64 + 32)?;
        cd = le64(z64 + 48)?;
    }
    let mut out = HashMap::new();
    let mut at = cd;
    for _ in 0..count {
        if add(at, 46)? > bytes.len() || bytes[at..at + 4] != [0x50, 0x4b, 0x01, 0x02] {
            bail!("{path}: corrupt zip central directory");
        }
        let method = le16(at + 10)?;
        let (mut csize, mut local) = (le32(at + 20)?, le32(at + 42)?);
        let (nlen, xlen, clen) = (le16(at + 28)?, le16(at + 30)?, le16(at + 32)?);
        let name = String::from_utf8_lossy(field(at + 46, nlen)?).into_owned();
        // zip64 extra field: the 0xffffffff values follow in order (usize, csize, offset).
        let mut x = at + 46 + nlen;
        let xend = add(x, xlen)?;
        field(x, xlen)?;
        while x + 4 <= xend {
            let (id, len) = (le16(x)?, le16(x + 2)?);
            if id == 1 {
                let mut f = x + 4;
                if le32(at + 24)? == 0xffff_ffff {
                    f += 8;
                }
                if csize == 0xffff_ffff {
                    csize = le64(f)?;
                    f += 8;
                }
                if local == 0xffff_ffff {
                    local = le64(f)?;
                }
            }
            x += 4 + len;
        }
        if method != 0 {
            bail!("{path}: entry {name} is compressed (method {method}); torch.save writes stored entries");
        }
        if add(local, 30)? > bytes.len() {
            bail!("{path}: truncated zip archive");
        }
        let data = add(add(local + 30, le16(local + 26)?)?, le16(local + 28)?)?;
        if add(data, csize)? > bytes.len() {
            bail!("{path}: entry {name} is truncated");
        }
        out.insert(name, bytes[data..data + csize].to_vec());
        at = add(at, 46 + nlen + xlen + clen)?;
    }
    Ok(out)
}

impl TorchFile {
    pub fn open(path: &Path) -> Result<TorchFile> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {p}"))?;
        if bytes.starts_with(b"PK\x03\x04") {
            let files = unzip(&bytes, &p)?;
            let pkl = files.keys().find(|k| k.ends_with("/data.pkl") || *k == "data.pkl").cloned();
            let Some(pkl) = pkl else { bail!("{p}: no data.pkl in the archive: not a torch.save file") };
            let prefix = pkl.trim_end_matches("data.pkl").to_string();
            if let Some(bo) = files.get(&format!("{prefix}byteorder")) {
                if bo != b"little" {
                    bail!("{p}: big-endian tensors are not supported");
                }
            }
            let (root, _) = pickle::load(&files[&pkl]).with_context(|| format!("{p}: reading {pkl}"))?;
            let storages = files
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(&format!("{prefix}data/")).map(|key| (key.to_string(), v)))
                .collect();
            Ok(TorchFile { root, storages, path: p })
        } else {
            let mut at = 0;
            let mut next = |what: &str| -> Result<Value> {
                let (v, n) = pickle::load(&bytes[at..]).with_context(|| format!("{p}: reading the {what}"))?;
                at += n;
                Ok(v)
            };
            let magic = next("magic number")?;
            if !matches!(magic, Value::BigInt(ref b) if b == &0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10]) {
                bail!("{p} is neither a zip nor a legacy torch.save file (bad magic number)");
            }
            let _protocol = next("protocol version")?;
            let _sys = next("system info")?;
            let root = next("checkpoint object")?;
            let keys = next("storage keys")?;
            let Value::List(keys) = keys else { bail!("{p}: storage keys are not a list") };
            // Storage types come from the tensors that reference them.
            let mut types: HashMap<String, String> = HashMap::new();
            collect_types(&root, &mut types);
            let mut storages = HashMap::new();
            for k in keys {
                let Value::Str(k) = k else { bail!("{p}: a storage key is not a string") };
                if at + 8 > bytes.len() {
                    bail!("{p} is truncated (storage {k})");
                }
                let n = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
                at += 8;
                let size = n * elem_size(types.get(&k).map(|s| s.as_str()).unwrap_or("FloatStorage"))?;
                if at + size > bytes.len() {
                    bail!("{p} is truncated (storage {k})");
                }
                storages.insert(k, bytes[at..at + size].to_vec());
                at += size;
            }
            Ok(TorchFile { root, storages, path: p })
        }
    }

    /// A tensor value as f32 (from f32, f64, f16, i64 or i32 storage), row-major.
    pub fn tensor_f32(&self, t: &Value) -> Result<(Vec<usize>, Vec<f32>)> {
        let Value::Tensor { storage, dtype, offset, shape, stride } = t else { bail!("{}: not a tensor", self.path) };
        let raw = self.storages.get(storage).with_context(|| format!("{}: storage {storage} is missing", self.path))?;
        let es = elem_size(dtype)?;
        let read = |i: usize| -> Result<f32> {
            let o = i * es;
            if o + es > raw.len() {
                bail!("{}: storage {storage} is truncated", self.path);
            }
            let b = &raw[o..o + es];
            Ok(match dtype.as_str() {
                "FloatStorage" => f32::from_le_bytes(b.try_into()?),
                "DoubleStorage" => f64::from_le_bytes(b.try_into()?) as f32,
                "HalfStorage" => half_to_f32(u16::from_le_bytes(b.try_into()?)),
                "LongStorage" => i64::from_le_bytes(b.try_into()?) as f32,
                "IntStorage" => i32::from_le_bytes(b.try_into()?) as f32,
                other => bail!("{}: tensors of {other} are not supported here", self.path),
            })
        };
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            let lin = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
            out.push(read(lin)?);
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok((shape.clone(), out))
    }
}

fn collect_types(v: &Value, out: &mut HashMap<String, String>) {
    match v {
        Value::Tensor { storage, dtype, .. } => {
            out.insert(storage.clone(), dtype.clone());
        }
        Value::List(x) | Value::Tuple(x) => x.iter().for_each(|y| collect_types(y, out)),
        Value::Dict(x) => x.iter().for_each(|(a, b)| {
            collect_types(a, out);
            collect_types(b, out)
        }),
        Value::Call(a, b) => {
            collect_types(a, out);
            collect_types(b, out)
        }
        _ => {}
    }
}
