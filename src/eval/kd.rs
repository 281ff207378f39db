//! The knowledge-distillation comparison of the paper's Fig. 5: per target model, a student
//! network with two convolutional layers ([`super::pixelnet`]) trained on the frame thumbnails
//! to reproduce the target's exact outputs, against the model links from every other model
//! trained on the same frames, at several training sizes.
//!
//! A training size of p% trains on the first p% of the trace in time (as every other method
//! trains on the first 10%); every size is scored on the same test frames, those after the
//! largest size's training part, so the sizes compare on equal ground. Each size is repeated
//! with several seeds (link training and student initialisation); means and standard
//! deviations are reported, as in the paper.

use super::EvalError;
use super::pixelnet::{NetConfig, PixelNet};
use super::problem::Problem;
use super::replay::{Replay, ReplayConfig};
use super::stats::mean;
use crate::output::OutputValue;
use serde::Serialize;
use std::fmt::Write as _;

/// One target model's scores at one training size, over the repeats.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KdRow {
    /// Training size in % of the trace's time span.
    pub train_percent: f64,
    /// Training frames (of the first repeat; the split does not depend on the seed).
    pub train_frames: usize,
    /// The student's test score: mean and standard deviation over the repeats.
    pub student: (f64, f64),
    /// Per source model (trace order, the target itself `None`), the link's test score.
    pub links: Vec<Option<(f64, f64)>>,
}

/// Fig. 5 analog: per target model, its rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KdReport {
    pub models: Vec<String>,
    pub test_frames: usize,
    pub repeats: usize,
    /// Per target model (trace order), one row per training size.
    pub targets: Vec<Vec<KdRow>>,
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let m = mean(xs.iter().copied());
    let var = mean(xs.iter().map(|x| (x - m) * (x - m)));
    (m, var.sqrt())
}

/// Runs the comparison at `sizes` (shares of the trace's time span, each in (0, 1)) with
/// `repeats` seeds from `base.seed`.
pub fn compare(
    problem: &Problem,
    base: &ReplayConfig,
    sizes: &[f64],
    repeats: usize,
) -> Result<KdReport, EvalError> {
    let size = problem
        .thumbnail
        .filter(|_| problem.has_thumbnails())
        .ok_or_else(|| {
            EvalError::Invalid(
                "the trace holds no frame thumbnails; record it with `mlink record --thumbnails 32x32`"
                    .into(),
            )
        })?;
    if sizes.is_empty() || repeats == 0 {
        return Err(EvalError::Invalid(
            "give at least one training size and one repeat".into(),
        ));
    }
    if let Some(bad) = sizes.iter().find(|s| !(**s > 0.0 && **s < 1.0)) {
        return Err(EvalError::Invalid(format!(
            "training size {bad} is not a share between 0 and 1"
        )));
    }
    let k = problem.n_models();
    let largest = sizes.iter().copied().fold(0.0, f64::max);
    // The common test frames: after the largest training part.
    let probe = Replay::new(
        problem,
        ReplayConfig {
            train_fraction: largest,
            ..base.clone()
        },
    )?;
    let test: Vec<usize> = probe.test_range().collect();
    drop(probe);
    let mut targets: Vec<Vec<KdRow>> = vec![Vec::new(); k];
    for &share in sizes {
        let mut students: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut links: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); k]; k];
        let mut train_frames = 0;
        for r in 0..repeats {
            let seed = base.seed + r as u64;
            let replay = Replay::new(
                problem,
                ReplayConfig {
                    train_fraction: share,
                    seed,
                    ..base.clone()
                },
            )?;
            let train = replay.train_range();
            train_frames = train.len();
            let matrix = replay.link_matrix(&test);
            for (i, row) in matrix.iter().enumerate() {
                for (j, s) in row.iter().enumerate() {
                    if i != j {
                        links[j][i].push(*s);
                    }
                }
            }
            let frames = &problem.frames[train];
            let thumbs: Vec<&[u8]> = frames
                .iter()
                .filter_map(|f| f.thumbnail.as_deref())
                .collect();
            for (j, scores) in students.iter_mut().enumerate() {
                let spec = &problem.models[j].spec;
                let targets_j: Vec<Vec<&OutputValue>> =
                    frames.iter().map(|f| vec![&f.outputs[j]]).collect();
                let student = PixelNet::train(
                    (size.width as usize, size.height as usize),
                    &thumbs,
                    &targets_j,
                    std::slice::from_ref(spec),
                    std::slice::from_ref(&problem.models[j].id),
                    &NetConfig::student(seed),
                )?;
                let mut total = 0.0;
                for &t in &test {
                    let f = &problem.frames[t];
                    let thumb = f.thumbnail.as_deref().unwrap_or_default();
                    let p = student.predict(thumb)?;
                    total += p
                        .first()
                        .map_or(0.0, |p| super::score(spec, p, &f.outputs[j]));
                }
                scores.push(total / test.len().max(1) as f64);
            }
        }
        for j in 0..k {
            targets[j].push(KdRow {
                train_percent: 100.0 * share,
                train_frames,
                student: mean_std(&students[j]),
                links: (0..k)
                    .map(|i| (i != j).then(|| mean_std(&links[j][i])))
                    .collect(),
            });
        }
    }
    Ok(KdReport {
        models: problem.models.iter().map(|m| m.id.clone()).collect(),
        test_frames: test.len(),
        repeats,
        targets,
    })
}

/// The comparison as Markdown tables, one per target model.
pub fn render_markdown(r: &KdReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Test score (%) on the same {} test frames, mean +- standard deviation over {} repeats; KD-Student: two \
         convolutional layers on the thumbnails.\n",
        r.test_frames, r.repeats
    );
    for (j, rows) in r.targets.iter().enumerate() {
        let _ = writeln!(s, "Target `{}`:\n", r.models[j]);
        let _ = write!(s, "| training % | frames | KD-Student |");
        for (i, m) in r.models.iter().enumerate() {
            if i != j {
                let _ = write!(s, " link from {m} |");
            }
        }
        let _ = writeln!(s, "\n|---|---|---|{}", "---|".repeat(r.models.len() - 1));
        for row in rows {
            let _ = write!(
                s,
                "| {:.0} | {} | {:.1} +- {:.1} |",
                row.train_percent,
                row.train_frames,
                100.0 * row.student.0,
                100.0 * row.student.1
            );
            for (m, sd) in row.links.iter().flatten() {
                let _ = write!(s, " {:.1} +- {:.1} |", 100.0 * m, 100.0 * sd);
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }
    s
}

/// Score against training size for every target (student dashed, best link solid), as SVG.
pub fn plot(r: &KdReport) -> Result<String, EvalError> {
    use super::plot::{err, percent_svg};
    use plotters::prelude::*;
    let max_x = r
        .targets
        .iter()
        .flatten()
        .map(|row| row.train_percent)
        .fold(1.0, f64::max);
    percent_svg(
        (760, 460),
        "Model links vs distilled students by training size",
        0f64..max_x * 1.05,
        |chart| {
            chart
                .configure_mesh()
                .x_desc("training data (% of the trace)")
                .y_desc("test score %")
                .draw()
                .map_err(err)?;
            let colours = [RED, BLUE, GREEN, MAGENTA, BLACK, CYAN];
            for (j, rows) in r.targets.iter().enumerate() {
                let colour = colours[j % colours.len()];
                let best: Vec<(f64, f64)> = rows
                    .iter()
                    .map(|row| {
                        let b = row.links.iter().flatten().map(|l| l.0).fold(0.0, f64::max);
                        (row.train_percent, 100.0 * b)
                    })
                    .collect();
                let student: Vec<(f64, f64)> = rows
                    .iter()
                    .map(|row| (row.train_percent, 100.0 * row.student.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(best, colour.stroke_width(2)))
                    .map_err(err)?
                    .label(format!("{}: best link", r.models[j]))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(
                        student
                            .iter()
                            .map(|p| Cross::new(*p, 5, colour.stroke_width(2))),
                    )
                    .map_err(err)?
                    .label(format!("{}: KD-Student", r.models[j]))
                    .legend(move |(x, y)| Cross::new((x + 8, y), 4, colour.stroke_width(2)));
                chart
                    .draw_series(LineSeries::new(student, colour.mix(0.5).stroke_width(1)))
                    .map_err(err)?;
            }
            Ok(())
        },
    )
}
