//! The bottom of the engine's stack: the allocation ledger. Every buffer a backend holds
//! (weights, KV cache, scratch) is reserved here first, against its device's budget, and
//! released when it is dropped.
//!
//! The ledger is what the plan is checked against (bytes allocated per device and kind ==
//! bytes planned) and what makes an accelerator's memory finite: a reservation over its
//! budget fails with [`AllocError`], which is how the loader learns that a plan did not fit
//! after all ([`crate::load`]). It also counts the activation copies that cross into each
//! device. It knows devices only by [`DeviceId`]; what they are is the layers above.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use crate::plan::Bytes;

/// A device of a run: the CPU, or the i-th accelerator (a CUDA GPU or a CPU device posing
/// as one; the plan's device i + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceId {
    Cpu,
    Accel(u32),
}

impl DeviceId {
    /// The device a plan's device index stands for: 0 is the CPU, i > 0 the accelerator
    /// i − 1.
    pub fn from_plan_index(plan_index: usize) -> DeviceId {
        match plan_index {
            0 => DeviceId::Cpu,
            i => DeviceId::Accel(i as u32 - 1),
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Cpu => f.write_str("CPU"),
            DeviceId::Accel(i) => write!(f, "ACCEL{i}"),
        }
    }
}

/// What a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Weights. On the CPU these are the tensors it reads from the memory-mapped file (not
    /// allocated, but the plan counts them there); on an accelerator, its own copies.
    Weights,
    Kv,
    Scratch,
}

impl fmt::Display for BufferKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BufferKind::Weights => "weights",
            BufferKind::Kv => "KV cache",
            BufferKind::Scratch => "scratch",
        })
    }
}

/// What one device holds now, and what crossed into it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceUsage {
    pub weights: u64,
    pub kv: u64,
    pub scratch: u64,
    /// Explicit copies into this device at a boundary (activations, or logits to the host).
    pub copies_in: u64,
    pub bytes_in: u64,
}

impl DeviceUsage {
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.scratch
    }

    fn slot(&mut self, kind: BufferKind) -> &mut u64 {
        match kind {
            BufferKind::Weights => &mut self.weights,
            BufferKind::Kv => &mut self.kv,
            BufferKind::Scratch => &mut self.scratch,
        }
    }
}

/// A buffer a device could not take: over its budget, or refused by its allocator (the
/// driver, or the operating system) although the budget allowed it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{}", self.describe())]
pub struct AllocError {
    pub device: DeviceId,
    pub name: String,
    pub kind: BufferKind,
    /// What the buffer is for, e.g. "KV cache of block 3".
    pub what: String,
    pub requested: u64,
    pub in_use: u64,
    pub budget: u64,
    /// Why the allocator refused memory the budget allowed (`None`: over budget).
    pub refused: Option<String>,
}

impl AllocError {
    fn describe(&self) -> String {
        let head = format!(
            "allocation of {} ({}) on {} failed",
            Bytes(self.requested),
            self.what,
            self.name
        );
        match &self.refused {
            Some(why) => format!("{head}: {why} ({} in use)", Bytes(self.in_use)),
            None => format!(
                "{head}: {} in use + {} > its budget {}",
                Bytes(self.in_use),
                Bytes(self.requested),
                Bytes(self.budget)
            ),
        }
    }
}

#[derive(Debug)]
struct Account {
    name: String,
    /// `None`: no limit (the host; its weights are mapped and its buffers small).
    budget: Option<u64>,
    usage: DeviceUsage,
}

/// Shared by every buffer of a run; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger(Arc<Mutex<BTreeMap<DeviceId, Account>>>);

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// A ledger with the CPU (no budget) and no accelerators.
    pub fn new() -> Ledger {
        let l = Ledger(Arc::new(Mutex::new(BTreeMap::new())));
        l.add_device(DeviceId::Cpu, "CPU", None);
        l
    }

    /// Adds (or replaces the budget of) a device.
    pub fn add_device(&self, id: DeviceId, name: &str, budget: Option<u64>) {
        let mut m = self.lock();
        let acc = m.entry(id).or_insert_with(|| Account {
            name: name.to_string(),
            budget,
            usage: DeviceUsage::default(),
        });
        acc.name = name.to_string();
        acc.budget = budget;
    }

    pub fn name(&self, id: DeviceId) -> String {
        self.lock()
            .get(&id)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// Reserves `bytes` of `kind` on `device`, or fails if that would exceed its budget
    /// (or the device is unknown: nothing can be allocated there).
    pub fn reserve(
        &self,
        device: DeviceId,
        kind: BufferKind,
        bytes: u64,
        what: impl FnOnce() -> String,
    ) -> Result<Reservation, AllocError> {
        let mut m = self.lock();
        let Some(acc) = m.get_mut(&device) else {
            return Err(AllocError {
                device,
                name: device.to_string(),
                kind,
                what: what(),
                requested: bytes,
                in_use: 0,
                budget: 0,
                refused: None,
            });
        };
        let in_use = acc.usage.total();
        if let Some(budget) = acc.budget {
            if in_use.saturating_add(bytes) > budget {
                return Err(AllocError {
                    device,
                    name: acc.name.clone(),
                    kind,
                    what: what(),
                    requested: bytes,
                    in_use,
                    budget,
                    refused: None,
                });
            }
        }
        *acc.usage.slot(kind) += bytes;
        Ok(Reservation {
            ledger: self.clone(),
            device,
            kind,
            bytes,
        })
    }

    /// The error for `bytes` of `kind` that `device`'s allocator refused (`why`) although
    /// the ledger allowed them: the device holds less than it reported, so the loader
    /// re-plans as for a budget overrun (the budget taken as what is in use).
    pub fn refusal(
        &self,
        device: DeviceId,
        kind: BufferKind,
        what: &str,
        bytes: u64,
        why: &str,
    ) -> AllocError {
        let in_use = self.usage(device).total();
        AllocError {
            device,
            name: self.name(device),
            kind,
            what: what.to_string(),
            requested: bytes,
            in_use,
            budget: in_use,
            refused: Some(why.to_string()),
        }
    }

    /// Counts one explicit copy of `bytes` into `device`.
    pub fn count_copy(&self, device: DeviceId, bytes: u64) {
        if let Some(acc) = self.lock().get_mut(&device) {
            acc.usage.copies_in += 1;
            acc.usage.bytes_in += bytes;
        }
    }

    /// Zeroes the copy counters (to count the copies of one forward call).
    pub fn reset_copies(&self) {
        for acc in self.lock().values_mut() {
            acc.usage.copies_in = 0;
            acc.usage.bytes_in = 0;
        }
    }

    pub fn usage(&self, device: DeviceId) -> DeviceUsage {
        self.lock()
            .get(&device)
            .map(|a| a.usage)
            .unwrap_or_default()
    }

    /// Every device with its usage, CPU first.
    pub fn all(&self) -> Vec<(DeviceId, String, DeviceUsage)> {
        self.lock()
            .iter()
            .map(|(id, a)| (*id, a.name.clone(), a.usage))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<DeviceId, Account>> {
        // A panic while the lock was held leaves plain counters: still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bytes held on a device; released from the ledger when dropped, with the buffer it
/// accounts for.
#[derive(Debug)]
pub struct Reservation {
    ledger: Ledger,
    device: DeviceId,
    kind: BufferKind,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(acc) = self.ledger.lock().get_mut(&self.device) {
            let slot = acc.usage.slot(self.kind);
            *slot = slot.saturating_sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_enforced_and_drops_release() {
        let l = Ledger::new();
        let a = DeviceId::Accel(0);
        l.add_device(a, "ACCEL0", Some(100));
        let w = l
            .reserve(a, BufferKind::Weights, 60, || "w".into())
            .unwrap();
        let e = l
            .reserve(a, BufferKind::Kv, 41, || "KV cache of block 1".into())
            .unwrap_err();
        assert_eq!((e.in_use, e.requested, e.budget), (60, 41, 100));
        assert!(e.to_string().contains("ACCEL0") && e.to_string().contains("block 1"));
        let k = l.reserve(a, BufferKind::Kv, 40, || "k".into()).unwrap();
        assert_eq!(l.usage(a).total(), 100);
        drop(w);
        assert_eq!(
            l.usage(a),
            DeviceUsage {
                kv: 40,
                ..Default::default()
            }
        );
        drop(k);
        assert_eq!(l.usage(a).total(), 0);
        // The CPU has no budget; an unknown device cannot hold anything.
        assert!(l
            .reserve(DeviceId::Cpu, BufferKind::Kv, u64::MAX / 2, String::new)
            .is_ok());
        assert!(l
            .reserve(DeviceId::Accel(9), BufferKind::Kv, 1, String::new)
            .is_err());
    }
}
