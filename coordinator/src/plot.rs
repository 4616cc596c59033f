//! Pictures of a scan: a filled contour plot with contour lines and a heatmap for 2-D
//! scans, a curve for 1-D scans, as PNG. Text uses a font embedded in the binary
//! (DejaVu Sans Mono, see `assets/DejaVu-LICENSE.txt`), so nothing is needed from the
//! machine.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Viridis, interpolated between nine anchors (matplotlib's values).
// 0.318 is a colour channel that happens to be close to 1/π.
#[allow(clippy::approx_constant)]
fn viridis(t: f64) -> RGBColor {
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
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Scale {
    fn new(v: &[f64]) -> Self {
        let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let lo = f.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log = lo > 0.0 && hi / lo > 100.0;
        Scale { lo, hi, log }
    }

    fn unit(&self, v: f64) -> f64 {
        let (a, b, x) = if self.log {
            (self.lo.ln(), self.hi.ln(), v.ln())
        } else {
            (self.lo, self.hi, v)
        };
        if b > a { (x - a) / (b - a) } else { 0.5 }
    }

    fn level(&self, t: f64) -> f64 {
        if self.log {
            (self.lo.ln() + t * (self.hi.ln() - self.lo.ln())).exp()
        } else {
            self.lo + t * (self.hi - self.lo)
        }
    }
}

/// Segments where the bilinear surface crosses `level` (marching squares).
fn contour_segments(z: &[f64], xs: &[f64], ys: &[f64], level: f64) -> Vec<[(f64, f64); 2]> {
    let nx = xs.len();
    let mut out = Vec::new();
    for i in 0..ys.len().saturating_sub(1) {
        for j in 0..nx.saturating_sub(1) {
            // Corners counter-clockwise from bottom-left.
            let c = [(j, i), (j + 1, i), (j + 1, i + 1), (j, i + 1)];
            let v: Vec<f64> = c.iter().map(|&(a, b)| z[b * nx + a]).collect();
            if v.iter().any(|x| !x.is_finite()) {
                continue;
            }
            let mut pts = Vec::new();
            for e in 0..4 {
                let (p, q) = (e, (e + 1) % 4);
                if (v[p] < level) != (v[q] < level) {
                    let t = (level - v[p]) / (v[q] - v[p]);
                    let (xa, ya) = (xs[c[p].0], ys[c[p].1]);
                    let (xb, yb) = (xs[c[q].0], ys[c[q].1]);
                    pts.push((xa + t * (xb - xa), ya + t * (yb - ya)));
                }
            }
            // Two crossings: one segment; four (a saddle): pair them by the centre value.
            match pts.len() {
                2 => out.push([pts[0], pts[1]]),
                4 => {
                    let centre = v.iter().sum::<f64>() / 4.0;
                    if (centre < level) == (v[0] < level) {
                        out.push([pts[0], pts[3]]);
                        out.push([pts[1], pts[2]]);
                    } else {
                        out.push([pts[0], pts[1]]);
                        out.push([pts[2], pts[3]]);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn cell_edges(v: &[f64]) -> Vec<f64> {
    // Cells centred on the grid values.
    let n = v.len();
    if n == 1 {
        return vec![v[0] - 0.5, v[0] + 0.5];
    }
    let mut e = vec![v[0] - (v[1] - v[0]) / 2.0];
    e.extend(v.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    e.push(v[n - 1] + (v[n - 1] - v[n - 2]) / 2.0);
    e
}

/// A training trajectory projected on the scan's plane, `(x, y)` per checkpoint.
pub type Trajectory = (Vec<f64>, Vec<f64>);

/// A 2-D picture of `z` (`[ny, nx]`); `levels` > 0 draws banded fills and contour lines.
fn draw_2d(
    path: &Path,
    title: &str,
    z: &[f64],
    xs: &[f64],
    ys: &[f64],
    levels: usize,
    trajectory: Option<&Trajectory>,
) -> Result<(), String> {
    register_font();
    let root = BitMapBackend::new(path, (760, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (plot, bar) = root.split_horizontally(660);
    let (xe, ye) = (cell_edges(xs), cell_edges(ys));
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(xe[0]..xe[xe.len() - 1], ye[0]..ye[ye.len() - 1])
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("α (x direction)")
        .y_desc("β (y direction)")
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| format!("{:.2}", v + 0.0))
        .y_label_formatter(&|v| format!("{:.2}", v + 0.0))
        .draw()
        .map_err(err)?;
    let scale = Scale::new(z);
    let band = |t: f64| {
        if levels > 0 {
            ((t * levels as f64).floor().min(levels as f64 - 1.0) + 0.5) / levels as f64
        } else {
            t
        }
    };
    let nx = xs.len();
    chart
        .draw_series((0..ys.len()).flat_map(|i| {
            let (xe, ye, scale) = (&xe, &ye, &scale);
            (0..nx).map(move |j| {
                let v = z[i * nx + j];
                let color = if v.is_finite() {
                    viridis(band(scale.unit(v)))
                } else {
                    RGBColor(200, 200, 200)
                };
                Rectangle::new([(xe[j], ye[i]), (xe[j + 1], ye[i + 1])], color.filled())
            })
        }))
        .map_err(err)?;
    if levels > 0 {
        for k in 1..levels {
            let level = scale.level(k as f64 / levels as f64);
            let segs = contour_segments(z, xs, ys, level);
            chart
                .draw_series(
                    segs.into_iter().map(|s| {
                        PathElement::new(vec![s[0], s[1]], BLACK.mix(0.6).stroke_width(1))
                    }),
                )
                .map_err(err)?;
        }
    }
    if let Some((tx, ty)) = trajectory {
        let pts: Vec<(f64, f64)> = tx.iter().copied().zip(ty.iter().copied()).collect();
        chart
            .draw_series(std::iter::once(PathElement::new(
                pts.clone(),
                WHITE.stroke_width(2),
            )))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, WHITE.filled())))
            .map_err(err)?;
    }
    // Mark the minimum.
    if let Some((k, _)) = z
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))
    {
        let p = (xs[k % nx], ys[k / nx]);
        chart
            .draw_series(std::iter::once(Cross::new(p, 6, RED.stroke_width(2))))
            .map_err(err)?;
    }
    // Colour bar.
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(44)
        .margin_bottom(48)
        .margin_right(8)
        .y_label_area_size(0)
        .right_y_label_area_size(62)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(err)?;
    let fmt = |t: &f64| format!("{:.3}", scale.level(*t));
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_style(("sans-serif", 12))
        .y_label_formatter(&fmt)
        .draw()
        .map_err(err)?;
    cb.draw_series((0..100).map(|i| {
        let t = i as f64 / 100.0;
        Rectangle::new(
            [(0.0, t), (1.0, t + 0.01)],
            viridis(band(t + 0.005)).filled(),
        )
    }))
    .map_err(err)?;
    root.present().map_err(err)
}

fn draw_1d(path: &Path, title: &str, loss: &[f64], acc: &[f64], xs: &[f64]) -> Result<(), String> {
    register_font();
    let root = BitMapBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let f: Vec<f64> = loss.iter().copied().filter(|v| v.is_finite()).collect();
    let hi = f.iter().copied().fold(f64::MIN, f64::max);
    let lo = f.iter().copied().fold(f64::MAX, f64::min).min(0.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .right_y_label_area_size(56)
        .build_cartesian_2d(xs[0]..xs[xs.len() - 1], lo..hi * 1.05)
        .map_err(err)?
        .set_secondary_coord(xs[0]..xs[xs.len() - 1], 0.0..1.0);
    chart
        .configure_mesh()
        .x_desc("α")
        .y_desc("loss")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("accuracy")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let pts = |v: &[f64]| -> Vec<(f64, f64)> {
        xs.iter()
            .copied()
            .zip(v.iter().copied())
            .filter(|p| p.1.is_finite())
            .collect()
    };
    chart
        .draw_series(LineSeries::new(pts(loss), BLUE.stroke_width(2)))
        .map_err(err)?
        .label("loss")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    if acc.iter().any(|v| v.is_finite()) {
        chart
            .draw_secondary_series(LineSeries::new(pts(acc), RED.stroke_width(2)))
            .map_err(err)?
            .label("accuracy")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// `surface3d.png`: the loss as a 3-D surface over the plane, coloured by height on the
/// same scale as the contour plot (logarithmic when the values span over two decades,
/// and then the height axis is too, as its label says).
fn draw_3d(path: &Path, title: &str, z: &[f64], xs: &[f64], ys: &[f64]) -> Result<(), String> {
    register_font();
    let scale = Scale::new(z);
    let nx = xs.len();
    let h = |v: f64| -> f64 {
        let v = if v.is_finite() { v } else { scale.hi };
        if scale.log {
            v.max(scale.lo).log10()
        } else {
            v
        }
    };
    let (lo, hi) = if scale.log {
        (scale.lo.log10(), scale.hi.log10())
    } else {
        (scale.lo, scale.hi)
    };
    let root = BitMapBackend::new(path, (800, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .build_cartesian_3d(
            xs[0]..xs[nx - 1],
            lo..hi + (hi - lo).max(1e-12) * 0.05,
            ys[0]..ys[ys.len() - 1],
        )
        .map_err(err)?;
    chart.with_projection(|mut p| {
        p.pitch = 0.45;
        p.yaw = 0.6;
        p.scale = 0.85;
        p.into_matrix()
    });
    chart
        .configure_axes()
        .label_style(("sans-serif", 12))
        .max_light_lines(3)
        .draw()
        .map_err(err)?;
    let at = |x: f64, y: f64| -> f64 {
        let i = xs.iter().position(|v| *v == x).unwrap_or(0);
        let j = ys.iter().position(|v| *v == y).unwrap_or(0);
        h(z[j * nx + i])
    };
    let colour = |v: &f64| {
        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
        viridis(t).mix(0.9).filled()
    };
    chart
        .draw_series(
            SurfaceSeries::xoz(xs.iter().copied(), ys.iter().copied(), at).style_func(&colour),
        )
        .map_err(err)?;
    // Axis names: plotters' 3-D axes carry no labels of their own.
    let label = if scale.log {
        "height: log10(loss)"
    } else {
        "height: loss"
    };
    root.draw(&Text::new(
        format!("x: first direction, y: second direction, {label}"),
        (16, 612),
        ("sans-serif", 13),
    ))
    .map_err(err)?;
    root.present().map_err(err)
}

/// `intrinsic.png`: validation accuracy against the subspace dimension (log axis), the
/// full model's accuracy and 90 % of it as lines, `d_int90` marked.
pub fn intrinsic(path: &Path, name: &str, j: &serde_json::Value) -> Result<(), String> {
    register_font();
    let curve = j["curve"].as_array().ok_or("no curve")?;
    let metric = j["metric"].as_str().unwrap_or("value");
    let pts: Vec<(f64, f64)> = curve
        .iter()
        .filter_map(|p| Some((p["d"].as_f64()?, p[metric].as_f64()?)))
        .collect();
    if pts.is_empty() {
        return Err("no subspace trial completed".into());
    }
    let full = j["full_model"].as_f64().unwrap_or(f64::NAN);
    let threshold = j["threshold"].as_f64().unwrap_or(0.9);
    let (x0, x1) = ((pts[0].0 / 1.5).max(1.0), pts[pts.len() - 1].0 * 1.5);
    let lo = pts
        .iter()
        .map(|p| p.1)
        .fold(full, f64::min)
        .min(threshold * full);
    let root = BitMapBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{name}: accuracy in random subspaces (intrinsic dimension)"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x0..x1).log_scale(),
            (lo - 0.05).max(0.0)..(full + 0.03).min(1.02),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("subspace dimension d (log scale)")
        .y_desc(metric)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2)))
        .map_err(err)?
        .label("best trial per d")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .map_err(err)?;
    for (v, colour, label) in [
        (full, BLACK, "full model".to_string()),
        (
            threshold * full,
            RED,
            format!("{:.0} % of full", threshold * 100.0),
        ),
    ] {
        chart
            .draw_series(LineSeries::new(
                vec![(x0, v), (x1, v)],
                colour.stroke_width(1),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
    }
    if let Some(d) = j["d_int"].as_f64() {
        let v = pts.iter().find(|p| p.0 == d).map_or(full, |p| p.1);
        chart
            .draw_series(std::iter::once(Circle::new((d, v), 8, RED.stroke_width(2))))
            .map_err(err)?
            .label(format!("d_int = {d:.0}"))
            .legend(|(x, y)| Circle::new((x + 8, y), 5, RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// A map of any quantity over the plane (filled contours with lines), e.g. curvature.
pub fn map(path: &Path, title: &str, z: &[f64], xs: &[f64], ys: &[f64]) -> Result<(), String> {
    draw_2d(path, title, z, xs, ys, 12, None)
}

/// `connectivity.png`: loss (left axis) and error (right axis) along the trained curve (solid)
/// and the straight line (dashed) between two checkpoints, t on [0, 1].
pub fn connectivity(
    path: &Path,
    title: &str,
    t: &[f64],
    loss: [&[f64]; 2],
    error: [&[f64]; 2],
) -> Result<(), String> {
    register_font();
    let fin = |v: &[f64]| {
        v.iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(0.0, f64::max)
    };
    let hi = fin(loss[0]).max(fin(loss[1])) * 1.08;
    let ehi = (fin(error[0]).max(fin(error[1])) * 1.08).max(0.01);
    let root = BitMapBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..1.0, 0.0..hi)
        .map_err(err)?
        .set_secondary_coord(0.0..1.0, 0.0..ehi);
    chart
        .configure_mesh()
        .x_desc("t (0: scanned checkpoint, 1: directions.to)")
        .y_desc("loss")
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("error (1 − accuracy)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let pts = |v: &[f64]| -> Vec<(f64, f64)> {
        t.iter()
            .copied()
            .zip(v.iter().copied())
            .filter(|p| p.1.is_finite())
            .collect()
    };
    for (k, (name, colour)) in [("curve", BLUE), ("line", RED)].into_iter().enumerate() {
        let style = colour.stroke_width(2);
        if k == 0 {
            chart
                .draw_series(LineSeries::new(pts(loss[k]), style))
                .map_err(err)?
                .label(format!("loss, {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        } else {
            chart
                .draw_series(DashedLineSeries::new(pts(loss[k]), 6, 4, style))
                .map_err(err)?
                .label(format!("loss, {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
        chart
            .draw_secondary_series(LineSeries::new(
                pts(error[k]),
                colour.mix(0.45).stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("error, {name}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.mix(0.45)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Writes `contour.png` (with the projected training trajectory, for PCA scans),
/// `heatmap.png` and `surface3d.png` for 2-D scans, or `curve.png` for 1-D scans, into
/// `dir`.
pub fn plots(
    dir: &Path,
    name: &str,
    loss: &[f64],
    acc: &[f64],
    xs: &[f64],
    ys: Option<&[f64]>,
    trajectory: Option<&Trajectory>,
) -> Result<(), String> {
    match ys {
        Some(ys) => {
            draw_2d(
                &dir.join("contour.png"),
                &format!("{name}: loss"),
                loss,
                xs,
                ys,
                16,
                trajectory,
            )?;
            draw_2d(
                &dir.join("heatmap.png"),
                &format!("{name}: loss"),
                loss,
                xs,
                ys,
                0,
                None,
            )?;
            draw_3d(
                &dir.join("surface3d.png"),
                &format!("{name}: loss"),
                loss,
                xs,
                ys,
            )
        }
        None => draw_1d(
            &dir.join("curve.png"),
            &format!("{name}: loss along x"),
            loss,
            acc,
            xs,
        ),
    }
}

/// `esd.png`: the Hessian's eigenvalue density on a log axis (PyHessian's picture),
/// floored at 1e-10 of its peak so that the gaps between outliers stay visible.
pub fn esd(path: &Path, title: &str, grid: &[f64], density: &[f64]) -> Result<(), String> {
    register_font();
    if grid.len() < 2 {
        return Err("no density to draw".into());
    }
    let peak = density
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let floor = peak * 1e-10;
    let root = BitMapBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            grid[0]..grid[grid.len() - 1],
            (floor..peak * 2.0).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("eigenvalue")
        .y_desc("density (log scale)")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            grid.iter().zip(density).map(|(x, d)| (*x, d.max(floor))),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn pictures_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let xs: Vec<f64> = (0..11).map(|i| i as f64 / 10.0).collect();
        let ys: Vec<f64> = (0..7).map(|i| i as f64 / 6.0).collect();
        let z: Vec<f64> = ys
            .iter()
            .flat_map(|y| xs.iter().map(move |x| 1.0 + x * x + 3.0 * y * y))
            .collect();
        let path = (vec![0.1, 0.3, 0.5], vec![0.9, 0.5, 0.2]);
        plots(dir.path(), "t", &z, &z, &xs, Some(&ys), Some(&path)).unwrap();
        plots(dir.path(), "t", &z[..11], &z[..11], &xs, None, None).unwrap();
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
