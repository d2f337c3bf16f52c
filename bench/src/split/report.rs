//! One row per num_gpu value, and how it is written: a markdown table (llama-bench's
//! `mean ± sd`), CSV, JSON (an array of the rows) or JSON Lines (one row a line).

use serde::Serialize;

use super::shares::DeviceShares;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Csv,
    Json,
    Jsonl,
}

/// Timed runs of one phase (prefill or decode): tokens/s and where the time went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub mean_tokens_per_s: f64,
    /// Sample standard deviation (0 for one run, as llama-bench).
    pub sd_tokens_per_s: f64,
    pub samples_tokens_per_s: Vec<f64>,
    /// Every device of the run, the CPU first, with its shares of the phase's wall time.
    pub devices: Vec<DeviceShares>,
    /// Share of the wall time in which two or more devices computed at once.
    pub overlap: f64,
}

impl Phase {
    pub fn new(samples: Vec<f64>, devices: Vec<DeviceShares>, overlap: f64) -> Phase {
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let sd = if samples.len() < 2 {
            0.0
        } else {
            (samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Phase {
            mean_tokens_per_s: mean,
            sd_tokens_per_s: sd,
            samples_tokens_per_s: samples,
            devices,
            overlap,
        }
    }

    /// `123.45 ± 1.23`, as llama-bench prints it.
    fn mean_sd(&self) -> String {
        format!(
            "{:.2} ± {:.2}",
            self.mean_tokens_per_s, self.sd_tokens_per_s
        )
    }
}

/// What the bandwidth model knows of one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceModel {
    pub name: String,
    /// Weight bytes one decode token reads there.
    pub bytes_per_token: f64,
    /// Its measured read bandwidth (`None`: not measured, a GPU).
    pub read_gb_per_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub model: String,
    /// As asked for (`16`, `auto`).
    pub num_gpu: String,
    /// Layers the plan put on GPUs (output layer included), as num_gpu counts them.
    pub gpu_layers: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub repetitions: usize,
    /// `None` with `-p 0` / `-n 0`.
    pub pp: Option<Phase>,
    pub tg: Option<Phase>,
    pub devices: Vec<DeviceModel>,
    /// Bytes copied between devices per decode token (residual stream, logits home).
    pub copy_bytes_per_token: u64,
    pub predicted_tg_tokens_per_s: Option<f64>,
    /// The same model at the kernels' measured matvec bandwidth instead of the read
    /// bandwidth: what Strata's kernels should give, where the other is what memory could.
    pub predicted_kernels_tg_tokens_per_s: Option<f64>,
}

/// `fastest tg: auto (60.06 t/s, 1.17× the slowest); fastest pp: ...`: the sweep's answer,
/// or `None` with fewer than two rows.
pub fn fastest(rows: &[Row]) -> Option<String> {
    if rows.len() < 2 {
        return None;
    }
    let best = |name: &str, phase: fn(&Row) -> Option<&Phase>| {
        let means: Vec<(&Row, f64)> = rows
            .iter()
            .filter_map(|r| Some((r, phase(r)?.mean_tokens_per_s)))
            .collect();
        let (top, t) = means.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))?;
        let low = means.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
        Some(format!(
            "fastest {name}: {} ({t:.2} t/s, {:.2}× the slowest)",
            top.num_gpu,
            t / low
        ))
    };
    let parts: Vec<String> = [best("tg", |r| r.tg.as_ref()), best("pp", |r| r.pp.as_ref())]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// What is printed before the first row.
pub fn header(format: Format, n_prompt: usize, n_gen: usize, devices: &[String]) -> Option<String> {
    match format {
        Format::Md => Some(format!(
            "| num_gpu | layers on GPUs | pp{n_prompt} t/s | tg{n_gen} t/s | tg t/s predicted \
             (memory / kernels) | read GB/s | busy during tg | copying during tg | overlap tg \
             | busy during pp |\n\
             |---|---:|---:|---:|---:|---:|---|---|---:|---|"
        )),
        Format::Csv => Some(csv_header(devices)),
        Format::Json | Format::Jsonl => None,
    }
}

/// One row as its line(s) in `format` (JSON: an element of the array; the caller writes
/// the brackets and commas).
pub fn line(format: Format, row: &Row) -> String {
    match format {
        Format::Md => md_line(row),
        Format::Csv => csv_line(row),
        Format::Json => serde_json::to_string_pretty(row).expect("a row serializes"),
        Format::Jsonl => serde_json::to_string(row).expect("a row serializes"),
    }
}

/// A share as a percentage with `decimals` places.
fn percent(x: f64, decimals: usize) -> String {
    format!("{:.*}%", decimals, 100.0 * x)
}

/// `CPU 61%, ACCEL0 35%`: one share of each device.
fn per_device(
    phase: &Option<Phase>,
    decimals: usize,
    share: impl Fn(&DeviceShares) -> f64,
) -> String {
    phase.as_ref().map_or("-".into(), |p| {
        p.devices
            .iter()
            .map(|d| format!("{} {}", d.name, percent(share(d), decimals)))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn md_line(row: &Row) -> String {
    let dash = || "-".to_string();
    let bw = row
        .devices
        .iter()
        .find_map(|d| d.read_gb_per_s)
        .map_or_else(dash, |g| format!("{g:.1}"));
    let predicted = |t: Option<f64>| t.map_or_else(dash, |t| format!("{t:.2}"));
    let memory = predicted(row.predicted_tg_tokens_per_s);
    let kernels = predicted(row.predicted_kernels_tg_tokens_per_s);
    format!(
        "| {} | {} | {} | {} | {memory} / {kernels} | {bw} | {} | {} | {} | {} |",
        row.num_gpu,
        row.gpu_layers,
        row.pp.as_ref().map_or_else(dash, Phase::mean_sd),
        row.tg.as_ref().map_or_else(dash, Phase::mean_sd),
        per_device(&row.tg, 0, |d| d.busy),
        // Copies of one token's activations are small: a whole percent would show 0.
        per_device(&row.tg, 1, |d| d.transfer),
        row.tg.as_ref().map_or_else(dash, |p| percent(p.overlap, 0)),
        per_device(&row.pp, 0, |d| d.busy),
    )
}

/// Quoted when it holds a comma, a quote or a line break (quotes doubled), as RFC 4180.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const PHASE_COLUMNS: [&str; 4] = ["mean_tokens_per_s", "sd_tokens_per_s", "samples", "overlap"];
const SHARE_COLUMNS: [&str; 3] = ["busy", "idle", "transfer"];

fn csv_header(devices: &[String]) -> String {
    let mut cols: Vec<String> = [
        "model",
        "num_gpu",
        "gpu_layers",
        "n_prompt",
        "n_gen",
        "repetitions",
    ]
    .map(String::from)
    .to_vec();
    for phase in ["pp", "tg"] {
        cols.extend(PHASE_COLUMNS.map(|c| format!("{phase}_{c}")));
        for d in devices {
            cols.extend(SHARE_COLUMNS.map(|c| format!("{phase}_{d}_{c}")));
        }
    }
    for d in devices {
        cols.push(format!("{d}_bytes_per_token"));
        cols.push(format!("{d}_read_gb_per_s"));
    }
    cols.push("copy_bytes_per_token".into());
    cols.push("predicted_tg_tokens_per_s".into());
    cols.push("predicted_kernels_tg_tokens_per_s".into());
    cols.iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",")
}

/// The columns of [`csv_header`]; an absent value is an empty field.
fn csv_line(row: &Row) -> String {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut cols = vec![
        row.model.clone(),
        row.num_gpu.clone(),
        row.gpu_layers.to_string(),
        row.n_prompt.to_string(),
        row.n_gen.to_string(),
        row.repetitions.to_string(),
    ];
    for phase in [&row.pp, &row.tg] {
        match phase {
            Some(p) => {
                cols.push(p.mean_tokens_per_s.to_string());
                cols.push(p.sd_tokens_per_s.to_string());
                // Samples in one field, `;` apart.
                let samples: Vec<String> =
                    p.samples_tokens_per_s.iter().map(f64::to_string).collect();
                cols.push(samples.join(";"));
                cols.push(p.overlap.to_string());
                for d in &p.devices {
                    cols.extend([d.busy, d.idle, d.transfer].map(|v| v.to_string()));
                }
            }
            None => {
                let n = PHASE_COLUMNS.len() + SHARE_COLUMNS.len() * row.devices.len();
                cols.extend(std::iter::repeat_n(String::new(), n));
            }
        }
    }
    for d in &row.devices {
        cols.push(d.bytes_per_token.to_string());
        cols.push(opt(d.read_gb_per_s));
    }
    cols.push(row.copy_bytes_per_token.to_string());
    cols.push(opt(row.predicted_tg_tokens_per_s));
    cols.push(opt(row.predicted_kernels_tg_tokens_per_s));
    cols.iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(name: &str, busy: f64) -> DeviceShares {
        DeviceShares {
            name: name.into(),
            busy,
            idle: 1.0 - busy,
            transfer: 0.0,
        }
    }

    fn row() -> Row {
        let devices = vec![shares("CPU", 0.6), shares("ACCEL0", 0.3)];
        Row {
            model: "models/a,b \"c\".gguf".into(),
            num_gpu: "16".into(),
            gpu_layers: 16,
            n_prompt: 8,
            n_gen: 4,
            repetitions: 2,
            pp: None,
            tg: Some(Phase::new(vec![10.0, 12.0], devices, 0.0)),
            devices: vec![
                DeviceModel {
                    name: "CPU".into(),
                    bytes_per_token: 1e6,
                    read_gb_per_s: Some(15.0),
                },
                DeviceModel {
                    name: "ACCEL0".into(),
                    bytes_per_token: 5e5,
                    read_gb_per_s: Some(15.0),
                },
            ],
            copy_bytes_per_token: 2304,
            predicted_tg_tokens_per_s: Some(9999.5),
            predicted_kernels_tg_tokens_per_s: Some(7777.5),
        }
    }

    #[test]
    fn mean_and_sample_sd() {
        let p = Phase::new(vec![10.0, 12.0, 14.0], vec![], 0.0);
        assert_eq!((p.mean_tokens_per_s, p.sd_tokens_per_s), (12.0, 2.0));
        assert_eq!(p.mean_sd(), "12.00 ± 2.00");
        assert_eq!(Phase::new(vec![7.0], vec![], 0.0).sd_tokens_per_s, 0.0);
    }

    #[test]
    fn json_row_reads_back() {
        for format in [Format::Json, Format::Jsonl] {
            let text = line(format, &row());
            assert_eq!(format == Format::Jsonl, !text.contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["model"], "models/a,b \"c\".gguf");
            assert_eq!(v["num_gpu"], "16");
            assert_eq!(v["gpu_layers"], 16);
            assert_eq!(v["repetitions"], 2);
            assert!(v["pp"].is_null());
            let tg = &v["tg"];
            assert_eq!(tg["mean_tokens_per_s"], 11.0);
            assert_eq!(tg["sd_tokens_per_s"], 2f64.sqrt());
            assert_eq!(tg["samples_tokens_per_s"], serde_json::json!([10.0, 12.0]));
            assert_eq!(tg["devices"][1]["name"], "ACCEL0");
            assert_eq!(tg["devices"][1]["busy"], 0.3);
            assert_eq!(tg["devices"][1]["idle"], 0.7);
            assert_eq!(tg["overlap"], 0.0);
            assert_eq!(v["devices"][0]["read_gb_per_s"], 15.0);
            assert_eq!(v["predicted_tg_tokens_per_s"], 9999.5);
            assert_eq!(v["predicted_kernels_tg_tokens_per_s"], 7777.5);
        }
    }

    #[test]
    fn csv_has_a_field_per_column_and_quotes() {
        let names = ["CPU".to_string(), "ACCEL0".to_string()];
        let head = csv_header(&names);
        let line = csv_line(&row());
        // The model's path holds a comma and quotes: one quoted field.
        assert!(
            line.starts_with("\"models/a,b \"\"c\"\".gguf\",16,16,8,4,2,"),
            "{line}"
        );
        let fields = |s: &str| {
            let (mut n, mut quoted) = (1, false);
            for c in s.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => n += 1,
                    _ => {}
                }
            }
            n
        };
        assert_eq!(fields(&head), fields(&line));
        let cols: Vec<&str> = head.split(',').collect();
        let i = cols.iter().position(|c| *c == "tg_samples").unwrap();
        // + 1: the model's quoted field holds a comma.
        assert_eq!(line.split(',').nth(i + 1), Some("10;12"));
        assert!(cols.contains(&"tg_ACCEL0_busy") && cols.contains(&"predicted_tg_tokens_per_s"));
    }

    #[test]
    fn the_fastest_row_is_named() {
        let mut other = row();
        other.num_gpu = "auto".into();
        if let Some(tg) = &mut other.tg {
            tg.mean_tokens_per_s = 22.0;
        }
        let said = fastest(&[row(), other]).unwrap();
        assert!(
            said.starts_with("fastest tg: auto (22.00 t/s, 2.00× the slowest)"),
            "{said}"
        );
        assert_eq!(fastest(&[row()]), None);
    }

    #[test]
    fn markdown_row_shows_mean_sd_and_shares() {
        let md = line(Format::Md, &row());
        assert!(
            md.starts_with("| 16 | 16 | - | 11.00 ± 1.41 | 9999.50 / 7777.50 | 15.0 |"),
            "{md}"
        );
        assert!(md.contains("CPU 60%, ACCEL0 30%"), "{md}");
    }
}
