//! Tensor overrides as llama.cpp spells them: `-ot/--override-tensor REGEX=DEVICE[,…]`,
//! `--cpu-moe` (every routed expert on the CPU) and `--n-cpu-moe N` (those of the first N
//! blocks). Each tensor goes where the first rule whose pattern it contains says (the
//! pattern is searched for in the tensor's name, as llama.cpp's `std::regex_search` does).
//!
//! Strata places parts of blocks, not single tensors (see [`Part`]): a part goes where the
//! rules send its tensors, those no rule names following (the plan's warnings say so), and
//! rules that send one part's tensors to two devices are refused, naming both.

use regex::Regex;

use super::cost::Role;
use super::devices::Device;
use super::error::PlanError;
use super::model::PlanModel;
use super::parts::Part;

/// One `-ot` rule: tensors whose name contains a match of `pattern` go to `device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorOverride {
    pub pattern: String,
    /// `CPU`, a device name as the plan shows it (`CUDA1`), or `GPU<i>`.
    pub device: String,
}

impl TensorOverride {
    /// Parses one `-ot` value: `REGEX=DEVICE[,REGEX=DEVICE…]`.
    pub fn parse_list(text: &str) -> Result<Vec<TensorOverride>, PlanError> {
        text.split(',')
            .map(|rule| {
                let (pattern, device) =
                    rule.rsplit_once('=')
                        .ok_or_else(|| PlanError::BadOverride {
                            text: text.to_string(),
                            why: format!("'{rule}' is not REGEX=DEVICE"),
                        })?;
                if pattern.is_empty() || device.trim().is_empty() {
                    return Err(PlanError::BadOverride {
                        text: text.to_string(),
                        why: format!("'{rule}' needs a pattern and a device"),
                    });
                }
                Ok(TensorOverride {
                    pattern: pattern.to_string(),
                    device: device.trim().to_string(),
                })
            })
            .collect()
    }

    /// `--cpu-moe`: every block's routed experts on the CPU.
    pub fn cpu_moe() -> TensorOverride {
        TensorOverride {
            pattern: r"\.ffn_(up|down|gate)_exps".into(),
            device: "CPU".into(),
        }
    }

    /// `--n-cpu-moe N`: the routed experts of blocks 0..N on the CPU.
    pub fn n_cpu_moe(n: usize) -> Vec<TensorOverride> {
        (0..n)
            .map(|i| TensorOverride {
                pattern: format!(r"^blk\.{i}\.ffn_(up|down|gate)_exps"),
                device: "CPU".into(),
            })
            .collect()
    }
}

/// The rules of the flags, in llama.cpp's order: every `-ot` value as given, then
/// `--cpu-moe`, then `--n-cpu-moe N`.
pub fn from_flags(
    ot: &[String],
    cpu_moe: bool,
    n_cpu_moe: usize,
) -> Result<Vec<TensorOverride>, PlanError> {
    let mut rules = Vec::new();
    for text in ot {
        rules.extend(TensorOverride::parse_list(text)?);
    }
    if cpu_moe {
        rules.push(TensorOverride::cpu_moe());
    }
    rules.extend(TensorOverride::n_cpu_moe(n_cpu_moe));
    Ok(rules)
}

/// The devices the rules pin parts to (indices into the plan's devices); `None`: the
/// planner decides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pins {
    /// Per block: attention, FFN, routed experts.
    pub blocks: Vec<[Option<usize>; 3]>,
    pub output: Option<usize>,
    /// Said in the plan's warnings: tensors that no rule names moved with their part.
    pub followed: Option<String>,
}

impl Pins {
    pub fn part(&self, i: usize, part: Part) -> Option<usize> {
        self.blocks[i][part as usize]
    }
}

/// The device a rule names, by index into `devices` (the CPU first).
fn device_index(name: &str, devices: &[Device]) -> Option<usize> {
    if let Some(d) = devices
        .iter()
        .position(|d| d.name.eq_ignore_ascii_case(name))
    {
        return Some(d);
    }
    let upper = name.to_ascii_uppercase();
    let n = upper
        .strip_prefix("CUDA")
        .or_else(|| upper.strip_prefix("GPU"))?
        .parse::<usize>()
        .ok()?;
    (n + 1 < devices.len()).then_some(n + 1)
}

/// Applies `rules` to every tensor of `model`.
pub fn resolve(
    model: &PlanModel,
    devices: &[Device],
    rules: &[TensorOverride],
) -> Result<Pins, PlanError> {
    let mut pins = Pins {
        blocks: vec![[None; 3]; model.n_layer],
        output: None,
        followed: None,
    };
    if rules.is_empty() {
        return Ok(pins);
    }
    let compiled = rules
        .iter()
        .map(|r| {
            let re = Regex::new(&r.pattern).map_err(|e| PlanError::BadOverride {
                text: format!("{}={}", r.pattern, r.device),
                why: e.to_string(),
            })?;
            let d = device_index(&r.device, devices).ok_or_else(|| PlanError::BadOverride {
                text: format!("{}={}", r.pattern, r.device),
                why: format!(
                    "no device '{}' (devices: {})",
                    r.device,
                    devices
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
            Ok((re, d, r))
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    // Where the rules put each part's tensors: the devices named, the first tensor sent to
    // each, and the tensors no rule names.
    #[derive(Default)]
    struct Seen<'a> {
        to: Vec<(usize, &'a str)>,
        unnamed: Vec<&'a str>,
    }
    let mut seen: std::collections::BTreeMap<(Role, Option<Part>), Seen> = Default::default();
    for t in &model.tensors {
        let hit = compiled.iter().find(|(re, _, _)| re.is_match(&t.name));
        if t.role == Role::Embedding {
            if let Some((_, d, r)) = hit {
                if *d != 0 {
                    return Err(PlanError::BadOverride {
                        text: format!("{}={}", r.pattern, r.device),
                        why: format!(
                            "'{}' stays on the CPU, where the embedding lookup runs",
                            t.name
                        ),
                    });
                }
            }
            continue;
        }
        let part = Part::of(&t.name).map(|(_, p)| p);
        let s = seen.entry((t.role, part)).or_default();
        match hit {
            Some((_, d, _)) if !s.to.iter().any(|(x, _)| x == d) => s.to.push((*d, &t.name)),
            Some(_) => {}
            None => s.unnamed.push(&t.name),
        }
    }
    let all_rules = || {
        rules
            .iter()
            .map(|r| format!("{}={}", r.pattern, r.device))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut followed = Vec::new();
    for ((role, part), s) in &seen {
        let what = || match part {
            Some(p) => format!("a block's {} ({})", p.name(), part_members(*p)),
            None => "the output layer (output_norm, output)".into(),
        };
        let to = match s.to.as_slice() {
            [] => continue,
            [(d, _)] => *d,
            [(a, first), (b, other), ..] => {
                return Err(PlanError::BadOverride {
                    text: all_rules(),
                    why: format!(
                        "the rules move '{first}' to {} but '{other}' to {}: the tensors of {} \
                         move together",
                        devices[*a].name,
                        devices[*b].name,
                        what()
                    ),
                })
            }
        };
        followed.extend(s.unnamed.iter().map(|n| (n.to_string(), to)));
        match (role, part) {
            (Role::Block(i), Some(p)) => pins.blocks[*i][*p as usize] = Some(to),
            _ => pins.output = Some(to),
        }
    }
    if let Some((first, d)) = followed.first() {
        pins.followed = Some(format!(
            "-ot '{}': {} tensor(s) no rule names follow the part they belong to (a block's \
             attention, FFN and routed experts each move whole), e.g. '{first}' to {}",
            all_rules(),
            followed.len(),
            devices[*d].name
        ));
    }
    Ok(pins)
}

fn part_members(p: Part) -> &'static str {
    match p {
        Part::Attention => "attn_*",
        Part::Ffn => "ffn_norm, ffn_gate_inp, exp_probs_b, *_shexp, ffn_gate/up/down",
        Part::Experts => "ffn_gate_exps, ffn_up_exps, ffn_down_exps",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        let r = TensorOverride::parse_list(r"exps=CPU,blk\.(3|4)\.ffn_.*=CUDA1").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].pattern, r"blk\.(3|4)\.ffn_.*");
        assert_eq!(r[1].device, "CUDA1");
        for bad in ["exps", "=CPU", "exps=", "a=CPU,b"] {
            let e = TensorOverride::parse_list(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn device_names() {
        let devs = vec![Device::cpu(1), Device::gpu(0, 1), Device::gpu(1, 1)];
        assert_eq!(device_index("cpu", &devs), Some(0));
        assert_eq!(device_index("CUDA1", &devs), Some(2));
        assert_eq!(device_index("gpu0", &devs), Some(1));
        assert_eq!(device_index("CUDA2", &devs), None);
        assert_eq!(device_index("disk", &devs), None);
    }
}
