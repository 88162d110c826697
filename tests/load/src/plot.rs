//! A latency-distribution chart drawn by hand into a PNG: percentile on a
//! "nines" axis (50 %, 90 %, 99 %, 99.9 % …), latency on a log axis. A tiny
//! built-in 5×7 font keeps it free of system fonts.

use std::path::Path;

/// One curve: a name and `(percentile, ms)` points.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, percentile ascending.
    pub points: Vec<(f64, f64)>,
}

/// RGB pixels.
pub struct Canvas {
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
    /// `w * h * 3` bytes.
    pub px: Vec<u8>,
}

const COLORS: &[[u8; 3]] = &[
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
];

/// Where a percentile sits on the nines axis: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3 …
pub fn nines(pct: f64) -> f64 {
    let tail = (1.0 - pct / 100.0).max(1e-5);
    -tail.log10()
}

impl Canvas {
    /// A white canvas.
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    /// Colour of one pixel.
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.w + x) * 3;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.put(x, y, c);
            }
        }
    }

    /// A line `width` pixels thick.
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), width: i64, c: [u8; 3]) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            let r = width / 2;
            self.rect(x as i64 - r, y as i64 - r, x as i64 + r, y as i64 + r, c);
        }
    }

    /// Text in the built-in font (upper-cased), `scale` pixels per font dot.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch.to_ascii_uppercase());
            let gx = x + i as i64 * 6 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (gx + col * scale, y + r as i64 * scale);
                        self.rect(px, py, px + scale - 1, py + scale - 1, c);
                    }
                }
            }
        }
    }

    /// Encodes as PNG.
    pub fn png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.w as u32, self.h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().expect("in-memory PNG header");
            w.write_image_data(&self.px).expect("in-memory PNG data");
        }
        out
    }
}

fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 6 * scale
}

/// Draws the chart; latency axis spans the data (log scale, decades).
pub fn chart(title: &str, series: &[Series]) -> Canvas {
    let (w, h) = (960usize, 560usize);
    let mut c = Canvas::new(w, h);
    let (left, right, top, bottom) = (90.0, w as f64 - 60.0, 60.0, h as f64 - 70.0);
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = all.iter().cloned().fold(0.0, f64::max);
    let (dlo, dhi) = if all.is_empty() {
        (-1, 3)
    } else {
        (
            lo.log10().floor() as i32,
            (hi.log10().ceil() as i32).max(lo.log10().floor() as i32 + 1),
        )
    };
    let xmax = 5.0;
    let px = |pct: f64| left + (right - left) * nines(pct).min(xmax) / xmax;
    let py = |ms: f64| {
        let v = ms.max(10f64.powi(dlo)).log10();
        bottom - (bottom - top) * (v - dlo as f64) / (dhi - dlo) as f64
    };
    let grid = [225, 225, 225];
    let ink = [40, 40, 40];
    for (n, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = left + (right - left) * n as f64 / xmax;
        c.line((x, top), (x, bottom), 1, grid);
        c.text(
            x as i64 - text_width(label, 2) / 2,
            bottom as i64 + 12,
            label,
            2,
            ink,
        );
    }
    for d in dlo..=dhi {
        let y = py(10f64.powi(d));
        c.line((left, y), (right, y), 1, grid);
        let label = if d >= 0 {
            format!("{}", 10u64.pow(d as u32))
        } else {
            format!("{}", 10f64.powi(d))
        };
        c.text(
            left as i64 - 10 - text_width(&label, 2),
            y as i64 - 7,
            &label,
            2,
            ink,
        );
    }
    c.line((left, top), (left, bottom), 2, ink);
    c.line((left, bottom), (right, bottom), 2, ink);
    c.text(left as i64, 8, title, 2, ink);
    c.text(left as i64 + 300, h as i64 - 28, "percentile", 2, ink);
    c.text(8, top as i64 - 22, "ms (log)", 2, ink);
    for (i, s) in series.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(p, _)| nines(*p) <= xmax)
            .map(|(p, ms)| (px(*p), py(*ms)))
            .collect();
        for seg in pts.windows(2) {
            c.line(seg[0], seg[1], 3, col);
        }
        let ly = top as i64 + 10 + i as i64 * 22;
        c.rect(left as i64 + 20, ly + 4, left as i64 + 44, ly + 8, col);
        c.text(left as i64 + 52, ly, &s.name, 2, ink);
    }
    c
}

/// Draws and writes the chart.
pub fn write(path: &Path, title: &str, series: &[Series]) -> std::io::Result<()> {
    std::fs::write(path, chart(title, series).png())
}

/// 5×7 glyphs (rows top to bottom, bit 4 = leftmost column); unknown characters are blank.
fn glyph(ch: char) -> [u8; 7] {
    match ch {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' | '×' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert!(
            (nines(100.0) - 5.0).abs() < 1e-9,
            "100 % is clamped to 99.999 %"
        );
    }

    #[test]
    fn chart_is_a_png_with_every_series_drawn() {
        let s = vec![
            Series {
                name: "pushgate".into(),
                points: vec![(0.0, 0.5), (50.0, 1.0), (99.0, 3.0), (100.0, 9.0)],
            },
            Series {
                name: "nchan".into(),
                points: vec![(0.0, 2.0), (50.0, 8.0), (99.0, 30.0), (100.0, 90.0)],
            },
        ];
        let c = chart("fanout latency", &s);
        for col in &COLORS[..2] {
            let n = (0..c.h)
                .flat_map(|y| (0..c.w).map(move |x| (x, y)))
                .filter(|(x, y)| c.get(*x, *y) == *col)
                .count();
            assert!(n > 500, "series colour {col:?} covers {n} pixels");
        }
        let png = c.png();
        let dec = png::Decoder::new(std::io::Cursor::new(&png));
        let reader = dec.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (960, 560));
    }
}
