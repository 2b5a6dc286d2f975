//! Table-driven CRC-32 checksums (reflected): IEEE 802.3 for zip archives, Castagnoli (CRC-32C)
//! for TensorBoard's TFRecord framing.

use std::sync::OnceLock;

fn table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { poly ^ (c >> 1) } else { c >> 1 };
        }
        *e = c;
    }
    t
}

/// The running register `c` after `data`.
fn step(t: &[u32; 256], mut c: u32, data: &[u8]) -> u32 {
    for &b in data {
        c = t[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

fn run(t: &[u32; 256], data: &[u8]) -> u32 {
    !step(t, !0, data)
}

fn ieee() -> &'static [u32; 256] {
    static T: OnceLock<[u32; 256]> = OnceLock::new();
    T.get_or_init(|| table(0xEDB8_8320))
}

/// CRC-32 (IEEE, as zip uses).
pub fn crc32(data: &[u8]) -> u32 {
    run(ieee(), data)
}

/// CRC-32 (IEEE) over data given in pieces: `Crc32::new()`, `update` per piece, `finish`.
pub struct Crc32(u32);

impl Crc32 {
    pub fn new() -> Crc32 {
        Crc32(!0)
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0 = step(ieee(), self.0, data);
    }
    pub fn finish(&self) -> u32 {
        !self.0
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::new()
    }
}

/// CRC-32C (Castagnoli, as TFRecord uses).
pub fn crc32c(data: &[u8]) -> u32 {
    static T: OnceLock<[u32; 256]> = OnceLock::new();
    run(T.get_or_init(|| table(0x82F6_3B78)), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xCBF4_3926);
        // RFC 3720 test vectors for CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }
}
