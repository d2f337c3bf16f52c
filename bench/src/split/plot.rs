//! `--plot`: tokens/s against the layers on GPUs, as SVG. The upper panel is decode (the
//! measured mean with ±sd bars, and the bandwidth model's prediction dashed), the lower
//! prefill.

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

fn measured(
    rows: &[Row],
    label: &'static str,
    color: RGBColor,
    phase: fn(&Row) -> &Option<Phase>,
) -> Series {
    let points = rows
        .iter()
        .filter_map(|r| {
            let p = phase(r).as_ref()?;
            Some((r.gpu_layers as f64, p.mean_tokens_per_s, p.sd_tokens_per_s))
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
    let tg = measured(rows, "tg measured (mean ± sd)", BLUE, |r| &r.tg);
    let predicted = sorted(Series {
        label: "tg predicted (bandwidth model)",
        color: RED,
        points: rows
            .iter()
            .filter_map(|r| Some((r.gpu_layers as f64, r.predicted_tg_tokens_per_s?, 0.0)))
            .collect(),
        predicted: true,
    });
    // A darker green than GREEN's, which is hard to read on white.
    let pp = measured(rows, "pp measured (mean ± sd)", RGBColor(0, 140, 0), |r| {
        &r.pp
    });
    let x_max = rows.iter().map(|r| r.gpu_layers).max().unwrap_or(0) as f64;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 800)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| format!("drawing the plot: {e}");
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 24)).map_err(err)?;
        let (top, bottom) = root.split_vertically(400);
        let n_gen = rows.first().map_or(0, |r| r.n_gen);
        let n_prompt = rows.first().map_or(0, |r| r.n_prompt);
        panel(&top, &format!("decode: tg{n_gen}"), x_max, &[tg, predicted])?;
        panel(&bottom, &format!("prefill: pp{n_prompt}"), x_max, &[pp])?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    x_max: f64,
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
    chart
        .configure_mesh()
        .x_desc("layers on GPUs (num_gpu)")
        .x_label_formatter(&|x| format!("{x:.0}"))
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
