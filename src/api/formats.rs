//! Datasets as files: CSV (`text/csv`) and NPZ (`application/x-npz`, what `np.savez(f, x=X,
//! y=Y)` writes), read into the same samples and labels as a JSON body, so they go through the
//! same checks and get the same error codes: a malformed file is 400 `invalid_request`, a
//! shape that does not fit 422 `shape_mismatch`, labels that do not 422 `invalid_labels`,
//! too much data 422 `too_large`.
//!
//! Size is counted before it is stored: a CSV is read twice, once to count its rows and check
//! their widths, then into storage of exactly that size; an NPZ's array headers are read (at
//! most [`NPY_HEADER_MAX`] bytes each, whatever the header claims) and checked against the
//! limits before any data is decompressed. An NPZ may hold at most as many numbers as the
//! largest JSON body could (`--max-body-bytes / 2`, a JSON number taking at least two bytes),
//! so a compressed file cannot make the server hold more than JSON can.
//!
//! CSV class names are numbered in sorted order, as `np.unique` (and scikit-learn's
//! `LabelEncoder`) number them: the order of the rows does not change the classes, and the
//! built-in datasets' names (`cat`, `dog`, `ship`; `setosa`, `versicolor`, `virginica`) get
//! the built-ins' indices.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use ndarray::ArrayD;
use ndarray_npy::npy::header::Header;
use ndarray_npy::{ReadNpyExt, ReadableElement};
use zip::ZipArchive;

use super::extract::{
    PARSE_INLINE_MAX, RequestBody, caller_of, is_json, parse_json_body, read_body, shown,
};
use super::wire::{LabelsWire, Samples, numpy_shape};
use super::{AppState, Caller};
use crate::admission::{Need, Part, Reservation, f64s};
use crate::error::{ApiError, ApiResult};
use crate::nn::{Labels, MAX_SAMPLE_DEPTH, SampleSet, SampleSetBuilder};

pub const CSV: &str = "text/csv";
pub const NPZ: &str = "application/x-npz";

/// An `.npy` header longer than this is refused before it is read: NumPy itself refuses
/// headers over 10,000 bytes unless told otherwise, and writes about 120.
const NPY_HEADER_MAX: usize = 10_000;

/// Brackets nested deeper than this in a header are refused before it is parsed (the
/// parser recurses once per level; NumPy's headers nest 2 deep).
const NPY_HEADER_DEPTH: usize = 16;

/// A dataset body: JSON (parsed into `J`), or a file still to be read against the network.
pub enum DatasetBody<J> {
    Json(J),
    Csv(Bytes),
    Npz(Bytes),
}

/// What a JSON dataset request is made of, when its samples and labels come from a file.
pub trait FromFile {
    fn from_file(x: Samples, y: LabelsWire) -> Self;
}

impl<J: RequestBody> FromRequest<AppState> for DatasetBody<J> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let caller = caller_of(&req)?;
        let Some((content_type, bytes)) = read_body(req, state).await? else {
            return Err(ApiError::InvalidJson(
                "the body is empty; send the dataset as JSON ({\"x\": ..., \"y\": ...} or \
                 {\"builtin\": \"cat-dog-ship\"}), CSV or NPZ"
                    .into(),
            ));
        };
        let essence = content_type
            .as_deref()
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some(CSV) => Ok(Self::Csv(bytes)),
            Some(NPZ) => Ok(Self::Npz(bytes)),
            Some(c) if is_json(c) => Ok(Self::Json(parse_json_body(state, &caller, bytes).await?)),
            _ => Err(ApiError::UnsupportedMediaType(format!(
                "the body's Content-Type is {}; a dataset is application/json, text/csv (one \
                 sample a row, the class last) or application/x-npz (np.savez(f, x=X, y=Y)); \
                 with curl: --json '{{...}}', or -H 'Content-Type: text/csv' --data-binary \
                 @data.csv, or -H 'Content-Type: application/x-npz' --data-binary @data.npz",
                shown(content_type.as_deref())
            ))),
        }
    }
}

impl<J: FromFile> DatasetBody<J> {
    /// The request as JSON would have made it; a file is read for a network of `n_in` inputs
    /// and `n_out` outputs (on a worker when it is large).
    /// A file's reader reserves what it will store (as the request's parsed part) once it
    /// knows how much, before it stores it: a CSV after counting its rows, an NPZ after
    /// reading its arrays' headers.
    pub async fn into_request(
        self,
        state: &AppState,
        caller: &Caller,
        n_in: usize,
        n_out: usize,
    ) -> ApiResult<J> {
        let limits = Limits::of(state, caller);
        let (bytes, read): (Bytes, Reader) = match self {
            Self::Json(j) => return Ok(j),
            Self::Csv(b) => (b, read_csv),
            Self::Npz(b) => (b, read_npz),
        };
        let (samples, labels) = if bytes.len() <= PARSE_INLINE_MAX {
            read(&bytes, &limits, n_in, n_out)?
        } else {
            state
                .compute(caller, None, move || read(&bytes, &limits, n_in, n_out))
                .await??
        };
        caller.memory.release(Part::Body);
        Ok(J::from_file(Samples(Ok(samples)), LabelsWire(Ok(labels))))
    }
}

type Parsed = (SampleSet, Labels);

/// A file format's reader: the body, the limits, the network's `n_in` and `n_out`.
type Reader = fn(&[u8], &Limits, usize, usize) -> ApiResult<Parsed>;

#[derive(Clone)]
struct Limits {
    max_samples: usize,
    /// Most numbers (x and y together) an NPZ may hold.
    max_numbers: usize,
    /// The request's memory, to reserve what is stored before storing it.
    memory: Reservation,
}

impl Limits {
    fn of(state: &AppState, caller: &Caller) -> Self {
        Self {
            max_samples: state.config().max_samples,
            max_numbers: state.config().max_body_bytes / 2,
            memory: caller.memory.clone(),
        }
    }

    /// Reserves `bytes` for the file's samples and labels as read.
    fn reserve(&self, bytes: u128, m: usize) -> ApiResult<()> {
        let need = Need::new(
            bytes,
            format!("the file's {m} samples and labels as read"),
            "send fewer samples per request",
        );
        Ok(self.memory.need(Part::Parsed, need)?)
    }

    fn too_many_samples(&self, m: usize) -> ApiError {
        ApiError::TooLarge(format!(
            "the data has {m} samples; this server takes at most {} (--max-samples)",
            self.max_samples
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Class names as they are met: each gets a provisional number, in order of first
/// appearance, renumbered in sorted order at the end. At most `n_out` of them are kept.
#[derive(Default)]
struct ClassNames {
    ids: HashMap<Box<[u8]>, i64>,
}

impl ClassNames {
    fn id(&mut self, name: &[u8], n_out: usize) -> ApiResult<i64> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        if self.ids.len() == n_out {
            let mut known: Vec<String> = self.ids.keys().map(|k| text(k)).collect();
            known.sort();
            return Err(ApiError::InvalidLabels(format!(
                "the classes name more than {n_out} classes ({}, {}, ...); the output layer \
                 has {n_out} units, one per class",
                known.join(", "),
                text(name)
            )));
        }
        let id = self.ids.len() as i64;
        self.ids.insert(name.into(), id);
        Ok(id)
    }

    /// Provisional numbers -> sorted ranks.
    fn renumber(&self, labels: &mut [i64]) {
        let mut by_name: Vec<(&[u8], i64)> = self.ids.iter().map(|(k, &v)| (&**k, v)).collect();
        by_name.sort_unstable();
        let mut rank = vec![0i64; by_name.len()];
        for (r, (_, id)) in by_name.iter().enumerate() {
            rank[*id as usize] = r as i64;
        }
        for l in labels {
            *l = rank[*l as usize];
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_csv(body: &[u8], limits: &Limits, n_in: usize, n_out: usize) -> ApiResult<Parsed> {
    // Excel and Windows Notepad begin UTF-8 files with a byte order mark.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let reader = || {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(body)
    };
    let mut record = csv::ByteRecord::new();
    let line = |r: &csv::ByteRecord| r.position().map_or(0, |p| p.line());

    // Pass 1: the header, the widths and the number of samples; nothing is stored.
    let mut rows = reader();
    let mut header = false;
    let mut width: Option<(usize, u64)> = None;
    let mut m = 0usize;
    while rows.read_byte_record(&mut record).map_err(csv_error)? {
        let fields = record.len();
        let Some((want, first_line)) = width else {
            if fields < 2 {
                return Err(ApiError::ShapeMismatch(format!(
                    "line {} has {fields} field; a row holds a sample's values and then its \
                     class, e.g. 5.1,3.5,1.4,0.2,setosa",
                    line(&record)
                )));
            }
            header = is_header(&record);
            width = Some((fields, line(&record)));
            if !header {
                m += 1;
                check_width(fields, n_in, line(&record), body)?;
            }
            continue;
        };
        if fields != want {
            return Err(ApiError::ShapeMismatch(format!(
                "line {} has {fields} fields, but line {first_line} has {want}; every row \
                 holds the same number of values, then the class",
                line(&record)
            )));
        }
        if m == 0 {
            check_width(fields, n_in, line(&record), body)?;
        }
        m += 1;
        if m > limits.max_samples {
            return Err(ApiError::TooLarge(format!(
                "the CSV has more than {0} samples; this server takes at most {0} \
                 (--max-samples)",
                limits.max_samples
            )));
        }
    }
    if m == 0 {
        return Err(ApiError::ShapeMismatch(format!(
            "the CSV has a header row but no samples; add one row per sample{}",
            lost_newlines(body)
        )));
    }

    // Pass 2: the numbers, into storage of exactly their size (reserved first; class names
    // are at most the body's bytes).
    // Every number is followed by a comma, so the body bounds them however wide rows are.
    let numbers = m.saturating_mul(n_in).min(body.len() / 2);
    limits.reserve(
        f64s(numbers as u128 + m as u128) + 2 * body.len() as u128,
        m,
    )?;
    let mut values = Vec::with_capacity(numbers);
    let mut labels: Vec<i64> = Vec::with_capacity(m);
    let mut names = ClassNames::default();
    // The first row's kind of class (index or name), and its line.
    let mut first: Option<(u64, bool)> = None;
    let mut rows = reader();
    let mut skip_header = header;
    while rows.read_byte_record(&mut record).map_err(csv_error)? {
        if std::mem::take(&mut skip_header) {
            continue;
        }
        let at = line(&record);
        for (c, field) in record.iter().take(n_in).enumerate() {
            let v = number(field).ok_or_else(|| {
                // A first row of numbers and text is read as a sample, not as a header.
                let hint = if !header && Some(at) == width.map(|w| w.1) {
                    " (a header row names every column with text)"
                } else {
                    ""
                };
                ApiError::InvalidRequest(format!(
                    "line {at}, column {}: {} is not a number; a row holds {n_in} numbers, \
                     then the class{hint}",
                    c + 1,
                    cell(field)
                ))
            })?;
            if !v.is_finite() {
                return Err(ApiError::InvalidValue(format!(
                    "line {at}, column {}: {} is not a finite number; every value must be one",
                    c + 1,
                    cell(field)
                )));
            }
            values.push(v);
        }
        let raw = &record[n_in];
        let index = class_index(raw, at)?;
        let (first_at, first_is_index) = *first.get_or_insert((at, index.is_some()));
        if first_is_index != index.is_some() {
            let (this, that) = if index.is_some() {
                ("a class index", "a class name")
            } else {
                ("a class name", "a class index")
            };
            return Err(ApiError::InvalidLabels(format!(
                "line {at}: the class {} is {this}, but line {first_at}'s is {that}; use class \
                 indices (0 to {}) or class names in every row, not both",
                cell(raw),
                n_out.saturating_sub(1)
            )));
        }
        labels.push(match index {
            Some(c) if c < 0 || c as u64 >= n_out as u64 => {
                return Err(ApiError::InvalidLabels(format!(
                    "line {at}: class {c} is out of range; class indices run from 0 to {} (the \
                     output layer has {n_out} units)",
                    n_out.saturating_sub(1)
                )));
            }
            Some(c) => c,
            None => names.id(raw, n_out)?,
        });
    }
    if first.is_some_and(|(_, is_index)| !is_index) {
        names.renumber(&mut labels);
    }
    let samples = SampleSet::from_flat(values, n_in)?;
    Ok((samples, Labels::Indices(labels)))
}

/// Whether the first row names the columns rather than holding a sample: every value is
/// empty or a name ([`is_name`]: `sepal_length,...,species`), or the row is pandas' column
/// numbers `0,1,2,...` (`pd.DataFrame(array).to_csv(index=False)` writes them). A row of
/// numbers and names is a sample with a fault, reported as such, never dropped as a header.
fn is_header(first: &csv::ByteRecord) -> bool {
    let values = first.len() - 1;
    let all_names = first
        .iter()
        .take(values)
        .all(|f| f.is_empty() || is_name(f));
    let numbered = first
        .iter()
        .enumerate()
        .all(|(i, f)| std::str::from_utf8(f).ok() == Some(i.to_string().as_str()));
    all_names || numbered
}

/// A hint for a file whose newlines were lost: `curl -d @file` strips them
/// (`--data-binary @file` keeps them).
fn lost_newlines(body: &[u8]) -> &'static str {
    if body.contains(&b'\n') {
        ""
    } else {
        " (the whole CSV is one line: if you sent it with curl -d @file, curl removed its \
         newlines; send it with --data-binary @file)"
    }
}

/// The first data row's width against the input layer.
fn check_width(fields: usize, n_in: usize, at: u64, body: &[u8]) -> ApiResult<()> {
    if fields == n_in + 1 {
        return Ok(());
    }
    let hint = if fields > 2 * (n_in + 1) {
        lost_newlines(body)
    } else {
        ""
    };
    Err(ApiError::ShapeMismatch(format!(
        "line {at} holds {} values and a class; the input layer takes {n_in} values, so each \
         row needs {} fields{hint}",
        fields - 1,
        n_in + 1
    )))
}

/// A cell as a number, written as people and NumPy write them: a sign, digits with a point
/// or a point with digits, an exponent (`5`, `-0.25`, `.5`, `1e-3`, `5.6000e+01`); that is
/// `[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?`, as `openapi.yaml` says. `nan` and `inf`, which
/// f64's parser also reads, are not numbers here: in a CSV they are missing values.
fn number(field: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(field).ok()?;
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    text.parse().ok()
}

/// A class name (or a column's): it begins with anything but a digit, a sign or a point,
/// so that a number with a typo (`2b`, `-x`) is not taken for a name.
fn is_name(field: &[u8]) -> bool {
    field
        .first()
        .is_some_and(|c| !(c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.')))
}

fn cell(field: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(field))
}

/// A class cell: a number is a class index (`2`, `2.0`, or `2.000000000000000000e+00` as
/// `np.savetxt` writes it: `Some`) and must be whole; a name is a class name (`None`).
fn class_index(raw: &[u8], at: u64) -> ApiResult<Option<i64>> {
    if raw.is_empty() {
        return Err(ApiError::InvalidLabels(format!(
            "line {at} has an empty class; give a class index or a class name"
        )));
    }
    match number(raw) {
        Some(v) if v.is_finite() && v.fract() == 0.0 => {
            Ok(Some(v.clamp(i64::MIN as f64, i64::MAX as f64) as i64))
        }
        Some(_) => Err(ApiError::InvalidLabels(format!(
            "line {at}: the class {} is a number but not a whole one; a class index is 0, 1, \
             2, ...",
            cell(raw)
        ))),
        None if is_name(raw) => Ok(None),
        None => Err(ApiError::InvalidRequest(format!(
            "line {at}: the class {} is neither a class index (a whole number) nor a class \
             name (a name begins with a letter)",
            cell(raw)
        ))),
    }
}

fn csv_error(e: csv::Error) -> ApiError {
    ApiError::InvalidRequest(format!("the body is not readable as CSV: {e}"))
}

// ---------------------------------------------------------------------------------------------
// NPZ

/// The element types NumPy writes that a dataset can take, by their `.npy` descriptor.
#[derive(Clone, Copy, Debug)]
enum Dtype {
    F64,
    F32,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl Dtype {
    fn of(header: &Header) -> Option<Self> {
        let py_literal::Value::String(descr) = &header.type_descriptor else {
            return None;
        };
        let code = descr.trim_start_matches(['<', '>', '|', '=']);
        Some(match code {
            "f8" => Self::F64,
            "f4" => Self::F32,
            "i8" => Self::I64,
            "i4" => Self::I32,
            "i2" => Self::I16,
            "i1" => Self::I8,
            "u8" => Self::U64,
            "u4" => Self::U32,
            "u2" => Self::U16,
            "u1" => Self::U8,
            "b1" => Self::Bool,
            _ => return None,
        })
    }
}

/// NumPy's name for a descriptor, for details (`'<c16'` -> `complex128`).
fn numpy_name(header: &Header) -> String {
    let descr = match &header.type_descriptor {
        py_literal::Value::String(s) => s.clone(),
        other => return format!("a structured dtype ({other})"),
    };
    let code = descr.trim_start_matches(['<', '>', '|', '=']);
    let (kind, size) = code.split_at(code.len().min(1));
    let bits = size.parse::<u32>().map(|b| b * 8).unwrap_or(0);
    let name = match kind {
        "f" => format!("float{bits}"),
        "i" => format!("int{bits}"),
        "u" => format!("uint{bits}"),
        "c" => format!("complex{bits}"),
        "b" => "bool".into(),
        "U" => "str".into(),
        "S" => "bytes".into(),
        "O" => "object".into(),
        "M" => "datetime64".into(),
        "m" => "timedelta64".into(),
        _ => "an unsupported dtype".into(),
    };
    format!("{name} ('{descr}')")
}

fn not_npz(e: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidRequest(format!(
        "the body is not an NPZ file (a zip of .npy arrays, as np.savez(f, x=X, y=Y) writes \
         it): {e}"
    ))
}

fn read_npz(body: &[u8], limits: &Limits, n_in: usize, n_out: usize) -> ApiResult<Parsed> {
    if body.starts_with(b"\x93NUMPY") {
        return Err(ApiError::InvalidRequest(
            "the body is one .npy array (np.save); a dataset needs x and y together: write \
             them with np.savez(f, x=X, y=Y)"
                .into(),
        ));
    }
    if zip64_end(body) {
        return Err(not_npz(
            "it ends with a ZIP64 end record, which an NPZ of two arrays this small never \
             needs (np.savez writes a plain one)",
        ));
    }
    let mut zip = ZipArchive::new(Cursor::new(body)).map_err(not_npz)?;
    let mut names: Vec<String> = zip
        .file_names()
        .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
        .collect();
    names.sort();
    if names != ["x", "y"] {
        let hint = if names.iter().any(|n| n.starts_with("arr_")) {
            " (np.savez(f, X, Y) names them arr_0 and arr_1; name them: np.savez(f, x=X, y=Y))"
        } else {
            " (np.savez(f, x=X, y=Y))"
        };
        return Err(ApiError::InvalidRequest(format!(
            "the NPZ holds the arrays {names:?}; a dataset is exactly two, x (the samples) and \
             y (the labels){hint}"
        )));
    }
    let x = npy_header(&mut zip, "x")?;
    let y = npy_header(&mut zip, "y")?;
    // Shapes and sizes first: nothing is decompressed until they pass.
    let (x_dtype, y_dtype) = (accepted("x", &x)?, accepted("y", &y)?);
    let m = *x.shape.first().ok_or_else(|| {
        ApiError::ShapeMismatch(
            "x is a single number (shape ()); it must hold one sample per row, shape (M, ...)"
                .into(),
        )
    })?;
    let sample_shape = &x.shape[1..];
    if sample_shape.len() > MAX_SAMPLE_DEPTH {
        return Err(ApiError::ShapeMismatch(format!(
            "x has shape {}: samples nested {} deep; a sample may be nested at most \
             {MAX_SAMPLE_DEPTH} deep",
            numpy_shape(&x.shape),
            sample_shape.len()
        )));
    }
    if m == 0 {
        return Err(ApiError::ShapeMismatch(
            "x holds no samples (its first dimension is 0); send at least one".into(),
        ));
    }
    if m > limits.max_samples {
        return Err(limits.too_many_samples(m));
    }
    let width = sample_shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    if width != n_in {
        return Err(ApiError::ShapeMismatch(format!(
            "x has shape {}: samples of {width} values; the input layer takes {n_in}",
            numpy_shape(&x.shape)
        )));
    }
    match y.shape.as_slice() {
        [my] | [my, _] if *my != m => {
            return Err(ApiError::ShapeMismatch(format!(
                "x has {m} samples but y has {my} labels (shape {}); they must have the same \
                 length",
                numpy_shape(&y.shape)
            )));
        }
        [_] => {}
        [_, k] if *k != n_out => {
            return Err(ApiError::ShapeMismatch(format!(
                "y has shape {}: label rows of {k} values; label rows need {n_out}, one per \
                 output unit",
                numpy_shape(&y.shape)
            )));
        }
        [_, _] => {}
        _ => {
            return Err(ApiError::ShapeMismatch(format!(
                "y has shape {}; it must be class indices, shape ({m},), or label rows, \
                 shape ({m}, {n_out})",
                numpy_shape(&y.shape)
            )));
        }
    }
    let y_numbers = y.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    let numbers = m.saturating_mul(width).saturating_add(y_numbers);
    if numbers > limits.max_numbers {
        return Err(ApiError::TooLarge(format!(
            "the NPZ holds {numbers} numbers; a dataset upload may hold at most {} (half of \
             --max-body-bytes, as many as the largest JSON body could carry)",
            limits.max_numbers
        )));
    }
    // Read, x is its array then its f64s, then the samples (growing as they are fed); y
    // likewise, then its indices or rows (a vector each); plus the inflater's buffers.
    let (xn, yn) = (m.saturating_mul(width) as u128, y_numbers as u128);
    limits.reserve(f64s(5 * xn + 3 * yn + 7 * m as u128) + (1 << 20), m)?;
    let xs = npy_values(&mut zip, "x", x_dtype)?;
    let mut b = SampleSetBuilder::new(limits.max_samples);
    for sample in xs.chunks(width.max(1)) {
        b.begin_sample();
        nest(&mut b, sample, sample_shape);
        b.end_sample();
    }
    let samples = b.finish()?;
    let ys = npy_values(&mut zip, "y", y_dtype)?;
    let labels = if y.shape.len() == 1 {
        let mut indices = Vec::with_capacity(ys.len());
        for (j, &v) in ys.iter().enumerate() {
            if !(v.is_finite() && v.fract() == 0.0) {
                return Err(ApiError::InvalidLabels(format!(
                    "y[{j}] is {v}; class indices are whole numbers (y of shape ({m},)), or send \
                     label rows, shape ({m}, {n_out})"
                )));
            }
            indices.push(v.clamp(i64::MIN as f64, i64::MAX as f64) as i64);
        }
        Labels::Indices(indices)
    } else {
        Labels::Rows(ys.chunks(n_out.max(1)).map(<[f64]>::to_vec).collect())
    };
    Ok((samples, labels))
}

/// Whether the archive ends with ZIP64's end record. That record lets a file claim billions
/// of entries, and the zip crate reserves room for as many as it claims (up to the
/// directory's offset) before reading any; NumPy writes it only past 65,535 entries or 4 GiB.
fn zip64_end(body: &[u8]) -> bool {
    // The plain end record (22 bytes and a comment of up to 65,535) ends every zip, found
    // from the back as readers find it; ZIP64's locator sits right before it.
    let lowest = body.len().saturating_sub(22 + 65_535);
    (lowest..body.len().saturating_sub(21))
        .rev()
        .find(|&i| body[i..].starts_with(b"PK\x05\x06"))
        .is_some_and(|end| end >= 20 && body[end - 20..].starts_with(b"PK\x06\x07"))
}

fn accepted(name: &str, header: &Header) -> ApiResult<Dtype> {
    Dtype::of(header).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "{name} has dtype {}; {name} must hold real numbers: float64, float32, int8 to \
             int64, uint8 to uint64 or bool (e.g. {name}.astype(np.float64))",
            numpy_name(header)
        ))
    })
}

/// The entry `name` (or `name.npy`) of the archive.
fn entry<'a, R: Read + Seek>(
    zip: &'a mut ZipArchive<R>,
    name: &str,
) -> ApiResult<zip::read::ZipFile<'a, R>> {
    let full = if zip.index_for_name(name).is_some() {
        name.to_string()
    } else {
        format!("{name}.npy")
    };
    zip.by_name(&full).map_err(not_npz)
}

/// An array's header, read without trusting its length field: ndarray-npy allocates what
/// that field says before reading, so it is checked first.
fn npy_header(zip: &mut ZipArchive<impl Read + Seek>, name: &str) -> ApiResult<Header> {
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::InvalidRequest(format!(
            "the NPZ's array {name} is not a valid .npy array: {e}"
        ))
    };
    let mut file = entry(zip, name)?;
    // Magic (6 bytes), version (2), then the header's length: 2 bytes in version 1, 4 after.
    let mut prefix = [0u8; 12];
    file.read_exact(&mut prefix[..8]).map_err(|e| bad(&e))?;
    let (len, used) = match prefix[6] {
        1 => {
            file.read_exact(&mut prefix[8..10]).map_err(|e| bad(&e))?;
            (u16::from_le_bytes([prefix[8], prefix[9]]) as usize, 10)
        }
        _ => {
            file.read_exact(&mut prefix[8..12]).map_err(|e| bad(&e))?;
            let n = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            (usize::try_from(n).unwrap_or(usize::MAX), 12)
        }
    };
    if len > NPY_HEADER_MAX {
        return Err(bad(&format!(
            "its header claims {len} bytes (NumPy writes about 120, and reads at most \
             {NPY_HEADER_MAX})"
        )));
    }
    let mut text = prefix[..used].to_vec();
    file.take(len as u64)
        .read_to_end(&mut text)
        .map_err(|e| bad(&e))?;
    let mut depth = 0usize;
    for &c in &text[used..] {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > NPY_HEADER_DEPTH {
            return Err(bad(&"its header nests brackets too deeply"));
        }
    }
    Header::from_reader(&mut text.as_slice()).map_err(|e| bad(&e))
}

/// An array's values as f64, in NumPy's logical (C) order whatever its memory order.
fn npy_values(
    zip: &mut ZipArchive<impl Read + Seek>,
    name: &str,
    dtype: Dtype,
) -> ApiResult<Vec<f64>> {
    fn read<T: ReadableElement + Copy>(
        file: impl Read,
        name: &str,
        to_f64: impl Fn(T) -> f64,
    ) -> ApiResult<Vec<f64>> {
        let a = ArrayD::<T>::read_npy(file).map_err(|e| {
            ApiError::InvalidRequest(format!(
                "the NPZ's array {name} is not a valid .npy array: {e}"
            ))
        })?;
        Ok(a.iter().map(|&v| to_f64(v)).collect())
    }
    let file = entry(zip, name)?;
    match dtype {
        Dtype::F64 => read(file, name, |v: f64| v),
        Dtype::F32 => read(file, name, |v: f32| f64::from(v)),
        Dtype::I64 => read(file, name, |v: i64| v as f64),
        Dtype::I32 => read(file, name, |v: i32| f64::from(v)),
        Dtype::I16 => read(file, name, |v: i16| f64::from(v)),
        Dtype::I8 => read(file, name, |v: i8| f64::from(v)),
        Dtype::U64 => read(file, name, |v: u64| v as f64),
        Dtype::U32 => read(file, name, |v: u32| f64::from(v)),
        Dtype::U16 => read(file, name, |v: u16| f64::from(v)),
        Dtype::U8 => read(file, name, |v: u8| f64::from(v)),
        Dtype::Bool => read(file, name, |v: bool| f64::from(u8::from(v))),
    }
}

/// Feeds one sample to the builder with its nesting (`shape` is one sample's), so the
/// dataset keeps the shape NumPy had, as a nested JSON sample does.
fn nest(b: &mut SampleSetBuilder, values: &[f64], shape: &[usize]) {
    match shape.split_first() {
        None => values.iter().for_each(|&v| b.number(v)),
        Some((&n, inner)) => {
            b.open_list();
            // Every dimension is at least 1: the sample's width is the input layer's.
            let step = values.len() / n.max(1);
            for part in values.chunks(step.max(1)) {
                nest(b, part, inner);
            }
            b.close_list();
        }
    }
}
