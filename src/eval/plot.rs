//! The frame every SVG plot of the reports shares: a white canvas, a caption, a percentage y
//! axis from 0 to 100, and a legend in the lower right.

use super::EvalError;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;

/// A plot's chart: f64 x axis, percentage y axis.
pub type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A plotting error as the evaluation's error.
pub fn err(e: impl std::fmt::Display) -> EvalError {
    EvalError::Plot(e.to_string())
}

/// Draws an SVG of `size` pixels with `caption` over `x` and 0..100 %: `draw` configures the
/// mesh and draws the series, then the legend is added.
pub fn percent_svg(
    size: (u32, u32),
    caption: &str,
    x: Range<f64>,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> Result<(), EvalError>,
) -> Result<String, EvalError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x, 0f64..100f64)
            .map_err(err)?;
        draw(&mut chart)?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
