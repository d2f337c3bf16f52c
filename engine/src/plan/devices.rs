//! The devices a plan places the model on: the CPU (host memory) and GPUs, real or
//! hypothetical (`--gpus 8x80GiB`, `--gpus 24GiB,24GiB,12GiB`, `--host-mem 1TiB`).

use std::path::Path;

use super::bytes::parse_bytes;
use super::error::PlanError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }
}

/// One device and the memory the plan may use on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `CPU`, or `CUDA0`, `CUDA1`, ... in the order the GPUs were given (as llama.cpp and
    /// Ollama name them, so plans can be compared).
    pub name: String,
    pub kind: DeviceKind,
    /// Bytes free for this process: what the OS or driver reports, or what a flag says.
    pub free_bytes: u64,
}

impl Device {
    pub fn cpu(free_bytes: u64) -> Device {
        Device {
            name: "CPU".to_string(),
            kind: DeviceKind::Cpu,
            free_bytes,
        }
    }

    /// The `index`-th GPU (named `CUDA<index>`).
    pub fn gpu(index: usize, free_bytes: u64) -> Device {
        Device {
            name: format!("CUDA{index}"),
            kind: DeviceKind::Gpu,
            free_bytes,
        }
    }
}

/// Parses `--gpus`: a comma-separated list of sizes, each optionally repeated as `NxSIZE`:
/// `8x80GiB`, `24GiB,24GiB,12GiB`, `2x24GiB,12GiB`. GPUs are named CUDA0, CUDA1, ...
pub fn parse_gpus(text: &str) -> Result<Vec<Device>, PlanError> {
    let bad = |why: String| PlanError::BadGpus {
        text: text.to_string(),
        why,
    };
    if text.trim().is_empty() {
        return Err(bad(
            "the list is empty: write e.g. 8x80GiB or 24GiB,24GiB,12GiB".into(),
        ));
    }
    let mut sizes = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let (count, size) = match item.split_once(['x', 'X']) {
            // `x` may only be a repeat marker when what precedes it is a plain count.
            Some((n, s)) if !n.is_empty() && n.trim().chars().all(|c| c.is_ascii_digit()) => {
                let n: usize = n
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("'{item}': bad repeat count")))?;
                (n, s)
            }
            _ => (1, item),
        };
        if count == 0 {
            return Err(bad(format!("'{item}': a repeat count of 0 GPUs")));
        }
        if count > 1024 {
            return Err(bad(format!("'{item}': {count} GPUs is more than 1024")));
        }
        let bytes = parse_bytes(size).map_err(|e| bad(format!("'{item}': {e}")))?;
        if bytes == 0 {
            return Err(bad(format!("'{item}': a GPU with 0 bytes")));
        }
        sizes.extend(std::iter::repeat_n(bytes, count));
    }
    Ok(sizes
        .into_iter()
        .enumerate()
        .map(|(i, b)| Device::gpu(i, b))
        .collect())
}

/// Parses `--tensor-split`: non-negative proportions, one per GPU (`3,1` or `0.6,0.4`).
pub fn parse_tensor_split(text: &str) -> Result<Vec<f64>, PlanError> {
    let bad = |why: String| PlanError::BadTensorSplit {
        text: text.to_string(),
        why,
    };
    let mut out = Vec::new();
    for item in text.split(',') {
        let v: f64 = item
            .trim()
            .parse()
            .map_err(|_| bad(format!("'{}' is not a number", item.trim())))?;
        if !v.is_finite() || v < 0.0 {
            return Err(bad(format!(
                "'{}' is not a finite non-negative number",
                item.trim()
            )));
        }
        out.push(v);
    }
    if out.iter().all(|v| *v == 0.0) {
        return Err(bad("every proportion is 0".into()));
    }
    Ok(out)
}

/// Free host memory: `MemAvailable` from `/proc/meminfo` (what the kernel can give without
/// swapping, page cache included), or `--host-mem` when given.
pub fn host_free_bytes() -> Result<u64, PlanError> {
    host_free_bytes_from(Path::new("/proc/meminfo"))
}

fn host_free_bytes_from(path: &Path) -> Result<u64, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError::HostMemory {
        why: format!("cannot read {}: {e}; pass --host-mem", path.display()),
    })?;
    parse_meminfo(&text).ok_or_else(|| PlanError::HostMemory {
        why: format!(
            "{} has no readable MemAvailable line; pass --host-mem",
            path.display()
        ),
    })
}

/// `MemAvailable:   12345678 kB` → bytes (the kernel's "kB" is KiB).
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line["MemAvailable:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_lists() {
        let g = parse_gpus("8x80GiB").unwrap();
        assert_eq!(g.len(), 8);
        assert!(g
            .iter()
            .all(|d| d.free_bytes == 80 << 30 && d.kind == DeviceKind::Gpu));
        assert_eq!(g[7].name, "CUDA7");
        let g = parse_gpus("24GiB, 24GiB,12GiB").unwrap();
        let sizes: Vec<u64> = g.iter().map(|d| d.free_bytes).collect();
        assert_eq!(sizes, [24 << 30, 24 << 30, 12 << 30]);
        let g = parse_gpus("2x24GB,12GiB").unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[1].free_bytes, 24_000_000_000);
    }

    #[test]
    fn gpu_list_errors_say_what_is_wrong() {
        for (text, why) in [
            ("", "empty"),
            ("0x80GiB", "repeat count of 0"),
            ("8x", "does not start with a number"),
            ("8x80", "no unit"),
            ("80GiB,,12GiB", "''"),
            ("0GiB", "0 bytes"),
            ("5000x1GiB", "more than 1024"),
        ] {
            let e = parse_gpus(text).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("--gpus"), "{text:?}: {e}");
        }
    }

    #[test]
    fn tensor_split() {
        assert_eq!(parse_tensor_split("3,1").unwrap(), [3.0, 1.0]);
        assert!(parse_tensor_split("0,0")
            .unwrap_err()
            .to_string()
            .contains("every"));
        assert!(parse_tensor_split("1,-2")
            .unwrap_err()
            .to_string()
            .contains("'-2'"));
        assert!(parse_tensor_split("1,x")
            .unwrap_err()
            .to_string()
            .contains("'x'"));
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       32768000 kB\nMemFree:  100 kB\nMemAvailable:   1000 kB\n";
        assert_eq!(parse_meminfo(text), Some(1_024_000));
        assert_eq!(parse_meminfo("MemFree: 100 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: lots\n"), None);
        let e = host_free_bytes_from(Path::new("/nonexistent/meminfo")).unwrap_err();
        assert!(e.to_string().contains("--host-mem"));
    }

    #[test]
    fn this_machine_reports_free_memory() {
        if Path::new("/proc/meminfo").exists() {
            assert!(host_free_bytes().unwrap() > 0);
        }
    }
}
