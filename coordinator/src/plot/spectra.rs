//! Pictures of summaries: the Hessian's eigenvalue density and the intrinsic-dimension curve.

use std::path::Path;

use plotters::prelude::*;

use super::*;

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
    super::render_png(path, (760, 480), |root| {
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
        Ok(())
    })
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
    super::render_png(path, (760, 480), |root| {
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
        Ok(())
    })
}
