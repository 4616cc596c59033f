//! `pbt.png`: a population-based-training sweep's metric over training steps, one
//! colour per member, each round's trial a segment; an exploit (a member restarting from
//! another's checkpoint) is a dashed red jump from the donor's last report.

use std::path::Path;

use plotters::prelude::*;

use super::*;

/// One trial of a PBT sweep as the picture shows it.
pub struct LineageTrial {
    /// Its population member.
    pub member: u32,
    /// Its reports of the metric: (step, value).
    pub points: Vec<(f64, f64)>,
    /// The trial it started from, with that trial's last report; `None` in round 0.
    pub parent: Option<(f64, f64)>,
    /// Whether it started from another member's checkpoint.
    pub exploited: bool,
}

/// Draws `pbt.png` at `path`.
pub fn lineage(
    path: &Path,
    title: &str,
    metric: &str,
    trials: &[LineageTrial],
) -> Result<(), String> {
    register_font();
    let all: Vec<(f64, f64)> = trials
        .iter()
        .flat_map(|t| t.points.iter().copied())
        .filter(|p| p.1.is_finite())
        .collect();
    if all.is_empty() {
        return Err("no trial reported".into());
    }
    let (x1, y0, y1) = all.iter().fold(
        (1.0f64, f64::INFINITY, f64::NEG_INFINITY),
        |(x, lo, hi), p| (x.max(p.0), lo.min(p.1), hi.max(p.1)),
    );
    let pad = if y1 > y0 { (y1 - y0) * 0.05 } else { 1.0 };
    let members = trials.iter().map(|t| t.member).max().unwrap_or(0) + 1;
    super::render_png(path, (860, 540), |root| {
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x1 * 1.02, y0 - pad..y1 + pad)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(metric)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for t in trials {
            let colour = viridis(f64::from(t.member) / f64::from(members.max(2) - 1));
            let mut line = t.points.clone();
            if let (Some(p), false) = (t.parent, t.exploited) {
                line.insert(0, p);
            }
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(err)?;
            if let (Some(p), true, Some(first)) = (t.parent, t.exploited, t.points.first()) {
                chart
                    .draw_series(DashedLineSeries::new(
                        [p, *first],
                        5,
                        4,
                        RED.stroke_width(2),
                    ))
                    .map_err(err)?;
            }
        }
        // Where each exploit landed, as one series: the legend's entry.
        let landed: Vec<(f64, f64)> = trials
            .iter()
            .filter(|t| t.exploited && t.parent.is_some())
            .filter_map(|t| t.points.first().copied())
            .collect();
        if !landed.is_empty() {
            chart
                .draw_series(landed.iter().map(|p| Circle::new(*p, 4, RED.filled())))
                .map_err(err)?
                .label("exploit: restarted from a top member's checkpoint")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        Ok(())
    })
}
