//! Pictures of a scan: a filled contour plot with contour lines and a heatmap for 2-D
//! scans, a curve for 1-D scans, as PNG. Text uses a font embedded in the binary
//! (DejaVu Sans Mono, see `assets/DejaVu-LICENSE.txt`), so nothing is needed from the
//! machine.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

/// Draws a picture of `size` pixels in memory with `draw`, encodes it as PNG and writes
/// it through [`crate::fsafe`] (plotters' own file output would follow a link planted
/// at `path`).
pub(crate) fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), String> {
    use image::ImageEncoder;
    let mut buf = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        draw(root.clone())?;
        root.present().map_err(err)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&buf, size.0, size.1, image::ColorType::Rgb8)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    crate::fsafe::write_atomic(path, &png).map_err(|e| e.to_string())
}

mod curve;
mod lineage;
mod pareto;
mod spectra;
mod surface;

pub use curve::connectivity;
use curve::draw_1d;
pub use lineage::{LineageTrial, lineage};
pub use pareto::{ParetoPoint, pareto};
pub use spectra::{esd, intrinsic};
pub use surface::map;
use surface::{draw_2d, draw_3d};

/// DejaVu Sans (Debian's fonts-dejavu-core; licence in assets/DejaVu-LICENSE.txt): a
/// proportional font, so that "-0.2" reads as one number (a monospaced font gives the
/// point and the minus sign a full cell each); plotters lays it out with its advances
/// and kerning pairs. It has the Greek letters the axes use (α, β, λ).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

pub(super) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Viridis, interpolated between nine anchors (matplotlib's values).
// 0.318 is a colour channel that happens to be close to 1/π.
#[allow(clippy::approx_constant)]
pub(super) fn viridis(t: f64) -> RGBColor {
    const A: [(f64, f64, f64); 9] = [
        (0.267, 0.005, 0.329),
        (0.283, 0.141, 0.458),
        (0.254, 0.265, 0.530),
        (0.207, 0.372, 0.553),
        (0.164, 0.471, 0.558),
        (0.128, 0.567, 0.551),
        (0.135, 0.659, 0.518),
        (0.478, 0.821, 0.318),
        (0.993, 0.906, 0.144),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let x = t * (A.len() - 1) as f64;
    let i = (x.floor() as usize).min(A.len() - 2);
    let f = x - i as f64;
    let c = |a: f64, b: f64| ((a + (b - a) * f) * 255.0).round() as u8;
    RGBColor(
        c(A[i].0, A[i + 1].0),
        c(A[i].1, A[i + 1].1),
        c(A[i].2, A[i + 1].2),
    )
}

/// Maps loss values to [0, 1]: logarithmically when they span more than two decades.
pub(super) struct Scale {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) log: bool,
}

impl Scale {
    pub(super) fn new(v: &[f64]) -> Self {
        let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let lo = f.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log = lo > 0.0 && hi / lo > 100.0;
        Scale { lo, hi, log }
    }

    pub(super) fn unit(&self, v: f64) -> f64 {
        let (a, b, x) = if self.log {
            (self.lo.ln(), self.hi.ln(), v.ln())
        } else {
            (self.lo, self.hi, v)
        };
        if b > a { (x - a) / (b - a) } else { 0.5 }
    }

    pub(super) fn level(&self, t: f64) -> f64 {
        if self.log {
            (self.lo.ln() + t * (self.hi.ln() - self.lo.ln())).exp()
        } else {
            self.lo + t * (self.hi - self.lo)
        }
    }
}

pub(super) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A training trajectory projected on the scan's plane, `(x, y)` per checkpoint.
pub type Trajectory = (Vec<f64>, Vec<f64>);

/// What a picture says about itself: a title (the scan, then the model, data and
/// directions), the axes' names and the plotted quantity's.
#[derive(Clone, Debug)]
pub struct Labels {
    /// First line: the scan and the quantity.
    pub title: String,
    /// Second line: model, data, directions.
    pub subtitle: String,
    /// The x axis, e.g. `PC1 (86.6 %)`.
    pub x: String,
    /// The y axis.
    pub y: String,
    /// The plotted quantity, e.g. `loss`.
    pub value: String,
}

impl Labels {
    /// Labels for a quick picture: the title alone, generic axes.
    pub fn simple(title: &str, value: &str) -> Self {
        Labels {
            title: title.into(),
            subtitle: String::new(),
            x: "α (x direction)".into(),
            y: "β (y direction)".into(),
            value: value.into(),
        }
    }

    /// Draws the two title lines on top of `area`, returning what is left below them.
    fn header<'a>(
        &self,
        area: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    ) -> Result<DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>, String> {
        let (w, _) = area.dim_in_pixel();
        let centre = |y: i32, text: &str, size: u32| {
            let style = TextStyle::from(("sans-serif", size).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            );
            area.draw(&Text::new(text.to_string(), (w as i32 / 2, y), style))
        };
        centre(6, &self.title, 17).map_err(err)?;
        let top = if self.subtitle.is_empty() {
            30
        } else {
            centre(28, &self.subtitle, 12).map_err(err)?;
            46
        };
        Ok(area.split_vertically(top).1)
    }
}

/// An interpolation's barrier, marked on its 1-D picture.
#[derive(Clone, Copy, Debug)]
pub struct Barrier {
    /// Where the loss rises highest above the chord.
    pub alpha: f64,
    /// How far.
    pub value: f64,
}

/// A tick label with at most three decimals, trailing zeros dropped, and never `-0`.
pub(super) fn tick(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0 + 0.0;
    let s = format!("{r:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// A value with three significant digits (colour bars on a log scale span decades).
pub(super) fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-3..5).contains(&mag) {
        return format!("{v:.2e}");
    }
    format!("{:.*}", (2 - mag).max(0) as usize, v)
}

/// Writes `contour.png` (filled contours with labelled lines, the minimum, the scanned
/// checkpoint and, for PCA scans, the projected training trajectory), `heatmap.png` and
/// `surface3d.png` for 2-D scans, or `curve.png` for 1-D scans (with both checkpoints
/// and the barrier for interpolations), into `dir`.
#[allow(clippy::too_many_arguments)]
pub fn plots(
    dir: &Path,
    labels: &Labels,
    loss: &[f64],
    acc: &[f64],
    second: Option<(&[f64], &[f64])>,
    xs: &[f64],
    ys: Option<&[f64]>,
    trajectory: Option<&Trajectory>,
    barrier: Option<Barrier>,
) -> Result<(), String> {
    match ys {
        Some(ys) => {
            draw_2d(
                &dir.join("contour.png"),
                labels,
                loss,
                xs,
                ys,
                16,
                trajectory,
            )?;
            draw_2d(&dir.join("heatmap.png"), labels, loss, xs, ys, 0, None)?;
            draw_3d(&dir.join("surface3d.png"), labels, loss, xs, ys)
        }
        None => draw_1d(
            &dir.join("curve.png"),
            labels,
            loss,
            acc,
            second,
            xs,
            barrier,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::surface::contour_segments;
    use super::*;

    #[test]
    fn ticks_are_clean() {
        assert_eq!(tick(-0.0001), "0");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(-1.0), "-1");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(significant(0.012345), "0.0123");
        assert_eq!(significant(123.456), "123");
        assert_eq!(significant(2.5e-6), "2.50e-6");
    }

    /// Contours of a cone z = sqrt(x² + y²) at level r lie on the circle of radius r.
    #[test]
    fn contour_points_lie_on_the_level_set() {
        let xs: Vec<f64> = (0..41).map(|i| -1.0 + i as f64 / 20.0).collect();
        let z: Vec<f64> = xs
            .iter()
            .flat_map(|y| xs.iter().map(move |x| (x * x + y * y).sqrt()))
            .collect();
        let segs = contour_segments(&z, &xs, &xs, 0.5);
        assert!(segs.len() > 40, "{} segments", segs.len());
        for s in &segs {
            for (x, y) in s {
                // Linear interpolation of a cone is exact along grid lines to O(h²).
                assert!(((x * x + y * y).sqrt() - 0.5).abs() < 0.01, "({x}, {y})");
            }
        }
    }

    /// The columns of a picture with dark ink in them.
    fn ink_columns(buf: &[u8], w: u32, h: u32) -> Vec<bool> {
        (0..w)
            .map(|x| (0..h).any(|y| buf[((y * w + x) * 3) as usize] < 128))
            .collect()
    }

    /// Tick labels read as numbers: no glyph of "-0.25" sits a cell apart from the next
    /// (the monospaced font gave "- 0. 25").
    #[test]
    fn tick_labels_are_set_as_words() {
        register_font();
        let (w, h) = (120u32, 30u32);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.draw(&Text::new("-0.25", (2, 5), ("sans-serif", 13).into_font()))
                .unwrap();
            root.present().unwrap();
        }
        let ink = ink_columns(&buf, w, h);
        let first = ink.iter().position(|b| *b).unwrap();
        let last = ink.iter().rposition(|b| *b).unwrap();
        let (mut gap, mut run) = (0, 0);
        for &b in &ink[first..=last] {
            run = if b { 0 } else { run + 1 };
            gap = gap.max(run);
        }
        // DejaVu Sans at 13 px: at most 3 blank columns between glyphs (after the
        // point), 27 px in all; DejaVu Sans Mono left 4 after the minus sign and 6 after
        // the point, 34 px in all.
        assert!(gap <= 3, "a gap of {gap} px inside \"-0.25\"");
        assert!(last - first <= 30, "\"-0.25\" is {} px wide", last - first);
    }

    /// The 3-D surface has a colour bar with both ends of the colour map, and its axes'
    /// titles are drawn (ink outside the header, left of the bar, below the surface).
    #[test]
    fn the_3d_surface_has_a_colour_bar_and_axis_titles() {
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let xs: Vec<f64> = (0..9).map(|i| -1.0 + i as f64 / 4.0).collect();
        let z: Vec<f64> = xs
            .iter()
            .flat_map(|y| xs.iter().map(move |x| 0.5 + x * x + y * y))
            .collect();
        let mut labels = Labels::simple("t", "loss (nats)");
        labels.x = "XXXXXXXXXXXX".into();
        let p = dir.path().join("s.png");
        super::surface::draw_3d(&p, &labels, &z, &xs, &xs).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        let near = |c: RGBColor, px: &image::Rgb<u8>| {
            (0..3).all(|k| (i32::from(px.0[k]) - i32::from([c.0, c.1, c.2][k])).abs() < 12)
        };
        let bar = |c: RGBColor| {
            (680..800)
                .flat_map(|x| (40..680).map(move |y| (x, y)))
                .filter(|&(x, y)| near(c, img.get_pixel(x, y)))
                .count()
        };
        assert!(bar(viridis(0.0)) > 100, "no dark end in the colour bar");
        assert!(bar(viridis(1.0)) > 100, "no bright end in the colour bar");
        // Without axis titles, only tick labels are drawn below the surface's front
        // corner; the x title adds a line of ink there.
        let dark = (0..680)
            .flat_map(|x| (640..680).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100)
            .count();
        assert!(dark > 150, "{dark} dark pixels where the axis titles go");
    }

    #[test]
    fn pictures_are_written() {
        let dir = tempfile::tempdir().unwrap();
        crate::fsafe::add_root(dir.path()).unwrap();
        let xs: Vec<f64> = (0..11).map(|i| i as f64 / 10.0).collect();
        let ys: Vec<f64> = (0..7).map(|i| i as f64 / 6.0).collect();
        let z: Vec<f64> = ys
            .iter()
            .flat_map(|y| xs.iter().map(move |x| 1.0 + x * x + 3.0 * y * y))
            .collect();
        let path = (vec![0.1, 0.3, 0.5], vec![0.9, 0.5, 0.2]);
        let labels = Labels::simple("t", "loss");
        plots(
            dir.path(),
            &labels,
            &z,
            &z,
            None,
            &xs,
            Some(&ys),
            Some(&path),
            None,
        )
        .unwrap();
        let b = Barrier {
            alpha: 0.5,
            value: 0.1,
        };
        plots(
            dir.path(),
            &labels,
            &z[..11],
            &z[..11],
            Some((&z[11..22], &z[11..22])),
            &xs,
            None,
            None,
            Some(b),
        )
        .unwrap();
        let grid: Vec<f64> = (0..200).map(|i| -1.0 + i as f64 / 50.0).collect();
        let rho: Vec<f64> = grid.iter().map(|x| (-x * x * 20.0).exp()).collect();
        esd(&dir.path().join("esd.png"), "t", &grid, &rho).unwrap();
        for f in [
            "contour.png",
            "heatmap.png",
            "curve.png",
            "esd.png",
            "surface3d.png",
        ] {
            let b = std::fs::read(dir.path().join(f)).unwrap();
            assert_eq!(&b[1..4], b"PNG", "{f}");
            assert!(b.len() > 5_000, "{f} is {} bytes", b.len());
        }
    }
}
