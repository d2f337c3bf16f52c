//! A CPU device that poses as an accelerator, so that CI can run the planner, the loader
//! and the layer-split runner without a GPU.
//!
//! It behaves the way a GPU does where it matters for splitting: it reports some free
//! memory to the planner but enforces its own budget (which may be lower, as when another
//! process took memory after the driver was asked). Its backend
//! ([`crate::backend::host`]) holds its own copy of the weights of its blocks, their KV
//! caches and its own scratch, and computes with the CPU kernels on identical bytes in the
//! same order: its results are the CPU's, bit for bit.

use crate::plan::{parse_bytes, Device, DeviceKind};

/// A posing accelerator: what it tells the planner and what it really allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PseudoAccel {
    pub name: String,
    /// Free memory it reports (what the planner plans with).
    pub reports_free: u64,
    /// What it lets the runner allocate; an allocation beyond it fails.
    pub budget: u64,
    /// Threads of its own that it computes on (`None`: the CPU's, as one more user of
    /// them). With its own, it works while the CPU works, as a GPU would.
    pub threads: Option<usize>,
}

impl PseudoAccel {
    /// A device whose budget is what it reports.
    pub fn new(name: impl Into<String>, free: u64) -> PseudoAccel {
        PseudoAccel {
            name: name.into(),
            reports_free: free,
            budget: free,
            threads: None,
        }
    }

    /// A device that reports `reports_free` but allows only `budget`.
    pub fn capped(name: impl Into<String>, reports_free: u64, budget: u64) -> PseudoAccel {
        PseudoAccel {
            name: name.into(),
            reports_free,
            budget,
            threads: None,
        }
    }

    /// Parses `--pose-gpus`: a comma-separated list of devices, each `SIZE` (reports and
    /// allows SIZE) or `REPORTED:ALLOWED` (reports more than it allows), optionally with
    /// `@THREADS` of its own to compute on, named ACCEL0, ACCEL1, ...: `64MiB,64MiB`,
    /// `1GiB:100MiB` or `2GiB@1`.
    pub fn parse_list(text: &str) -> Result<Vec<PseudoAccel>, String> {
        let bad = |item: &str, why: String| format!("--pose-gpus '{text}': '{item}': {why}");
        let mut out = Vec::new();
        for (i, item) in text.split(',').map(str::trim).enumerate() {
            let (sizes, threads) = match item.split_once('@') {
                Some((s, t)) => match t.parse::<usize>() {
                    Ok(t) if t > 0 => (s, Some(t)),
                    _ => return Err(bad(item, format!("'{t}' is not a thread count ≥ 1"))),
                },
                None => (item, None),
            };
            let (reports, allows) = sizes.split_once(':').unwrap_or((sizes, sizes));
            let size = |t: &str| parse_bytes(t).map_err(|e| bad(item, e.to_string()));
            out.push(PseudoAccel {
                threads,
                ..PseudoAccel::capped(format!("ACCEL{i}"), size(reports)?, size(allows)?)
            });
        }
        Ok(out)
    }

    /// The device as the planner sees it.
    pub fn plan_device(&self) -> Device {
        Device {
            name: self.name.clone(),
            kind: DeviceKind::Gpu,
            free_bytes: self.reports_free,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pose_gpus_lists() {
        let l = PseudoAccel::parse_list("64MiB, 1GiB:100MiB").unwrap();
        assert_eq!(l[0], PseudoAccel::new("ACCEL0", 64 << 20));
        assert_eq!(l[1], PseudoAccel::capped("ACCEL1", 1 << 30, 100 << 20));
        let e = PseudoAccel::parse_list("64MiB,,1GiB").unwrap_err();
        assert!(e.contains("--pose-gpus") && e.contains("''"), "{e}");
        assert!(PseudoAccel::parse_list("1GiB:x")
            .unwrap_err()
            .contains("'1GiB:x'"));
        let l = PseudoAccel::parse_list("2GiB@1,1GiB:512MiB@3").unwrap();
        assert_eq!((l[0].budget, l[0].threads), (2 << 30, Some(1)));
        assert_eq!((l[1].budget, l[1].threads), (512 << 20, Some(3)));
        for bad in ["1GiB@0", "1GiB@x", "1GiB@"] {
            let e = PseudoAccel::parse_list(bad).unwrap_err();
            assert!(e.contains("thread count"), "{e}");
        }
    }
}
