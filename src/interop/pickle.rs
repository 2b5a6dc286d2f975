//! A restricted pickle reader: it understands the opcodes `torch.save` emits and builds plain
//! values. Globals are never imported or called; the only "calls" understood are the few torch
//! and collections constructors a checkpoint uses (OrderedDict, tensor rebuilding), and any other
//! one is kept as an opaque value or rejected with its name.

use anyhow::{bail, Result};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, as its little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Dict entries in insertion order.
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// A persistent id (a storage reference in torch files).
    Persistent(Box<Value>),
    /// A reduced call we keep without interpreting: callable and arguments.
    Call(Box<Value>, Box<Value>),
    /// A tensor view of a storage: key, dtype name (e.g. `FloatStorage`), element offset, shape,
    /// strides.
    Tensor {
        storage: String,
        dtype: String,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
}

impl Value {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    fn as_usizes(&self) -> Option<Vec<usize>> {
        match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(|x| x.as_int().map(|i| i as usize)).collect(),
            _ => None,
        }
    }
}

/// The storage of a persistent id: `('storage', <Global torch.XStorage>, key, location, numel, ...)`.
fn storage_of(pid: &Value) -> Result<(String, String)> {
    if let Value::Tuple(t) = pid {
        if let (Some(Value::Str(kind)), Some(Value::Global(_, ty)), Some(Value::Str(key))) =
            (t.first(), t.get(1), t.get(2))
        {
            if kind == "storage" {
                return Ok((key.clone(), ty.clone()));
            }
        }
    }
    bail!("unsupported persistent id in pickle: {pid:?}")
}

/// The only callables and classes a pickle may name (PyTorch's `weights_only` idea): tensor and
/// parameter rebuilding, storage types, and plain containers. Nothing is ever called (this
/// reader interprets the few it knows and keeps the rest as data), but a file naming anything
/// else is not a checkpoint and is refused by rule.
fn allowed_global(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        ("collections", "OrderedDict")
            | ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor" | "_rebuild_parameter")
            | ("torch", "Size")
            | ("_codecs", "encode")
            | ("argparse", "Namespace")
            | ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar")
            | ("numpy", "dtype")
            | ("builtins" | "__builtin__", "set" | "frozenset" | "bytearray" | "slice")
    ) || (module == "torch" && name.ends_with("Storage"))
}

fn global(module: String, name: String) -> Result<Value> {
    if !allowed_global(&module, &name) {
        bail!(
            "the pickle names {module}.{name}, which is not a tensor, storage or container type: refused (a \
             checkpoint never needs it, and a malicious file would use it to run code)"
        );
    }
    Ok(Value::Global(module, name))
}

fn reduce(f: Value, args: Value) -> Result<Value> {
    match (&f, &args) {
        (Value::Global(m, n), _) if m == "collections" && n == "OrderedDict" => Ok(Value::Dict(Vec::new())),
        (Value::Global(m, n), Value::Tuple(a))
            if m == "torch._utils" && (n == "_rebuild_tensor_v2" || n == "_rebuild_tensor") =>
        {
            let Some(Value::Persistent(pid)) = a.first() else { bail!("tensor without a storage reference") };
            let (storage, dtype) = storage_of(pid)?;
            let offset = a.get(1).and_then(|v| v.as_int()).unwrap_or(0) as usize;
            let shape =
                a.get(2).and_then(|v| v.as_usizes()).ok_or_else(|| anyhow::anyhow!("tensor without a shape"))?;
            let stride =
                a.get(3).and_then(|v| v.as_usizes()).ok_or_else(|| anyhow::anyhow!("tensor without strides"))?;
            Ok(Value::Tensor { storage, dtype, offset, shape, stride })
        }
        (Value::Global(m, n), _) if m == "torch._utils" && n == "_rebuild_parameter" => match args {
            Value::Tuple(mut a) if !a.is_empty() => Ok(a.remove(0)),
            _ => bail!("malformed parameter"),
        },
        _ => Ok(Value::Call(Box::new(f), Box::new(args))),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.at + n > self.b.len() {
            bail!("pickle data is truncated");
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn line(&mut self) -> Result<String> {
        let end = self.b[self.at..]
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| anyhow::anyhow!("pickle data is truncated"))?;
        let s = String::from_utf8_lossy(&self.b[self.at..self.at + end]).into_owned();
        self.at += end + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String> {
        Ok(String::from_utf8(self.take(n)?.to_vec())?)
    }
}

/// Read one pickle from `data` starting at byte 0; returns the value and the bytes consumed.
pub fn load(data: &[u8]) -> Result<(Value, usize)> {
    let mut r = Reader { b: data, at: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    fn pop(stack: &mut Vec<Value>) -> Result<Value> {
        stack.pop().ok_or_else(|| anyhow::anyhow!("pickle stack underflow"))
    }
    fn since_mark(stack: &mut Vec<Value>, marks: &mut Vec<usize>) -> Result<Vec<Value>> {
        let m = marks.pop().ok_or_else(|| anyhow::anyhow!("pickle MARK missing"))?;
        if m > stack.len() {
            bail!("pickle MARK beyond the stack");
        }
        Ok(stack.split_off(m))
    }
    fn set_items(target: &mut Value, items: Vec<Value>) -> Result<()> {
        let Value::Dict(d) = target else { bail!("SETITEMS on a non-dict") };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Some(slot) = d.iter_mut().find(|(kk, _)| *kk == k) {
                slot.1 = v;
            } else {
                d.push((k, v));
            }
        }
        Ok(())
    }
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            } // PROTO
            0x95 => {
                r.u64()?;
            } // FRAME
            b'.' => return Ok((pop(&mut stack)?, r.at)), // STOP
            b'(' => marks.push(stack.len()),             // MARK
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(r.u32()? as i32 as i64)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            0x8a => {
                // LONG1: little-endian two's complement of n bytes
                let n = r.u8()? as usize;
                let bytes = r.take(n)?;
                if n > 8 {
                    stack.push(Value::BigInt(bytes.to_vec()));
                    continue;
                }
                let mut v: i64 = 0;
                for (i, &b) in bytes.iter().enumerate() {
                    v |= (b as i64) << (8 * i);
                }
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(r.take(8)?.try_into()?))),
            b'X' => {
                let n = r.u32()? as usize;
                let s = r.string(n)?;
                stack.push(Value::Str(s));
            }
            0x8c => {
                let n = r.u8()? as usize;
                let s = r.string(n)?;
                stack.push(Value::Str(s));
            }
            0x8d => {
                let n = r.u64()? as usize;
                let s = r.string(n)?;
                stack.push(Value::Str(s));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'B' => {
                let n = r.u32()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b't' => {
                let items = since_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items));
            }
            0x85 => {
                let a = pop(&mut stack)?;
                stack.push(Value::Tuple(vec![a]));
            }
            0x86 => {
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(Value::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = pop(&mut stack)?;
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(Value::Tuple(vec![a, b, c]));
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                set_items(stack.last_mut().ok_or_else(|| anyhow::anyhow!("SETITEM on an empty stack"))?, vec![k, v])?;
            }
            b'u' => {
                let items = since_mark(&mut stack, &mut marks)?;
                set_items(stack.last_mut().ok_or_else(|| anyhow::anyhow!("SETITEMS on an empty stack"))?, items)?;
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => bail!("APPEND on a non-list"),
                }
            }
            b'e' => {
                let items = since_mark(&mut stack, &mut marks)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => bail!("APPENDS on a non-list"),
                }
            }
            b'q' => {
                let i = r.u8()? as u64;
                memo.insert(i, stack.last().cloned().ok_or_else(|| anyhow::anyhow!("BINPUT on an empty stack"))?);
            }
            b'r' => {
                let i = r.u32()? as u64;
                memo.insert(i, stack.last().cloned().ok_or_else(|| anyhow::anyhow!("LONG_BINPUT on an empty stack"))?);
            }
            0x94 => {
                let i = memo.len() as u64;
                memo.insert(i, stack.last().cloned().ok_or_else(|| anyhow::anyhow!("MEMOIZE on an empty stack"))?);
            }
            b'h' => {
                let i = r.u8()? as u64;
                stack.push(memo.get(&i).cloned().ok_or_else(|| anyhow::anyhow!("pickle memo {i} missing"))?);
            }
            b'j' => {
                let i = r.u32()? as u64;
                stack.push(memo.get(&i).cloned().ok_or_else(|| anyhow::anyhow!("pickle memo {i} missing"))?);
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(global(module, name)?);
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(global(m, n)?),
                    _ => bail!("STACK_GLOBAL with non-string names"),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                stack.push(reduce(f, args)?);
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args), kept opaque
                let args = pop(&mut stack)?;
                let cls = pop(&mut stack)?;
                stack.push(Value::Call(Box::new(cls), Box::new(args)));
            }
            b'b' => {
                // BUILD: set state; tensors and dicts ignore it (it carries no tensor data here)
                let _state = pop(&mut stack)?;
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(Value::Persistent(Box::new(pid)));
            }
            other => bail!("unsupported pickle opcode 0x{other:02x} at byte {}", r.at - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values() {
        // pickle.dumps({'a': [1, -2, 300], 'b': (1.5, True, None), 'c': 'xy'}, protocol=2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01eX\x01\x00\x00\x00bq\x03G?\xf8\x00\x00\x00\x00\x00\x00\x88N\x87q\x04X\x01\x00\x00\x00cq\x05X\x02\x00\x00\x00xyq\x06u.";
        let (v, n) = load(data).unwrap();
        assert_eq!(n, data.len());
        assert_eq!(v.get("a"), Some(&Value::List(vec![Value::Int(1), Value::Int(-2), Value::Int(300)])));
        assert_eq!(v.get("b"), Some(&Value::Tuple(vec![Value::Float(1.5), Value::Bool(true), Value::None])));
        assert_eq!(v.get("c"), Some(&Value::Str("xy".into())));
        assert!(load(&data[..data.len() - 3]).is_err());
        assert!(load(b"\x80\x02\xff.").unwrap_err().to_string().contains("unsupported pickle opcode"));
    }

    #[test]
    fn a_pickle_naming_a_callable_outside_the_allowlist_is_refused() {
        // Hand-written equivalents of a protocol-2 pickle of os.system('echo pwned') (protocol 2: GLOBAL 'os system', a 1-tuple, REDUCE),
        // and the same through STACK_GLOBAL with builtins.eval.
        let global = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.";
        let e = load(global).unwrap_err().to_string();
        assert!(e.contains("os.system") && e.contains("refused"), "{e}");
        let stack = b"\x80\x04X\x08\x00\x00\x00builtinsX\x04\x00\x00\x00eval\x93X\x01\x00\x00\x001\x85R.";
        let e = load(stack).unwrap_err().to_string();
        assert!(e.contains("builtins.eval") && e.contains("refused"), "{e}");
        // A container name (collections.OrderedDict) passes.
        assert!(load(b"\x80\x02ccollections\nOrderedDict\n)R.").is_ok());
    }
}
