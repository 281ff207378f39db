//! `mlink simulate`: the scheduling simulation of Fig. 10.

use crate::schedule::simulate::{self, PAPER_ENSEMBLE_GAIN, ScoreDist, SimConfig, SimReport};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Models per instance (the optimum is enumerated, so at most 24).
    #[arg(long, default_value_t = 10)]
    pub models: usize,
    /// Distribution of link scores and model costs.
    #[arg(long, value_enum, default_value_t = ScoreDist::Normal)]
    pub dist: ScoreDist,
    /// Random instances averaged per budget.
    #[arg(long, default_value_t = 100)]
    pub instances: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ensemble gain per further source (paper: 0.02).
    #[arg(long, default_value_t = PAPER_ENSEMBLE_GAIN)]
    pub gain: f64,
    /// Budget points from the cheapest model to all models.
    #[arg(long, default_value_t = 11)]
    pub budgets: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG plot of accuracy against budget to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.gain),
        "--gain must be in [0, 1], got {}",
        args.gain
    );
    let cfg = SimConfig {
        models: args.models,
        dist: args.dist,
        instances: args.instances,
        seed: args.seed,
        gain: args.gain,
        budget_points: args.budgets,
    };
    let bar = indicatif::ProgressBar::new(args.instances as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} instances {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = simulate::run(&cfg, || bar.inc(1))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(path) = &args.plot {
        plot(&report, path).with_context(|| format!("writing the plot {}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &SimReport) {
    let c = &r.config;
    println!(
        "{} models, {:?} scores and costs, ensemble gain {}, {} instances, seed {}",
        c.models, c.dist, c.gain, c.instances, c.seed
    );
    println!(
        "budget: fraction of the way from the cheapest model to all models; accuracy F(A) \
         averaged; (ratio to the optimum, averaged per instance)"
    );
    println!(
        "{:>6}  {:>16}  {:>16}  {:>16}  {:>16}  {:>7}",
        "budget", "standalone", "mlink", "mlink-skip", "gain", "optimal"
    );
    for p in &r.points {
        let cell = |v: f64, ratio: f64| format!("{v:.4} ({ratio:.4})");
        println!(
            "{:>6.2}  {:>16}  {:>16}  {:>16}  {:>16}  {:>7.4}",
            p.budget_fraction,
            cell(p.standalone, p.standalone_ratio),
            cell(p.mlink, p.mlink_ratio),
            cell(p.mlink_skip, p.mlink_skip_ratio),
            cell(p.gain, p.gain_ratio),
            p.optimal
        );
    }
    println!(
        "mean ratio to the optimum: standalone {:.4}, mlink {:.4} (worst {:.4}), mlink-skip \
         {:.4}, gain {:.4} (worst {:.4})",
        r.mean_standalone_ratio,
        r.mean_mlink_ratio,
        r.min_mlink_ratio,
        r.mean_mlink_skip_ratio,
        r.mean_gain_ratio,
        r.min_gain_ratio
    );
    let beaten: usize = r.points.iter().map(|p| p.optimum_beaten).sum();
    println!("cases where a heuristic beat the optimum: {beaten}");
}

fn plot(r: &SimReport, path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = format!(
            "{} models, {:?} distribution, {} instances",
            r.config.models, r.config.dist, r.config.instances
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)?;
        chart
            .configure_mesh()
            .x_desc("budget (0: cheapest model, 1: all models)")
            .y_desc("average output accuracy")
            .draw()?;
        type Series = (&'static str, fn(&simulate::SimPoint) -> f64, RGBColor);
        let series: [Series; 4] = [
            ("Standalone", |p| p.standalone, RGBColor(120, 120, 120)),
            ("MLink (paper)", |p| p.mlink, RGBColor(31, 119, 180)),
            ("Gain greedy", |p| p.gain, RGBColor(44, 160, 44)),
            ("Optimal", |p| p.optimal, RGBColor(214, 39, 40)),
        ];
        for (name, get, color) in series {
            let pts: Vec<(f64, f64)> = r
                .points
                .iter()
                .map(|p| (p.budget_fraction, get(p)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    crate::fsutil::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
