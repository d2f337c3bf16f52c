//! `--plot`: tokens/s against the layers on GPUs, or against the sweep's rows when several
//! share a layer count (placements, overlap on and off), as SVG. The upper panel is decode
//! (the measured mean with ±sd bars, and the bandwidth model's predictions dashed), the
//! lower prefill.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Phase, Row};

/// One line of a panel: `(x, mean, sd)` points, sorted by x.
struct Series {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64, f64)>,
    /// Drawn dashed, without markers or bars (a model, not a measurement).
    predicted: bool,
}

/// The x axis: each row's layer count, or, when two rows share one, its place in the
/// sweep with the row's label under it.
struct Axis {
    x: Vec<f64>,
    labels: Option<Vec<String>>,
}

impl Axis {
    fn of(rows: &[Row]) -> Axis {
        let layers: Vec<usize> = rows.iter().map(|r| r.gpu_layers).collect();
        let distinct = layers
            .iter()
            .enumerate()
            .all(|(i, l)| !layers[..i].contains(l));
        if distinct {
            Axis {
                x: layers.iter().map(|&l| l as f64).collect(),
                labels: None,
            }
        } else {
            Axis {
                x: (0..rows.len()).map(|i| i as f64).collect(),
                labels: Some(rows.iter().map(|r| r.num_gpu.clone()).collect()),
            }
        }
    }

    fn max(&self) -> f64 {
        self.x.iter().copied().fold(0.0, f64::max)
    }
}

fn measured(
    rows: &[Row],
    axis: &Axis,
    label: &'static str,
    color: RGBColor,
    phase: fn(&Row) -> &Option<Phase>,
) -> Series {
    let points = rows
        .iter()
        .zip(&axis.x)
        .filter_map(|(r, &x)| {
            let p = phase(r).as_ref()?;
            Some((x, p.mean_tokens_per_s, p.sd_tokens_per_s))
        })
        .collect();
    sorted(Series {
        label,
        color,
        points,
        predicted: false,
    })
}

fn sorted(mut s: Series) -> Series {
    s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    s
}

/// The SVG document of `rows`, titled `title` (the model's file name).
pub fn svg(rows: &[Row], title: &str) -> Result<String, String> {
    let axis = Axis::of(rows);
    let tg = measured(rows, &axis, "tg measured (mean ± sd)", BLUE, |r| &r.tg);
    let model = |label, color, value: fn(&Row) -> Option<f64>| {
        sorted(Series {
            label,
            color,
            points: rows
                .iter()
                .zip(&axis.x)
                .filter_map(|(r, &x)| Some((x, value(r)?, 0.0)))
                .collect(),
            predicted: true,
        })
    };
    let memory = model("tg predicted (read bandwidth)", RED, |r| {
        r.predicted_tg_tokens_per_s
    });
    let kernels = model("tg predicted (kernels' bandwidth)", MAGENTA, |r| {
        r.predicted_kernels_tg_tokens_per_s
    });
    // A darker green than GREEN's, which is hard to read on white.
    let pp = measured(
        rows,
        &axis,
        "pp measured (mean ± sd)",
        RGBColor(0, 140, 0),
        |r| &r.pp,
    );
    let x_max = axis.max();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 800)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| format!("drawing the plot: {e}");
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 24)).map_err(err)?;
        let (top, bottom) = root.split_vertically(400);
        let n_gen = rows.first().map_or(0, |r| r.n_gen);
        let n_prompt = rows.first().map_or(0, |r| r.n_prompt);
        let labels = axis.labels.as_deref();
        let decode = [tg, memory, kernels];
        panel(
            &top,
            &format!("decode: tg{n_gen}"),
            (x_max, labels),
            &decode,
        )?;
        panel(
            &bottom,
            &format!("prefill: pp{n_prompt}"),
            (x_max, labels),
            &[pp],
        )?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    (x_max, labels): (f64, Option<&[String]>),
    series: &[Series],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing the plot: {e}");
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1 + p.2))
        .fold(0.0, f64::max);
    // Headroom for the legend; a unit axis when there is nothing to show.
    let y_max = if top > 0.0 { top * 1.25 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(-0.5..x_max + 0.5, 0.0..y_max)
        .map_err(err)?;
    let name = |x: &f64| match labels {
        Some(l) if x.fract() == 0.0 && *x >= 0.0 => l.get(*x as usize).cloned().unwrap_or_default(),
        Some(_) => String::new(),
        None => format!("{x:.0}"),
    };
    chart
        .configure_mesh()
        .x_desc(match labels {
            Some(_) => "placement (num_gpu, --n-cpu-moe, overlap)",
            None => "layers on GPUs (num_gpu)",
        })
        .x_labels(labels.map_or(10, |l| l.len()))
        .x_label_formatter(&name)
        .y_desc("tokens/s")
        .draw()
        .map_err(err)?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let style = s.color.stroke_width(2);
        let line = s.points.iter().map(|p| (p.0, p.1));
        let drawn = if s.predicted {
            chart.draw_series(DashedLineSeries::new(line, 8, 5, style))
        } else {
            chart.draw_series(LineSeries::new(line, style))
        };
        let color = s.color;
        drawn.map_err(err)?.label(s.label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
        });
        if !s.predicted {
            let marks = s
                .points
                .iter()
                .map(|p| Circle::new((p.0, p.1), 4, color.filled()));
            chart.draw_series(marks).map_err(err)?;
            let bars = s
                .points
                .iter()
                .map(|p| PathElement::new(vec![(p.0, p.1 - p.2), (p.0, p.1 + p.2)], color));
            chart.draw_series(bars).map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_panels_with_labels() {
        let phase = |m| Some(Phase::new(vec![m, m + 2.0], vec![], 0.0));
        let row = |layers: usize, pred: Option<f64>| Row {
            model: "m.gguf".into(),
            num_gpu: layers.to_string(),
            gpu_layers: layers,
            n_prompt: 8,
            n_gen: 4,
            repetitions: 2,
            pp: phase(100.0),
            tg: phase(20.0 + layers as f64),
            devices: vec![],
            copy_bytes_per_token: 0,
            predicted_tg_tokens_per_s: pred,
            predicted_kernels_tg_tokens_per_s: pred,
        };
        let s = svg(&[row(16, Some(40.0)), row(0, None)], "m.gguf").unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..s.len().min(80)]);
        // Rows that share a layer count are placed by their order, named by their label.
        let mut off = row(16, Some(30.0));
        off.num_gpu = "16 no-overlap".into();
        let by_row = svg(&[row(16, Some(40.0)), off], "m.gguf").unwrap();
        assert!(by_row.contains("16 no-overlap") && by_row.contains("placement"));
        for text in [
            "m.gguf",
            "tokens/s",
            "layers on GPUs",
            "tg predicted",
            "prefill: pp8",
        ] {
            assert!(s.contains(text), "{text} missing");
        }
    }
}
