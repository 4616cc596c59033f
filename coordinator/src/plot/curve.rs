//! Pictures of a quantity along a line: 1-D scans and connecting curves.

use std::path::Path;

use plotters::prelude::*;

use super::*;

pub(super) fn draw_1d(
    path: &Path,
    title: &str,
    loss: &[f64],
    acc: &[f64],
    xs: &[f64],
) -> Result<(), String> {
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
