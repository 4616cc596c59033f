//! Pictures of a quantity over the plane: filled contours with lines, heatmaps, 3-D surfaces.

use std::path::Path;

use plotters::prelude::*;

use super::*;

/// Segments where the bilinear surface crosses `level` (marching squares).
pub(super) fn contour_segments(
    z: &[f64],
    xs: &[f64],
    ys: &[f64],
    level: f64,
) -> Vec<[(f64, f64); 2]> {
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

pub(super) fn cell_edges(v: &[f64]) -> Vec<f64> {
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

/// A 2-D picture of `z` (`[ny, nx]`); `levels` > 0 draws banded fills and contour lines
/// labelled with their values. The colour bar has the quantity's name as its title and
/// says when it is logarithmic; the minimum, the scanned checkpoint (0, 0) and the
/// trajectory are in the legend.
pub(super) fn draw_2d(
    path: &Path,
    labels: &Labels,
    z: &[f64],
    xs: &[f64],
    ys: &[f64],
    levels: usize,
    trajectory: Option<&Trajectory>,
) -> Result<(), String> {
    register_font();
    super::render_png(path, (800, 700), |root| {
        root.fill(&WHITE).map_err(err)?;
        let body = labels.header(&root)?;
        let (plot, bar) = body.split_horizontally(680);
        let (xe, ye) = (cell_edges(xs), cell_edges(ys));
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(xe[0]..xe[xe.len() - 1], ye[0]..ye[ye.len() - 1])
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(labels.x.as_str())
            .y_desc(labels.y.as_str())
            .label_style(("sans-serif", 13))
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
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
        // Filled contours are drawn on a raster FINE times finer than the grid, each
        // sub-cell coloured by the bilinear interpolation of the grid at its centre, so
        // that bands follow the contour lines instead of the grid's cells; a heatmap
        // (no levels) shows the cells as computed.
        let fine = if levels > 0 { FINE } else { 1 };
        let sub = |e: &[f64], k: usize| {
            let (c, r) = (k / fine, k % fine);
            if r == 0 {
                e[c]
            } else {
                e[c] + (e[c + 1] - e[c]) * r as f64 / fine as f64
            }
        };
        chart
            .draw_series((0..ys.len() * fine).flat_map(|i| {
                let (xe, ye, scale, sub) = (&xe, &ye, &scale, &sub);
                (0..nx * fine).map(move |j| {
                    let (x0, x1) = (sub(xe, j), sub(xe, j + 1));
                    let (y0, y1) = (sub(ye, i), sub(ye, i + 1));
                    let v = if fine == 1 {
                        z[i * nx + j]
                    } else {
                        bilinear(z, xs, ys, (x0 + x1) / 2.0, (y0 + y1) / 2.0)
                    };
                    let color = if v.is_finite() {
                        viridis(band(scale.unit(v)))
                    } else {
                        RGBColor(200, 200, 200)
                    };
                    Rectangle::new([(x0, y0), (x1, y1)], color.filled())
                })
            }))
            .map_err(err)?;
        for k in 1..levels {
            let level = scale.level(k as f64 / levels as f64);
            let segs = contour_segments(z, xs, ys, level);
            // Every other line carries its value, at the middle of its longest segment.
            let label_at = segs
                .iter()
                .max_by(|a, b| seg_len(a).total_cmp(&seg_len(b)))
                .map(|s| ((s[0].0 + s[1].0) / 2.0, (s[0].1 + s[1].1) / 2.0));
            chart
                .draw_series(
                    segs.into_iter().map(|s| {
                        PathElement::new(vec![s[0], s[1]], BLACK.mix(0.6).stroke_width(1))
                    }),
                )
                .map_err(err)?;
            if let (Some(p), true) = (label_at, k % 2 == 0) {
                chart
                    .draw_series(std::iter::once(Text::new(
                        significant(level),
                        p,
                        ("sans-serif", 11).into_font().color(&WHITE),
                    )))
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
                .map_err(err)?
                .label("training trajectory (one dot per epoch)")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], WHITE.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, WHITE.filled())))
                .map_err(err)?;
        }
        if xe[0] <= 0.0 && 0.0 <= xe[xe.len() - 1] && ye[0] <= 0.0 && 0.0 <= ye[ye.len() - 1] {
            chart
                .draw_series(std::iter::once(Circle::new(
                    (0.0, 0.0),
                    5,
                    WHITE.stroke_width(2),
                )))
                .map_err(err)?
                .label("scanned checkpoint (0, 0)")
                .legend(|(x, y)| Circle::new((x + 8, y), 4, WHITE.stroke_width(2)));
        }
        if let Some((k, v)) = z
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))
        {
            let p = (xs[k % nx], ys[k / nx]);
            chart
                .draw_series(std::iter::once(Cross::new(p, 6, RED.stroke_width(2))))
                .map_err(err)?
                .label(format!(
                    "lowest {}: {} at ({}, {})",
                    labels.value,
                    significant(*v),
                    tick(p.0),
                    tick(p.1)
                ))
                .legend(|(x, y)| Cross::new((x + 8, y), 5, RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 12))
            .background_style(BLACK.mix(0.55))
            .border_style(WHITE)
            .draw()
            .map_err(err)?;
        colour_bar(&bar, &scale, &band, &labels.value)?;
        Ok(())
    })
}

/// Sub-cells per grid cell (each way) in filled contour plots.
const FINE: usize = 6;

/// The grid `z` (`[ny, nx]`, at `xs` x `ys`) at `(x, y)`, interpolated bilinearly
/// between its four nearest points (clamped at the edges); NaN if any of them is.
fn bilinear(z: &[f64], xs: &[f64], ys: &[f64], x: f64, y: f64) -> f64 {
    // The index of the cell holding `v` and where in it `v` lies.
    let locate = |a: &[f64], v: f64| -> (usize, f64) {
        if a.len() < 2 {
            return (0, 0.0);
        }
        let i = a.partition_point(|p| *p <= v).clamp(1, a.len() - 1) - 1;
        (i, ((v - a[i]) / (a[i + 1] - a[i])).clamp(0.0, 1.0))
    };
    let (nx, ny) = (xs.len(), ys.len());
    let ((i, tx), (j, ty)) = (locate(xs, x), locate(ys, y));
    let (i1, j1) = ((i + 1).min(nx - 1), (j + 1).min(ny - 1));
    let at = |r: usize, c: usize| z[r * nx + c];
    let top = at(j, i) * (1.0 - tx) + at(j, i1) * tx;
    let bottom = at(j1, i) * (1.0 - tx) + at(j1, i1) * tx;
    top * (1.0 - ty) + bottom * ty
}

/// Splits a colour bar's title into lines that fit its 120-pixel column.
fn wrap(title: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in title.split(' ') {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// The colour bar beside a plot: titled with the quantity (wrapped to fit, and saying
/// when the scale is logarithmic), ticks with three significant digits.
fn colour_bar<'a>(
    bar: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    scale: &Scale,
    band: &dyn Fn(f64) -> f64,
    value: &str,
) -> Result<(), String> {
    let mut lines = wrap(value, 16);
    if scale.log {
        lines.push("(log scale)".into());
    }
    for (k, line) in lines.iter().enumerate() {
        bar.draw(&Text::new(
            line.clone(),
            (4, 2 + 15 * k as i32),
            ("sans-serif", 13).into_font(),
        ))
        .map_err(err)?;
    }
    let mut cb = ChartBuilder::on(bar)
        .margin_top(10 + 15 * lines.len() as u32)
        .margin_bottom(52)
        .margin_right(8)
        .y_label_area_size(0)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(err)?;
    let fmt = |t: &f64| significant(scale.level(*t));
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
    Ok(())
}

fn seg_len(s: &[(f64, f64); 2]) -> f64 {
    (s[1].0 - s[0].0).hypot(s[1].1 - s[0].1)
}

/// `surface3d.png`: the loss as a 3-D surface over the plane, coloured by height on the
/// same scale as the contour plot (logarithmic when the values span over two decades,
/// and then the height axis is too, as its label says).
pub(super) fn draw_3d(
    path: &Path,
    labels: &Labels,
    z: &[f64],
    xs: &[f64],
    ys: &[f64],
) -> Result<(), String> {
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
    super::render_png(path, (800, 680), |root| {
        root.fill(&WHITE).map_err(err)?;
        let body = labels.header(&root)?;
        let (body, bar) = body.split_horizontally(680);
        let mut chart = ChartBuilder::on(&body)
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
            .x_formatter(&|v| tick(*v))
            .z_formatter(&|v| tick(*v))
            .y_formatter(&|v| tick(*v))
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
        // Axis titles where each axis is drawn (plotters' 3-D axes carry none): under
        // the middle of the front x edge, beside the middle of the right edge, and over
        // the height axis. The heights are the colours of the bar.
        let area = chart.plotting_area();
        let centred = |size: u32| {
            TextStyle::from(("sans-serif", size).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ),
            )
        };
        let (mx, my) = ((xs[0] + xs[nx - 1]) / 2.0, (ys[0] + ys[ys.len() - 1]) / 2.0);
        let height = if scale.log {
            format!("log10({})", labels.value)
        } else {
            labels.value.clone()
        };
        // The front corner is (last x, lowest, last y): the x edge runs to it from the
        // left, the y edge from the right, and the height axis stands at the left.
        let (xl, yl) = (xs[nx - 1], ys[ys.len() - 1]);
        for (p, text, (dx, dy)) in [
            ((mx, lo, yl), labels.x.as_str(), (-50, 38)),
            ((xl, lo, my), labels.y.as_str(), (50, 38)),
            ((xs[0], hi, yl), height.as_str(), (20, -16)),
        ] {
            let (px, py) = area.map_coordinate(&p);
            root.draw(&Text::new(
                text.to_string(),
                (px + dx, py + dy),
                centred(13),
            ))
            .map_err(err)?;
        }
        colour_bar(&bar, &scale, &|t| t, &labels.value)?;
        Ok(())
    })
}

/// A map of any quantity over the plane (filled contours with lines), e.g. curvature.
pub fn map(path: &Path, labels: &Labels, z: &[f64], xs: &[f64], ys: &[f64]) -> Result<(), String> {
    draw_2d(path, labels, z, xs, ys, 12, None)
}

#[cfg(test)]
mod tests {
    /// A bilinear function is reproduced exactly between grid points, and clamped to
    /// the grid's edge outside it; a NaN corner makes its cells NaN.
    #[test]
    fn bilinear_interpolation_is_exact_for_bilinear_functions() {
        let f = |x: f64, y: f64| 1.0 + 2.0 * x - 3.0 * y + 0.5 * x * y;
        let xs: Vec<f64> = (0..5).map(|i| -1.0 + 0.5 * i as f64).collect();
        let ys: Vec<f64> = (0..4).map(|i| -0.3 + 0.4 * i as f64).collect();
        let z: Vec<f64> = ys
            .iter()
            .flat_map(|y| xs.iter().map(move |x| f(*x, *y)))
            .collect();
        for (x, y) in [(0.1, 0.2), (-0.77, -0.25), (0.99, 0.89), (0.0, 0.5)] {
            let got = super::bilinear(&z, &xs, &ys, x, y);
            assert!(
                (got - f(x, y)).abs() < 1e-12,
                "({x}, {y}): {got} vs {}",
                f(x, y)
            );
        }
        assert!((super::bilinear(&z, &xs, &ys, 2.0, -0.3) - f(1.0, -0.3)).abs() < 1e-12);
        let mut holed = z.clone();
        holed[0] = f64::NAN;
        assert!(super::bilinear(&holed, &xs, &ys, -0.9, -0.2).is_nan());
        assert!(super::bilinear(&holed, &xs, &ys, 0.9, 0.8).is_finite());
    }
}
