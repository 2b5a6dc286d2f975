//! TensorBoard event files (`events.out.tfevents.*`), written directly: TFRecord framing (length,
//! masked CRC-32C of the length, an `Event` protocol buffer, masked CRC-32C of it) around scalar
//! summaries. `tensorboard --logdir RUN_DIR` shows the curves.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

use crate::engine::crc::crc32c;

fn masked(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xA282_EAD8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(((field << 3) | 2) as u64, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// An `Event` with wall time, step and either a file version or scalar values.
fn event(wall: f64, step: i64, file_version: Option<&str>, scalars: &[(&str, f32)]) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(0x09); // field 1, fixed64: wall_time
    e.extend_from_slice(&wall.to_le_bytes());
    e.push(0x10); // field 2, varint: step
    varint(step as u64, &mut e);
    if let Some(v) = file_version {
        field_bytes(3, v.as_bytes(), &mut e);
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, val) in scalars {
            let mut value = Vec::new();
            field_bytes(1, tag.as_bytes(), &mut value);
            value.push(0x15); // field 2, fixed32: simple_value
            value.extend_from_slice(&val.to_le_bytes());
            field_bytes(1, &value, &mut summary);
        }
        field_bytes(5, &summary, &mut e);
    }
    e
}

pub struct EventWriter {
    file: std::fs::File,
}

impl EventWriter {
    /// Create a new event file in `dir` (TensorBoard reads every such file in the folder).
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "mocov3".into());
        let path = dir.join(format!("events.out.tfevents.{}.{host}.{}", wall.as_secs(), std::process::id()));
        let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = EventWriter { file };
        w.record(&event(wall.as_secs_f64(), 0, Some("brain.Event:2"), &[]))?;
        Ok(w)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked(crc32c(&len)).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked(crc32c(data)).to_le_bytes());
        self.file.write_all(&buf)?;
        self.file.flush()?;
        Ok(())
    }

    /// Mark a restart (a resumed run) at `step`: a `SessionLog` START event, on which
    /// TensorBoard purges the events of earlier files at `step` and after, so the steps an
    /// interrupted run logged past its last checkpoint do not show twice.
    pub fn restart_at(&mut self, step: u64) -> Result<()> {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let mut e = event(wall, step as i64, None, &[]);
        field_bytes(7, &[0x08, 0x01], &mut e); // session_log { status: START }
        self.record(&e)
    }

    /// Scalars for one step (tags such as `train/loss`).
    pub fn scalars(&mut self, step: u64, values: &[(&str, f32)]) -> Result<()> {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        self.record(&event(wall, step as i64, None, values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_framed_and_checksummed() {
        let dir = std::env::temp_dir().join(format!("mocov3-tb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalars(7, &[("train/loss", 1.5)]).unwrap();
        w.restart_at(5).unwrap();
        let f = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        assert!(f.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
        let b = std::fs::read(f).unwrap();
        let mut at = 0;
        let mut records = Vec::new();
        while at < b.len() {
            let len = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
            assert_eq!(u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()), masked(crc32c(&b[at..at + 8])));
            let data = &b[at + 12..at + 12 + len];
            assert_eq!(u32::from_le_bytes(b[at + 12 + len..at + 16 + len].try_into().unwrap()), masked(crc32c(data)));
            records.push(data.to_vec());
            at += 16 + len;
        }
        assert_eq!(records.len(), 3);
        assert_eq!(&records[2][9..], &[0x10, 5, 0x3a, 2, 0x08, 1], "step 5, session_log START");
        assert!(records[0].windows(13).any(|w| w == b"brain.Event:2"));
        let r = &records[1];
        assert!(r.windows(10).any(|w| w == b"train/loss"));
        assert!(r.windows(4).any(|w| w == 1.5f32.to_le_bytes()));
        assert_eq!(&r[9..11], &[0x10, 7], "step field");
    }
}
