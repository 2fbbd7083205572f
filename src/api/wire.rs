//! JSON shapes that serde's derive cannot express: nested samples streamed straight into
//! the core's [`SampleSetBuilder`] (no intermediate tree, so a 32 MiB upload costs its
//! numbers and nothing more), labels in either of their two forms, and matrices written as
//! nested rows.
//!
//! A fault in the *values* (a ragged sample, a mix of label forms) is kept as an
//! [`NnError`] for a 422 with the sample's index; only a fault in the JSON's *form* (a
//! string where a number goes) is a serde error, which becomes a 400.

use std::cell::Cell;
use std::fmt;

use ndarray::{Array1, Array2, ArrayView2};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::nn::{Labels, NnError, SampleSet, SampleSetBuilder};

/// The server's size limits, seen by the deserializers below while a body is parsed, so
/// that data past a limit is counted and refused, never stored.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_samples: usize,
    pub max_history: usize,
}

thread_local! {
    static LIMITS: Cell<ParseLimits> = const {
        Cell::new(ParseLimits { max_samples: usize::MAX, max_history: usize::MAX })
    };
}

/// Runs `f` (a parse) with `limits` in force on this thread.
pub fn with_limits<R>(limits: ParseLimits, f: impl FnOnce() -> R) -> R {
    let before = LIMITS.with(|l| l.replace(limits));
    let out = f();
    LIMITS.with(|l| l.set(before));
    out
}

fn limits() -> ParseLimits {
    LIMITS.with(Cell::get)
}

/// A loss history as sent (import): entries past `max_history` are counted, not kept.
#[derive(Debug)]
pub enum History {
    Kept(Vec<f64>),
    TooLong(usize),
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = History;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of losses")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<History, A::Error> {
                let max = limits().max_history;
                let mut kept = Vec::new();
                let mut n = 0usize;
                while let Some(v) = seq.next_element::<f64>()? {
                    if n < max {
                        kept.push(v);
                    } else if n == max {
                        kept = Vec::new();
                    }
                    n += 1;
                }
                Ok(if n > max {
                    History::TooLong(n)
                } else {
                    History::Kept(kept)
                })
            }
        }
        d.deserialize_seq(V)
    }
}

/// `x`: a list of samples, each a number or a list nested up to 8 deep.
#[derive(Debug)]
pub struct Samples(pub Result<SampleSet, NnError>);

impl<'de> Deserialize<'de> for Samples {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListOfSamples;
        impl<'de> Visitor<'de> for ListOfSamples {
            type Value = Samples;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of samples")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Samples, A::Error> {
                let mut b = SampleSetBuilder::new(limits().max_samples);
                while seq.next_element_seed(OneSample(&mut b))?.is_some() {}
                Ok(Samples(b.finish()))
            }
        }
        d.deserialize_seq(ListOfSamples)
    }
}

struct OneSample<'a>(&'a mut SampleSetBuilder);

impl<'de> DeserializeSeed<'de> for OneSample<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.begin_sample();
        d.deserialize_any(Node(&mut *self.0))?;
        self.0.end_sample();
        Ok(())
    }
}

struct Node<'a>(&'a mut SampleSetBuilder);

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a list of numbers (a sample)")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.number(v as f64);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.number(v as f64);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.number(v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.open_list();
        while seq.next_element_seed(Node(&mut *self.0))?.is_some() {}
        self.0.close_list();
        Ok(())
    }
}

/// `y`: class indices (integer literals) or label rows; a mix is a 422, not a parse error.
#[derive(Debug)]
pub struct LabelsWire(pub Result<Labels, NnError>);

enum LabelEntry {
    Index(i64),
    Row(Vec<f64>),
}

impl<'de> Deserialize<'de> for LabelEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a class index (an integer like 2) or a label row (like [0, 0, 1])")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LabelEntry, E> {
                Ok(LabelEntry::Index(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LabelEntry, E> {
                Ok(LabelEntry::Index(v))
            }
            // An integer literal past 64 bits arrives as a float: a class out of range (422).
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LabelEntry, E> {
                if v.fract() == 0.0 && v.abs() >= 18_446_744_073_709_551_616.0 {
                    Ok(LabelEntry::Index(if v > 0.0 { i64::MAX } else { i64::MIN }))
                } else {
                    Err(E::invalid_type(de::Unexpected::Float(v), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LabelEntry, A::Error> {
                let mut row = Vec::new();
                while let Some(v) = seq.next_element::<f64>()? {
                    row.push(v);
                }
                Ok(LabelEntry::Row(row))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for LabelsWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelsWire;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of class indices or of label rows")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LabelsWire, A::Error> {
                let mut indices = Vec::new();
                let mut rows = Vec::new();
                let mut first_index = None;
                let mut first_row = None;
                let mut j = 0usize;
                while let Some(entry) = seq.next_element::<LabelEntry>()? {
                    match entry {
                        LabelEntry::Index(c) => {
                            first_index.get_or_insert(j);
                            indices.push(c);
                        }
                        LabelEntry::Row(r) => {
                            first_row.get_or_insert(j);
                            rows.push(r);
                        }
                    }
                    j += 1;
                }
                Ok(LabelsWire(match (first_index, first_row) {
                    (Some(i), Some(r)) => Err(NnError::InvalidLabels(format!(
                        "y mixes class indices (y[{i}]) and label rows (y[{r}]); \
                         use one form for every sample"
                    ))),
                    (_, Some(_)) => Ok(Labels::Rows(rows)),
                    _ => Ok(Labels::Indices(indices)),
                }))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A matrix as a list of rows.
pub struct Rows<'a>(pub ArrayView2<'a, f64>);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.nrows()))?;
        for row in self.0.rows() {
            seq.serialize_element(&Vector(row.iter()))?;
        }
        seq.end()
    }
}

/// Any run of numbers as a JSON list.
pub struct Vector<I>(pub I);

impl<'a, I: Iterator<Item = &'a f64> + Clone + ExactSizeIterator> Serialize for Vector<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let it = self.0.clone();
        let mut seq = s.serialize_seq(Some(it.len()))?;
        for v in it {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

/// A list of matrices (one per layer).
pub struct Matrices<'a>(pub &'a [Array2<f64>]);

impl Serialize for Matrices<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|m| Rows(m.view())))
    }
}

/// A list of vectors (one per layer), or null.
pub struct Vectors<'a>(pub Option<&'a [Array1<f64>]>);

impl Serialize for Vectors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_none(),
            Some(vs) => s.collect_seq(vs.iter().map(|v| Vector(v.iter()))),
        }
    }
}

/// An integer as written: any JSON integer literal, held wide so that a huge one is a value
/// out of range (422), while `4.0`, `1e12` or `"4"` is the wrong form (400), as the contract
/// says. serde_json's own i128 parsing calls a float a syntax error, hence this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int(pub i128);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer literal like 4 (not 4.0 or \"4\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i128::from(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(i128::from(v)))
            }
            // serde_json hands an integer literal past 64 bits over as a float; it is still an
            // integer, just out of every range. Smaller floats (4.0, 1e12) are the wrong form.
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                if v.fract() == 0.0 && v.abs() >= 18_446_744_073_709_551_616.0 {
                    Ok(Int(if v > 0.0 { i128::MAX } else { i128::MIN }))
                } else {
                    Err(E::invalid_type(de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationWire {
    Relu,
    Sigmoid,
    Tanh,
}

impl From<ActivationWire> for crate::nn::Activation {
    fn from(a: ActivationWire) -> Self {
        match a {
            ActivationWire::Relu => Self::Relu,
            ActivationWire::Sigmoid => Self::Sigmoid,
            ActivationWire::Tanh => Self::Tanh,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReductionWire {
    Sum,
    Mean,
}

impl From<ReductionWire> for crate::nn::GradReduction {
    fn from(r: ReductionWire) -> Self {
        match r {
            ReductionWire::Sum => Self::Sum,
            ReductionWire::Mean => Self::Mean,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodWire {
    NumpyRand,
    Xavier,
    He,
    Explicit,
}
