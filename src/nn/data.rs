//! Datasets: samples as one `(M, n_in)` matrix, labels as one `(M, n_out)` matrix of rows
//! that are distributions (one-hot for class indices).
//!
//! Samples arrive nested (the notebook's are 2x2 images) and are flattened row-major, as
//! NumPy's `flatten()` does. [`SampleSetBuilder`] takes them as a stream of events (open a
//! list, a number, close it) so a parser can feed it without building a tree first, and it
//! records the first fault instead of failing mid-stream: a ragged sample is a 422 with the
//! sample's index, not a parse error.

use ndarray::Array2;

use super::error::{NnError, Result};

/// A sample may be nested at most this deep (a 2x2 image is 2 deep).
pub const MAX_SAMPLE_DEPTH: usize = 8;

/// Samples, flattened, all of one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSet {
    values: Vec<f64>,
    count: usize,
    shape: Vec<usize>,
}

impl SampleSet {
    /// Samples already flat: `rows` of `width` values each.
    pub fn from_flat(values: Vec<f64>, width: usize) -> Result<Self> {
        if width == 0 || !values.len().is_multiple_of(width) {
            return Err(NnError::ShapeMismatch(format!(
                "{} values do not split into samples of {width}",
                values.len()
            )));
        }
        Ok(Self {
            count: values.len() / width,
            values,
            shape: vec![width],
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The shape of one sample as it was sent (`[2, 2]` for the notebook's images).
    pub fn sample_shape(&self) -> &[usize] {
        &self.shape
    }

    /// The `(M, n_in)` matrix, after checking there is data and that each sample has `n_in` values.
    pub fn into_matrix(self, n_in: usize) -> Result<Array2<f64>> {
        if self.count == 0 {
            return Err(NnError::ShapeMismatch(
                "x holds no samples; send at least one".into(),
            ));
        }
        let width: usize = self.shape.iter().product();
        if width != n_in {
            return Err(NnError::ShapeMismatch(format!(
                "sample 0 has {width} values (shape {:?}); the input layer takes {n_in}",
                self.shape
            )));
        }
        Array2::from_shape_vec((self.count, n_in), self.values)
            .map_err(|e| NnError::ShapeMismatch(format!("x: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number,
    List,
}

/// Builds a [`SampleSet`] from a stream of nesting events; see the module doc.
#[derive(Debug)]
pub struct SampleSetBuilder {
    max_samples: usize,
    values: Vec<f64>,
    count: usize,
    shape: Option<Vec<usize>>,
    fault: Option<NnError>,
    // The sample being read: what each depth holds, each depth's list length, open lists.
    kinds: Vec<Option<Kind>>,
    lens: Vec<Option<usize>>,
    open: Vec<usize>,
    ragged: bool,
    too_deep: bool,
}

impl SampleSetBuilder {
    /// `max_samples` bounds what is stored: past it the builder records `TooLarge` and
    /// keeps nothing more, so an oversized upload cannot grow memory.
    pub fn new(max_samples: usize) -> Self {
        Self {
            max_samples,
            values: Vec::new(),
            count: 0,
            shape: None,
            fault: None,
            kinds: Vec::new(),
            lens: Vec::new(),
            open: Vec::new(),
            ragged: false,
            too_deep: false,
        }
    }

    fn fail(&mut self, e: NnError) {
        if self.fault.is_none() {
            self.fault = Some(e);
            // Nothing more will be used; stop holding memory.
            self.values = Vec::new();
        }
    }

    pub fn begin_sample(&mut self) {
        self.kinds.clear();
        self.lens.clear();
        self.open.clear();
        self.ragged = false;
        self.too_deep = false;
        if self.count >= self.max_samples {
            self.too_many();
        }
    }

    fn too_many(&mut self) {
        let max = self.max_samples;
        self.fail(NnError::TooLarge(format!(
            "x has more than {max} samples; this server takes at most {max}"
        )));
    }

    fn see(&mut self, kind: Kind) {
        let depth = self.open.len();
        if let Some(n) = self.open.last_mut() {
            *n += 1;
        }
        if self.kinds.len() <= depth {
            self.kinds.resize(depth + 1, None);
            self.lens.resize(depth + 1, None);
        }
        match self.kinds[depth] {
            None => self.kinds[depth] = Some(kind),
            Some(k) if k != kind => self.ragged = true,
            Some(_) => {}
        }
    }

    pub fn open_list(&mut self) {
        self.see(Kind::List);
        self.open.push(0);
        if self.open.len() > MAX_SAMPLE_DEPTH {
            self.too_deep = true;
        }
    }

    pub fn close_list(&mut self) {
        let Some(n) = self.open.pop() else { return };
        let depth = self.open.len();
        match self.lens[depth] {
            None => self.lens[depth] = Some(n),
            Some(m) if m != n => self.ragged = true,
            Some(_) => {}
        }
    }

    pub fn number(&mut self, v: f64) {
        self.see(Kind::Number);
        if self.fault.is_some() {
            return;
        }
        if !v.is_finite() {
            let i = self.count;
            self.fail(NnError::InvalidValue(format!(
                "sample {i} holds {v}; every value must be a finite number"
            )));
            return;
        }
        self.values.push(v);
    }

    pub fn end_sample(&mut self) {
        let i = self.count;
        self.count += 1;
        // A stream that ends samples it never began must not count past the limit unseen.
        if self.count > self.max_samples {
            self.too_many();
        }
        if self.fault.is_some() {
            return;
        }
        if self.too_deep {
            return self.fail(NnError::ShapeMismatch(format!(
                "sample {i} is nested more than {MAX_SAMPLE_DEPTH} deep; \
                 samples are numbers or lists nested at most {MAX_SAMPLE_DEPTH} deep"
            )));
        }
        if self.ragged {
            return self.fail(NnError::ShapeMismatch(format!(
                "sample {i} is ragged: its lists at one depth differ in length, \
                 or mix numbers and lists; each sample must be a regular array like a NumPy array"
            )));
        }
        let shape: Vec<usize> = self
            .kinds
            .iter()
            .zip(&self.lens)
            .take_while(|(k, _)| **k == Some(Kind::List))
            .map(|(_, l)| l.unwrap_or(0))
            .collect();
        match &self.shape {
            None => self.shape = Some(shape),
            Some(first) if *first != shape => {
                let msg = format!(
                    "sample {i} has shape {shape:?}, but sample 0 has shape {first:?}; \
                     all samples must have the same shape"
                );
                self.fail(NnError::ShapeMismatch(msg));
            }
            Some(_) => {}
        }
    }

    pub fn finish(self) -> Result<SampleSet> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        Ok(SampleSet {
            values: self.values,
            count: self.count,
            shape: self.shape.unwrap_or_default(),
        })
    }
}

/// Labels as sent: class indices, or rows of length `n_out` that are distributions.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    Indices(Vec<i64>),
    Rows(Vec<Vec<f64>>),
}

impl Labels {
    pub fn len(&self) -> usize {
        match self {
            Self::Indices(v) => v.len(),
            Self::Rows(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `(M, n_out)` matrix of label rows.
    pub fn into_matrix(self, n_out: usize) -> Result<Array2<f64>> {
        match self {
            Self::Indices(idx) => {
                let mut y = Array2::zeros((idx.len(), n_out));
                for (j, &c) in idx.iter().enumerate() {
                    if c < 0 || c as u64 >= n_out as u64 {
                        // `saturating_sub`: an output layer of 0 units must not panic here.
                        return Err(NnError::InvalidLabels(format!(
                            "y[{j}] is class {c}; class indices run from 0 to {} \
                             (the output layer has {n_out} units)",
                            n_out.saturating_sub(1)
                        )));
                    }
                    y[(j, c as usize)] = 1.0;
                }
                Ok(y)
            }
            Self::Rows(rows) => {
                let mut y = Array2::zeros((rows.len(), n_out));
                for (j, row) in rows.iter().enumerate() {
                    if row.len() != n_out {
                        return Err(NnError::ShapeMismatch(format!(
                            "y[{j}] has {} values; label rows need {n_out}, one per output unit",
                            row.len()
                        )));
                    }
                    if let Some(i) = row.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                        return Err(NnError::InvalidLabels(format!(
                            "y[{j}][{i}] is {}; label entries must be finite and >= 0",
                            row[i]
                        )));
                    }
                    let s: f64 = row.iter().sum();
                    if (s - 1.0).abs() > 1e-6 {
                        return Err(NnError::InvalidLabels(format!(
                            "y[{j}] sums to {s}; a label row is a distribution and must sum \
                             to 1 (within 1e-6), e.g. one-hot [0, 1, 0]"
                        )));
                    }
                    y.row_mut(j)
                        .assign(&ndarray::ArrayView1::from(row.as_slice()));
                }
                Ok(y)
            }
        }
    }
}

/// A validated dataset: `x` is `(M, n_in)`, `y` is `(M, n_out)` with distribution rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    x: Array2<f64>,
    y: Array2<f64>,
    sample_shape: Vec<usize>,
}

impl Dataset {
    /// Checks the samples against the input layer and the labels against the output layer.
    pub fn new(samples: SampleSet, labels: Labels, n_in: usize, n_out: usize) -> Result<Self> {
        if samples.len() != labels.len() {
            return Err(NnError::ShapeMismatch(format!(
                "x has {} samples but y has {} labels; they must have the same length",
                samples.len(),
                labels.len()
            )));
        }
        let sample_shape = samples.sample_shape().to_vec();
        let x = samples.into_matrix(n_in)?;
        let y = labels.into_matrix(n_out)?;
        Ok(Self { x, y, sample_shape })
    }

    pub fn x(&self) -> &Array2<f64> {
        &self.x
    }

    pub fn y(&self) -> &Array2<f64> {
        &self.y
    }

    pub fn samples(&self) -> usize {
        self.x.nrows()
    }

    pub fn features(&self) -> usize {
        self.x.ncols()
    }

    pub fn classes(&self) -> usize {
        self.y.ncols()
    }

    /// The shape of one sample as it was sent.
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a sample written as a tiny nested literal: `[` `]` and numbers.
    fn feed(b: &mut SampleSetBuilder, s: &str) {
        b.begin_sample();
        for tok in s
            .replace('[', " [ ")
            .replace(']', " ] ")
            .replace(',', " ")
            .split_whitespace()
        {
            match tok {
                "[" => b.open_list(),
                "]" => b.close_list(),
                n => b.number(n.parse().unwrap()),
            }
        }
        b.end_sample();
    }

    fn build(samples: &[&str]) -> Result<SampleSet> {
        let mut b = SampleSetBuilder::new(100);
        for s in samples {
            feed(&mut b, s);
        }
        b.finish()
    }

    #[test]
    fn nested_samples_flatten_row_major() {
        let s = build(&["[[56, 231], [24, 1]]", "[[120, 30], [24, 0]]"]).unwrap();
        assert_eq!(s.sample_shape(), &[2, 2]);
        let x = s.into_matrix(4).unwrap();
        assert_eq!(x.row(0).to_vec(), vec![56.0, 231.0, 24.0, 1.0]);
        assert_eq!(x.row(1).to_vec(), vec![120.0, 30.0, 24.0, 0.0]);
    }

    #[test]
    fn faults_name_the_sample() {
        let cases: &[(&[&str], &str)] = &[
            (&["[[1, 2], [3]]"], "sample 0 is ragged"),
            (&["[[1, 2], 3]"], "sample 0 is ragged"),
            (
                &["[1, 2, 3, 4]", "[[1, 2], [3, 4]]"],
                "sample 1 has shape [2, 2]",
            ),
            (&["[[[[[[[[[1]]]]]]]]]"], "nested more than 8 deep"),
        ];
        for (samples, want) in cases {
            let err = build(samples).unwrap_err();
            assert!(
                matches!(&err, NnError::ShapeMismatch(m) if m.contains(want)),
                "{samples:?}: got {err:?}, wanted a shape mismatch saying {want:?}"
            );
        }
        let err = build(&["[1, 2, 3]"]).unwrap().into_matrix(4).unwrap_err();
        assert!(
            matches!(&err, NnError::ShapeMismatch(m) if m.contains("3 values")),
            "{err:?}"
        );
    }

    #[test]
    fn too_many_samples_is_too_large_and_stores_nothing_more() {
        let mut b = SampleSetBuilder::new(2);
        for _ in 0..3 {
            feed(&mut b, "[1]");
        }
        assert!(matches!(b.finish(), Err(NnError::TooLarge(_))));
    }

    #[test]
    fn labels_validate() {
        assert!(Labels::Indices(vec![0, 2]).into_matrix(3).is_ok());
        assert!(matches!(
            Labels::Indices(vec![3]).into_matrix(3),
            Err(NnError::InvalidLabels(_))
        ));
        assert!(matches!(
            Labels::Indices(vec![-1]).into_matrix(3),
            Err(NnError::InvalidLabels(_))
        ));
        assert!(matches!(
            Labels::Rows(vec![vec![0.5, 0.4, 0.0]]).into_matrix(3),
            Err(NnError::InvalidLabels(_))
        ));
        assert!(matches!(
            Labels::Rows(vec![vec![1.0, 0.0]]).into_matrix(3),
            Err(NnError::ShapeMismatch(_))
        ));
        let y = Labels::Rows(vec![vec![0.25, 0.75, 0.0]])
            .into_matrix(3)
            .unwrap();
        assert_eq!(y.row(0).to_vec(), vec![0.25, 0.75, 0.0]);
    }
}
