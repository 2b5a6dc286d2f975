//! A minimal raster for line charts: an RGB canvas, lines, rectangles, and PNG output.

use super::font::{draw_text, text_width};
use anyhow::{Context, Result};
use std::path::Path;

pub struct Canvas {
    pub w: i64,
    pub h: i64,
    px: Vec<u8>,
}

impl Canvas {
    pub fn new(w: i64, h: i64) -> Canvas {
        Canvas { w, h, px: vec![255; (w * h * 3) as usize] }
    }

    pub fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && x < self.w && y < self.h {
            let i = ((y * self.w + x) * 3) as usize;
            self.px[i..i + 3].copy_from_slice(&rgb);
        }
    }

    pub fn get(&self, x: i64, y: i64) -> [u8; 3] {
        let i = ((y * self.w + x) * 3) as usize;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }

    pub fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
        for k in 0..=n {
            let t = k as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            self.set(x.round() as i64, y.round() as i64, rgb);
            self.set(x.round() as i64, y.round() as i64 + 1, rgb);
        }
    }

    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, rgb: [u8; 3]) {
        for i in x..x + w {
            self.set(i, y, rgb);
            self.set(i, y + h - 1, rgb);
        }
        for j in y..y + h {
            self.set(x, j, rgb);
            self.set(x + w - 1, j, rgb);
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("png.tmp");
        let f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), self.w as u32, self.h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&self.px)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

pub struct Series {
    pub label: String,
    pub rgb: [u8; 3],
    pub points: Vec<(f64, f64)>,
}

pub const COLORS: [[u8; 3]; 4] = [[31, 119, 180], [214, 39, 40], [44, 160, 44], [148, 103, 189]];

/// A short number for axis labels.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 && a < 1e5 {
        format!("{v:.0}")
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Draw one chart in the box `[x, y, w, h]`: title, frame, y range and x range labels, series.
/// With `log_y`, values are plotted on a log10 scale (non-positive values are skipped).
pub fn chart(c: &mut Canvas, b: [i64; 4], title: &str, series: &[Series], log_y: bool) {
    chart_marked(c, b, title, series, &[], log_y);
}

/// [`chart`] with `markers`: points drawn as crosses (events on a curve: spikes, dips), in the
/// same axes, labelled in the legend.
pub fn chart_marked(
    c: &mut Canvas,
    [x, y, w, h]: [i64; 4],
    title: &str,
    series: &[Series],
    markers: &[Series],
    log_y: bool,
) {
    const S: i64 = 2;
    let black = [0, 0, 0];
    let grey = [120, 120, 120];
    draw_text(c, x + 8, y + 6, title, S, black);
    let (px, py, pw, ph) = (x + 70, y + 24, w - 84, h - 50);
    c.rect(px, py, pw, ph, grey);
    let tf = |v: f64| if log_y { v.log10() } else { v };
    // The points a chart can place: finite, and positive on a log scale.
    let visible = |p: &(f64, f64)| (!log_y || p.1 > 0.0) && p.1.is_finite();
    let pts: Vec<(f64, f64)> =
        series.iter().chain(markers).flat_map(|s| s.points.iter().copied()).filter(visible).collect();
    if pts.is_empty() {
        draw_text(c, px + 10, py + 10, "no data", S, grey);
        return;
    }
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(a, b) in &pts {
        x0 = x0.min(a);
        x1 = x1.max(a);
        y0 = y0.min(tf(b));
        y1 = y1.max(tf(b));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
        y0 -= 1.0;
    }
    let inv = |v: f64| if log_y { 10f64.powf(v) } else { v };
    for (k, v) in [(0, y1), (1, (y0 + y1) / 2.0), (2, y0)] {
        let label = fmt_num(inv(v));
        let yy = py + k * (ph - 10) / 2;
        draw_text(c, px - 6 - text_width(&label, S), yy, &label, S, black);
        c.line(((px - 4) as f64, (yy + 4) as f64), (px as f64, (yy + 4) as f64), grey);
    }
    for (k, v) in [(0, x0), (1, x1)] {
        let label = fmt_num(v);
        let xx = if k == 0 { px } else { px + pw - text_width(&label, S) };
        draw_text(c, xx, py + ph + 6, &label, S, black);
    }
    let map = |(a, b): (f64, f64)| {
        (
            px as f64 + 1.0 + (a - x0) / (x1 - x0) * (pw - 3) as f64,
            py as f64 + 1.0 + (y1 - tf(b)) / (y1 - y0) * (ph - 4) as f64,
        )
    };
    let mut lx = px + pw - 8;
    for m in markers.iter().rev() {
        for &p in m.points.iter().filter(|p| visible(p)) {
            let (a, b) = map(p);
            for d in -4..=4 {
                c.set(a as i64 + d, b as i64 + d, m.rgb);
                c.set(a as i64 + d, b as i64 - d, m.rgb);
            }
        }
        if !m.label.is_empty() {
            lx -= text_width(&m.label, S);
            draw_text(c, lx, y + 6, &m.label, S, m.rgb);
            lx -= 12;
        }
    }
    for s in series.iter().rev() {
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(visible).collect();
        for wdw in pts.windows(2) {
            c.line(map(wdw[0]), map(wdw[1]), s.rgb);
        }
        if pts.len() == 1 {
            let (a, b) = map(pts[0]);
            for d in -2..=2 {
                c.set(a as i64 + d, b as i64, s.rgb);
                c.set(a as i64, b as i64 + d, s.rgb);
            }
        }
        if series.len() > 1 {
            lx -= text_width(&s.label, S);
            draw_text(c, lx, y + 6, &s.label, S, s.rgb);
            lx -= 12;
        }
    }
}
