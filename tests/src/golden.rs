//! Loader for the golden data under `golden/data/` (made by `golden/gen/*.py` with PyPI
//! `gguf`; see `golden/README.md`).
//!
//! Every array is one raw little-endian file `<name>.bin`; the folder's `MANIFEST.txt` has one
//! line per file: `<file> <dtype> <dim,dim,...> key=value ...` (dtype `u8`, `f32` or `f64`,
//! `#` starts a comment). [`load`] checks the file's length against dtype and shape.
//!
//! The typed cases:
//! - [`dequant_case`]: random blocks of a format and gguf's f32 dequantization of them.
//! - [`quant_case`]: f32 input (random plus crafted ties) and gguf's quantized bytes
//!   (BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
//! - [`matvec_cases`]: per weight format, a few shapes of random W (bytes), x (f32),
//!   y = W·x in f64 from gguf's dequantized W, and y_q, the product the ggml way (x quantized
//!   to the weight's activation format first), with that quantized x as bytes.
//!
//! ```no_run
//! use strata_kernels_cpu::GgmlType;
//! use strata_tests::golden;
//!
//! let ty = GgmlType::Q4_K;
//! for case in golden::matvec_cases(ty).unwrap() {
//!     // case.w: rows × (cols / 256) blocks, case.x: cols values
//!     assert_eq!(case.w.len(), case.rows * case.cols / 256 * ty.type_size());
//!     let row0: f64 = case.y[0]; // exact W·x (f64 from f32 weights)
//!     let row0_q: f64 = case.y_q[0]; // with x quantized to Q8_K (bytes in case.xq)
//!     let _scale = case.abs_dot[0]; // Σ|w_i·x_i|, to size a tolerance
//!     let _ = (row0, row0_q);
//! }
//! let d = golden::dequant_case(GgmlType::Q6_K).unwrap();
//! assert_eq!(d.values.len(), d.blocks.len() / 210 * 256);
//! println!("block 7 is {}", d.label(7)); // e.g. "d=-0"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::PathBuf;

use strata_kernels_cpu::GgmlType;

/// What went wrong reading golden data: names the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenError(pub String);

impl fmt::Display for GoldenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GoldenError {}

fn err<T>(msg: impl Into<String>) -> Result<T, GoldenError> {
    Err(GoldenError(msg.into()))
}

/// Element type of a golden array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U8,
    F32,
    F64,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        match s {
            "u8" => Some(Dtype::U8),
            "f32" => Some(Dtype::F32),
            "f64" => Some(Dtype::F64),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// One golden array: its manifest line and its bytes.
#[derive(Debug, Clone)]
pub struct Array {
    /// Path relative to `golden/data/`, e.g. `formats/Q4_0.dequant.blocks.bin`.
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// The `key=value` attributes of the manifest line.
    pub attrs: BTreeMap<String, String>,
    pub bytes: Vec<u8>,
}

impl Array {
    /// The attribute `key`, or an error naming the file.
    pub fn attr(&self, key: &str) -> Result<&str, GoldenError> {
        match self.attrs.get(key) {
            Some(v) => Ok(v),
            None => err(format!("{}: manifest line has no `{key}=`", self.name)),
        }
    }

    /// The attribute `key` parsed as a number.
    pub fn attr_usize(&self, key: &str) -> Result<usize, GoldenError> {
        let v = self.attr(key)?;
        v.parse()
            .or_else(|_| err(format!("{}: `{key}={v}` is not a number", self.name)))
    }

    fn expect(&self, dtype: Dtype) -> Result<(), GoldenError> {
        if self.dtype != dtype {
            return err(format!(
                "{}: dtype is {:?}, expected {dtype:?}",
                self.name, self.dtype
            ));
        }
        Ok(())
    }

    pub fn to_u8(&self) -> Result<Vec<u8>, GoldenError> {
        self.expect(Dtype::U8)?;
        Ok(self.bytes.clone())
    }

    /// The values as f32, bit for bit (NaN payloads kept).
    pub fn to_f32(&self) -> Result<Vec<f32>, GoldenError> {
        self.expect(Dtype::F32)?;
        Ok(self
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn to_f64(&self) -> Result<Vec<f64>, GoldenError> {
        self.expect(Dtype::F64)?;
        Ok(self
            .bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks_exact(8) gives 8 bytes")))
            .collect())
    }

    /// The `labels=` attribute: `label:start-end` runs over the first dimension.
    pub fn labels(&self) -> Result<Labels, GoldenError> {
        Labels::parse(&self.name, self.attr("labels")?)
    }
}

/// Names of the blocks (or elements) of a golden input: which are random and which are a
/// crafted case (a rounding tie, d = −0, ...). Parsed from `label:start-end,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<(String, std::ops::Range<usize>)>);

impl Labels {
    fn parse(file: &str, s: &str) -> Result<Labels, GoldenError> {
        let mut runs = Vec::new();
        for run in s.split(',') {
            let parsed = run.rsplit_once(':').and_then(|(label, range)| {
                let (a, b) = range.split_once('-')?;
                Some((label.to_string(), a.parse().ok()?..b.parse().ok()?))
            });
            match parsed {
                Some(r) => runs.push(r),
                None => return err(format!("{file}: bad label run `{run}`")),
            }
        }
        Ok(Labels(runs))
    }

    /// The label of block `i` ("?" if none covers it).
    pub fn of(&self, i: usize) -> &str {
        self.0
            .iter()
            .find(|(_, r)| r.contains(&i))
            .map_or("?", |(l, _)| l.as_str())
    }

    /// The range of blocks labelled `label`, if any.
    pub fn range(&self, label: &str) -> Option<std::ops::Range<usize>> {
        self.0
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, r)| r.clone())
    }
}

/// `golden/data/`.
pub fn data_dir() -> PathBuf {
    crate::root().join("golden").join("data")
}

/// Loads `golden/data/<name>` (e.g. `"formats/Q4_0.dequant.blocks.bin"`), checked against its
/// folder's `MANIFEST.txt`.
pub fn load(name: &str) -> Result<Array, GoldenError> {
    let path = data_dir().join(name);
    let (folder, file) = match name.rsplit_once('/') {
        Some((d, f)) => (data_dir().join(d), f),
        None => (data_dir(), name),
    };
    let manifest_path = folder.join("MANIFEST.txt");
    let manifest = fs::read_to_string(&manifest_path)
        .or_else(|e| err(format!("{}: {e}", manifest_path.display())))?;
    let line = manifest
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with('#') && l.split_whitespace().next() == Some(file));
    let Some(line) = line else {
        return err(format!("{}: no line for {file}", manifest_path.display()));
    };
    let mut fields = line.split_whitespace().skip(1);
    let bad = |what: &str| {
        GoldenError(format!(
            "{}: line for {file}: {what}",
            manifest_path.display()
        ))
    };
    let dtype = fields
        .next()
        .and_then(Dtype::parse)
        .ok_or_else(|| bad("bad dtype"))?;
    let shape = fields
        .next()
        .ok_or_else(|| bad("no shape"))?
        .split(',')
        .map(|d| d.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("bad shape"))?;
    let mut attrs = BTreeMap::new();
    for kv in fields {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad("attribute without `=`"))?;
        attrs.insert(k.to_string(), v.to_string());
    }
    let bytes = fs::read(&path).or_else(|e| err(format!("{}: {e}", path.display())))?;
    let expected = shape.iter().product::<usize>() * dtype.size();
    if bytes.len() != expected {
        return err(format!(
            "{}: {} bytes, manifest says {shape:?} of {dtype:?} = {expected}",
            path.display(),
            bytes.len()
        ));
    }
    Ok(Array {
        name: name.to_string(),
        dtype,
        shape,
        attrs,
        bytes,
    })
}

/// Random blocks of `ty` and the f32 values `gguf.quants.dequantize` gives for them.
#[derive(Debug, Clone)]
pub struct DequantCase {
    pub ty: GgmlType,
    /// Whole blocks, `type_size` bytes each (for F32/F16/BF16 one element per "block").
    pub blocks: Vec<u8>,
    /// `block_size` values per block.
    pub values: Vec<f32>,
    /// What each block is: "random", "d=-0", "special", ...
    pub labels: Labels,
}

impl DequantCase {
    pub fn label(&self, block: usize) -> &str {
        self.labels.of(block)
    }
}

/// The dequantize golden case of `ty` (every weight format has one).
pub fn dequant_case(ty: GgmlType) -> Result<DequantCase, GoldenError> {
    let blocks = load(&format!("formats/{ty}.dequant.blocks.bin"))?;
    let values = load(&format!("formats/{ty}.dequant.values.bin"))?;
    let labels = blocks.labels()?;
    check_type(&blocks, ty)?;
    let case = DequantCase {
        ty,
        blocks: blocks.to_u8()?,
        values: values.to_f32()?,
        labels,
    };
    check_sizes(ty, &blocks.name, case.blocks.len(), case.values.len())?;
    Ok(case)
}

/// f32 input and the bytes `gguf.quants.quantize` gives for it.
#[derive(Debug, Clone)]
pub struct QuantCase {
    pub ty: GgmlType,
    pub input: Vec<f32>,
    pub blocks: Vec<u8>,
    /// What each block is: "normal*1.0", "ties_neg_max", "all_zero", "fma_sensitive", ...
    pub labels: Labels,
}

impl QuantCase {
    pub fn label(&self, block: usize) -> &str {
        self.labels.of(block)
    }
}

/// The formats `gguf.quants` can quantize, which therefore have a [`quant_case`].
pub const QUANT_TYPES: [GgmlType; 6] = [
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

/// The quantize golden case of `ty` (one of [`QUANT_TYPES`]).
pub fn quant_case(ty: GgmlType) -> Result<QuantCase, GoldenError> {
    let input = load(&format!("formats/{ty}.quant.input.bin"))?;
    let blocks = load(&format!("formats/{ty}.quant.blocks.bin"))?;
    check_type(&input, ty)?;
    let case = QuantCase {
        ty,
        input: input.to_f32()?,
        blocks: blocks.to_u8()?,
        labels: input.labels()?,
    };
    check_sizes(ty, &blocks.name, case.blocks.len(), case.input.len())?;
    Ok(case)
}

/// One y = W·x case.
#[derive(Debug, Clone)]
pub struct MatvecCase {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// W, row-major: `rows` rows of `cols / block_size` blocks.
    pub w: Vec<u8>,
    pub x: Vec<f32>,
    /// The activation format x is quantized to for `y_q` (F32 for float weights).
    pub act: GgmlType,
    /// x quantized to `act`, ggml's block bytes (Q8_1: d, s, qs; Q8_K: f32 d, qs, i16
    /// bsums); for `act` = F32 the bytes of x itself.
    pub xq: Vec<u8>,
    /// Σ_i w_i·x_i in f64 from gguf's dequantized (f32) W and the f32 x.
    pub y: Vec<f64>,
    /// The product the ggml way: x quantized to `act`, then the block formula in f64 (see
    /// golden/README.md). Equals `y` for F32/F16/BF16 weights.
    pub y_q: Vec<f64>,
    /// Σ_i |w_i·x_i| in f64: the scale of the rounding error of any summation order.
    pub abs_dot: Vec<f64>,
}

/// The matvec golden cases of weight format `ty`, smallest first.
pub fn matvec_cases(ty: GgmlType) -> Result<Vec<MatvecCase>, GoldenError> {
    let manifest_path = data_dir().join("matvec").join("MANIFEST.txt");
    let manifest = fs::read_to_string(&manifest_path)
        .or_else(|e| err(format!("{}: {e}", manifest_path.display())))?;
    let prefix = format!("{ty}.");
    let mut names: Vec<String> = manifest
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|f| f.starts_with(&prefix) && f.ends_with(".w.bin"))
        .map(|f| f.trim_end_matches(".w.bin").to_string())
        .collect();
    names.sort_by_key(|n| {
        let rc = n.rsplit('.').next().unwrap_or("");
        rc.split_once('x')
            .map(|(r, c)| r.parse().unwrap_or(0usize) * c.parse().unwrap_or(0usize))
    });
    if names.is_empty() {
        return err(format!(
            "{}: no matvec case for {ty}",
            manifest_path.display()
        ));
    }
    names.iter().map(|n| matvec_case(ty, n)).collect()
}

/// An expert stack of format `ty` (golden/data/moe/experts/): all experts' rows as one
/// matrix (`w` of `experts × rows` rows), and per token t and choice k the case
/// `y = W[ids[t][k]]·x[t]` with that expert's rows as its `w`.
#[derive(Debug, Clone)]
pub struct ExpertCase {
    pub experts: usize,
    pub stack: Vec<u8>,
    /// `(token, choice, expert, the case)`.
    pub chosen: Vec<(usize, usize, usize, MatvecCase)>,
}

pub fn expert_case(ty: GgmlType) -> Result<ExpertCase, GoldenError> {
    let w = load(&format!("moe/experts/{ty}.w.bin"))?;
    check_type(&w, ty)?;
    let (experts, rows, cols) = (
        w.attr_usize("experts")?,
        w.attr_usize("rows")?,
        w.attr_usize("cols")?,
    );
    let act_name = w.attr("act")?;
    let act = GgmlType::from_name(act_name)
        .ok_or_else(|| GoldenError(format!("{}: unknown act={act_name}", w.name)))?;
    let stack = w.to_u8()?;
    check_sizes(ty, &w.name, stack.len(), experts * rows * cols)?;
    let x = load(&format!("moe/experts/{ty}.x.bin"))?.to_f32()?;
    let xq = load(&format!("moe/experts/{ty}.xq.bin"))?.to_u8()?;
    let ids = load(&format!("moe/experts/{ty}.ids.bin"))?.to_u8()?;
    let [y, y_q, abs_dot] = ["y", "y_q", "abs_dot"]
        .map(|k| load(&format!("moe/experts/{ty}.{k}.bin")).and_then(|a| a.to_f64()));
    let (y, y_q, abs_dot) = (y?, y_q?, abs_dot?);
    let n = x.len() / cols;
    let k = ids.len() / n;
    if x.len() != n * cols || y.len() != n * k * rows || xq.len() % n != 0 {
        return err(format!(
            "moe/experts/{ty}: sizes do not fit {n} tokens × {k} choices"
        ));
    }
    let (per_expert, xq_row) = (stack.len() / experts, xq.len() / n);
    let mut chosen = Vec::new();
    for t in 0..n {
        for j in 0..k {
            let e = ids[t * k + j] as usize;
            if e >= experts {
                return err(format!("moe/experts/{ty}: expert id {e} of {experts}"));
            }
            let at = (t * k + j) * rows..(t * k + j + 1) * rows;
            let case = MatvecCase {
                ty,
                rows,
                cols,
                act,
                w: stack[e * per_expert..(e + 1) * per_expert].to_vec(),
                x: x[t * cols..(t + 1) * cols].to_vec(),
                xq: xq[t * xq_row..(t + 1) * xq_row].to_vec(),
                y: y[at.clone()].to_vec(),
                y_q: y_q[at.clone()].to_vec(),
                abs_dot: abs_dot[at].to_vec(),
            };
            chosen.push((t, j, e, case));
        }
    }
    Ok(ExpertCase {
        experts,
        stack,
        chosen,
    })
}

fn matvec_case(ty: GgmlType, stem: &str) -> Result<MatvecCase, GoldenError> {
    let w = load(&format!("matvec/{stem}.w.bin"))?;
    check_type(&w, ty)?;
    let (rows, cols) = (w.attr_usize("rows")?, w.attr_usize("cols")?);
    let act_name = w.attr("act")?;
    let act = GgmlType::from_name(act_name)
        .ok_or_else(|| GoldenError(format!("{}: unknown act={act_name}", w.name)))?;
    let case = MatvecCase {
        ty,
        rows,
        cols,
        act,
        x: load(&format!("matvec/{stem}.x.bin"))?.to_f32()?,
        xq: load(&format!("matvec/{stem}.xq.bin"))?.to_u8()?,
        y: load(&format!("matvec/{stem}.y.bin"))?.to_f64()?,
        y_q: load(&format!("matvec/{stem}.y_q.bin"))?.to_f64()?,
        abs_dot: load(&format!("matvec/{stem}.abs_dot.bin"))?.to_f64()?,
        w: w.to_u8()?,
    };
    check_sizes(ty, &w.name, case.w.len(), rows * cols)?;
    check_sizes(act, &format!("matvec/{stem}.xq.bin"), case.xq.len(), cols)?;
    let lens = [
        case.x.len(),
        case.y.len(),
        case.y_q.len(),
        case.abs_dot.len(),
    ];
    if lens != [cols, rows, rows, rows] {
        return err(format!(
            "matvec/{stem}: x, y, y_q, abs_dot lengths {lens:?} do not fit {rows}×{cols}"
        ));
    }
    Ok(case)
}

fn check_type(a: &Array, ty: GgmlType) -> Result<(), GoldenError> {
    let t = a.attr("type")?;
    if t != ty.name() {
        return err(format!("{}: type={t}, expected {ty}", a.name));
    }
    Ok(())
}

fn check_sizes(ty: GgmlType, file: &str, bytes: usize, elements: usize) -> Result<(), GoldenError> {
    if ty.bytes_for(elements as u64) != Some(bytes as u64) {
        return err(format!(
            "{file}: {bytes} bytes do not hold {elements} elements of {ty}"
        ));
    }
    Ok(())
}
