//! Pictures of a quantity along a line: 1-D scans and connecting curves.

use std::path::Path;

use plotters::prelude::*;

use super::*;

/// `curve.png`: the loss (left axis) and accuracy (its own right axis) along x; for an
/// interpolation, both checkpoints (α = 0 and 1), the chord between their losses and
/// the barrier (the largest rise above it) are marked.
pub(super) fn draw_1d(
    path: &Path,
    labels: &Labels,
    loss: &[f64],
    acc: &[f64],
    second: Option<(&[f64], &[f64])>,
    xs: &[f64],
    barrier: Option<Barrier>,
) -> Result<(), String> {
    register_font();
    super::render_png(path, (800, 520), |root| {
        root.fill(&WHITE).map_err(err)?;
        let body = labels.header(&root)?;
        let f: Vec<f64> = loss
            .iter()
            .chain(second.map_or(&[][..], |s| s.0))
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let hi = f.iter().copied().fold(f64::MIN, f64::max);
        let lo = f.iter().copied().fold(f64::MAX, f64::min).min(0.0);
        let (x0, x1) = (xs[0], xs[xs.len() - 1]);
        let mut chart = ChartBuilder::on(&body)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(x0..x1, lo..hi * 1.08)
            .map_err(err)?
            .set_secondary_coord(x0..x1, 0.0..1.0);
        chart
            .configure_mesh()
            .x_desc(labels.x.as_str())
            .y_desc(labels.value.as_str())
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc("accuracy")
            .y_label_formatter(&|v| tick(*v))
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
            .label(labels.value.clone())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        if acc.iter().any(|v| v.is_finite()) {
            chart
                .draw_secondary_series(LineSeries::new(pts(acc), RED.stroke_width(2)))
                .map_err(err)?
                .label("accuracy (right axis)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
        }
        if let Some((vloss, vacc)) = second {
            // `split = "both"`: the validation split's curves, dashed.
            let dashed = |c: RGBColor| {
                move |(x, y): (i32, i32)| {
                    PathElement::new(vec![(x, y), (x + 6, y)], c.stroke_width(2))
                }
            };
            chart
                .draw_series(DashedLineSeries::new(
                    pts(vloss),
                    6,
                    4,
                    BLUE.stroke_width(2),
                ))
                .map_err(err)?
                .label("validation loss")
                .legend(dashed(BLUE));
            if vacc.iter().any(|v| v.is_finite()) {
                chart
                    .draw_secondary_series(DashedLineSeries::new(
                        pts(vacc),
                        6,
                        4,
                        RED.stroke_width(2),
                    ))
                    .map_err(err)?
                    .label("validation accuracy (right axis)")
                    .legend(dashed(RED));
            }
        }
        if let Some(b) = barrier {
            // The loss at the two checkpoints, interpolated where they fall between points.
            let at = |a: f64| -> f64 {
                let i = xs.partition_point(|x| *x < a).clamp(1, xs.len() - 1);
                let t = (a - xs[i - 1]) / (xs[i] - xs[i - 1]);
                loss[i - 1] + t * (loss[i] - loss[i - 1])
            };
            let (f0, f1) = (at(0.0), at(1.0));
            for (a, name) in [(0.0, "checkpoint (α = 0)"), (1.0, "target (α = 1)")] {
                if (x0..=x1).contains(&a) {
                    chart
                        .draw_series(DashedLineSeries::new(
                            vec![(a, lo), (a, hi * 1.08)],
                            4,
                            4,
                            BLACK.mix(0.5).stroke_width(1),
                        ))
                        .map_err(err)?;
                    chart
                        .draw_series(std::iter::once(Text::new(
                            name.to_string(),
                            (a, lo + 0.03 * (hi - lo)),
                            ("sans-serif", 12),
                        )))
                        .map_err(err)?;
                }
            }
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, f0), (1.0, f1)],
                    6,
                    4,
                    BLACK.mix(0.7).stroke_width(1),
                ))
                .map_err(err)?
                .label("chord between the checkpoints")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.7)));
            let chord = (1.0 - b.alpha) * f0 + b.alpha * f1;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(b.alpha, chord), (b.alpha, chord + b.value)],
                    MAGENTA.stroke_width(3),
                )))
                .map_err(err)?
                .label(format!(
                    "barrier {} at α = {}",
                    significant(b.value),
                    tick(b.alpha)
                ))
                .legend(|(x, y)| {
                    PathElement::new(
                        vec![(x + 8, y - 6), (x + 8, y + 6)],
                        MAGENTA.stroke_width(3),
                    )
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .label_font(("sans-serif", 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
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
    super::render_png(path, (760, 480), |root| {
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
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.mix(0.45))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}
