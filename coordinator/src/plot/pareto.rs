//! `pareto.png`: a multi-objective search's trials in objective space, the Pareto
//! front marked (Optuna's `plot_pareto_front`): one panel for two objectives, one per
//! pair of objectives for more.

use std::path::Path;

use plotters::prelude::*;

use super::*;

/// A completed trial as the picture shows it.
pub struct ParetoPoint {
    /// Its value of each objective.
    pub values: Vec<f64>,
    /// On the front (feasible, dominated by no other trial).
    pub front: bool,
    /// Outside the search's constraints.
    pub infeasible: bool,
}

/// Draws `pareto.png` at `path`: every completed trial, the front's members larger
/// and joined in order of the first objective of each panel, infeasible trials as
/// crosses.
pub fn pareto(
    path: &Path,
    title: &str,
    objectives: &[String],
    points: &[ParetoPoint],
) -> Result<(), String> {
    register_font();
    let m = objectives.len();
    if m < 2 {
        return Err("a Pareto front needs two objectives".into());
    }
    if points.is_empty() {
        return Err("no trial completed".into());
    }
    let pairs: Vec<(usize, usize)> = (0..m)
        .flat_map(|a| (a + 1..m).map(move |b| (a, b)))
        .collect();
    let cols = pairs.len().min(3);
    let rows = pairs.len().div_ceil(cols);
    let size = if pairs.len() == 1 {
        (720, 580)
    } else {
        (520 * cols as u32, 60 + 460 * rows as u32)
    };
    super::render_png(path, size, |root| {
        root.fill(&WHITE).map_err(err)?;
        let (head, body) = root.split_vertically(50);
        head.draw(&Text::new(
            title.to_string(),
            (12, 16),
            ("sans-serif", 15).into_font(),
        ))
        .map_err(err)?;
        let panels = body.split_evenly((rows, cols));
        for (panel, &(a, b)) in panels.iter().zip(&pairs) {
            draw_pair(panel, objectives, points, a, b)?;
        }
        Ok(())
    })
}

fn range(points: &[ParetoPoint], k: usize) -> std::ops::Range<f64> {
    let (lo, hi) = points
        .iter()
        .map(|p| p.values[k])
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    lo - pad..hi + pad
}

fn draw_pair(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    objectives: &[String],
    points: &[ParetoPoint],
    a: usize,
    b: usize,
) -> Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(range(points, a), range(points, b))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(objectives[a].as_str())
        .y_desc(objectives[b].as_str())
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let at = |p: &ParetoPoint| (p.values[a], p.values[b]);
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(
            points
                .iter()
                .filter(|p| !p.front && !p.infeasible)
                .map(|p| Circle::new(at(p), 3, grey.filled())),
        )
        .map_err(err)?
        .label("trial")
        .legend(move |(x, y)| Circle::new((x + 8, y), 3, grey.filled()));
    if points.iter().any(|p| p.infeasible) {
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.infeasible)
                    .map(|p| Cross::new(at(p), 4, RED.stroke_width(1))),
            )
            .map_err(err)?
            .label("infeasible")
            .legend(|(x, y)| Cross::new((x + 8, y), 4, RED.stroke_width(1)));
    }
    let mut front: Vec<(f64, f64)> = points.iter().filter(|p| p.front).map(at).collect();
    front.sort_by(|p, q| p.0.total_cmp(&q.0));
    if objectives.len() == 2 {
        // Two objectives: join the front's members in order of the first one.
        chart
            .draw_series(LineSeries::new(front.clone(), BLUE.stroke_width(1)))
            .map_err(err)?;
    }
    chart
        .draw_series(front.iter().map(|p| Circle::new(*p, 5, BLUE.filled())))
        .map_err(err)?
        .label("Pareto front")
        .legend(|(x, y)| Circle::new((x + 8, y), 5, BLUE.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    Ok(())
}
