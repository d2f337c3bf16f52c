//! Which instruction-set level the kernels run at, decided once per process.
//!
//! The level is the best one the CPU has, unless `STRATA_ISA` names another
//! (`reference|portable|avx2|avx512|vnni`) or a test/bench calls [`force`]. Every kernel
//! entry point also has an `_isa` twin taking the level explicitly, so tests can cover every
//! level side by side without touching the process-wide choice.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level, in increasing order of what it needs from the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Scalar code written from the block structs: the twin every fast path is tested against.
    Reference,
    /// `wide` SIMD: serves any CPU.
    Portable,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F + BW (+ VL), on top of AVX2.
    Avx512,
    /// AVX-512 VNNI (`vpdpbusd`/`vpdpwssd`), on top of AVX-512.
    Vnni,
}

/// Asked for a level the CPU cannot run, or named one that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error("ISA level {0} is not supported by this CPU")]
    Unsupported(Isa),
    #[error("unknown ISA level {0:?} (expected reference, portable, avx2, avx512 or vnni)")]
    Unknown(String),
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Reference,
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Vnni,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Isa::Reference => "reference",
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Vnni => "vnni",
        }
    }

    /// Parses a level name as `STRATA_ISA` spells it (case-insensitive).
    pub fn parse(name: &str) -> Result<Isa, IsaError> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| IsaError::Unknown(name.to_string()))
    }

    /// Whether this CPU can run code of this level.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Reference | Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Vnni => Isa::Avx512.is_supported() && is_x86_feature_detected!("avx512vnni"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The levels this CPU can run, lowest first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The best level this CPU can run.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.is_supported())
            .unwrap_or(Isa::Portable)
    }

    const fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<Isa> {
        Isa::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// 0 = not decided yet; otherwise `Isa::code`.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The level every kernel entry point without an explicit level uses. Decided on first use:
/// `STRATA_ISA` if set and supported (an unsupported or unknown name is reported on stderr
/// once and ignored), else the best level the CPU has.
pub fn active() -> Isa {
    if let Some(isa) = Isa::from_code(ACTIVE.load(Ordering::Relaxed)) {
        return isa;
    }
    let chosen = match std::env::var("STRATA_ISA") {
        Ok(name) => match Isa::parse(&name) {
            Ok(isa) if isa.is_supported() => isa,
            Ok(isa) => {
                eprintln!(
                    "STRATA_ISA={name}: {}; using {}",
                    IsaError::Unsupported(isa),
                    Isa::best()
                );
                Isa::best()
            }
            Err(e) => {
                eprintln!("STRATA_ISA: {e}; using {}", Isa::best());
                Isa::best()
            }
        },
        Err(_) => Isa::best(),
    };
    // A racing first call decides the same way; whichever store lands first wins.
    match ACTIVE.compare_exchange(0, chosen.code(), Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => chosen,
        Err(code) => Isa::from_code(code).unwrap_or(chosen),
    }
}

/// Makes `isa` the process-wide level (for tests and benches). Errors if the CPU lacks it.
pub fn force(isa: Isa) -> Result<(), IsaError> {
    if !isa.is_supported() {
        return Err(IsaError::Unsupported(isa));
    }
    ACTIVE.store(isa.code(), Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Ok(isa));
            assert_eq!(Isa::from_code(isa.code()), Some(isa));
        }
        assert!(Isa::parse("sse9").is_err());
        assert_eq!(Isa::from_code(0), None);
    }

    #[test]
    fn reference_and_portable_always_run() {
        assert!(Isa::Reference.is_supported() && Isa::Portable.is_supported());
        assert!(Isa::best().is_supported());
    }
}
