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

use crate::admission::BodyShape;
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

/// Counts what a JSON document holds ([`BodyShape`]) without building anything: the scan
/// that checks a body's syntax before it is parsed, so what parsing it will hold is known
/// (and reserved) first. serde_json's recursion limit applies to it as to any parse.
pub struct Census<'a>(pub &'a mut BodyShape);

impl<'de> DeserializeSeed<'de> for Census<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Census<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.literals += 1;
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.literals += 1;
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.numbers += 1;
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.numbers += 1;
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.numbers += 1;
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.0.strings += 1;
        self.0.string_bytes += s.len() as u64;
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.arrays += 1;
        while seq.next_element_seed(Census(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.objects += 1;
        while map.next_key_seed(MemberName(&mut *self.0))?.is_some() {
            self.0.members += 1;
            map.next_value_seed(Census(&mut *self.0))?;
        }
        Ok(())
    }
}

/// An object member's name, counted among the string bytes.
struct MemberName<'a>(&'a mut BodyShape);

impl<'de> DeserializeSeed<'de> for MemberName<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberName<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.0.string_bytes += s.len() as u64;
        Ok(())
    }
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
            // A whole number is an integer, as JSON Schema counts them (`2.0`, `2e0`); past
            // i64 it saturates, a class out of range (422). `0.5` is the wrong form (400).
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LabelEntry, E> {
                match whole(v) {
                    Some(c) => Ok(LabelEntry::Index(
                        c.clamp(i64::MIN.into(), i64::MAX.into()) as i64
                    )),
                    None => Err(E::invalid_type(de::Unexpected::Float(v), &self)),
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

/// An integer as JSON Schema counts them: any JSON number whose value is whole (`4`, `4.0`,
/// `4e0`), held wide so that a huge one (`1e12`, or a literal past 64 bits, which serde_json
/// hands over as a float) is a value out of range (422), while `4.5` or `"4"` is the wrong
/// form (400), as the contract says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int(pub i128);

/// The integer a finite whole float spells (saturating past i128), or `None`.
fn whole(v: f64) -> Option<i128> {
    // `as` saturates, and every f64 beyond 2^53 is whole, so nothing is lost that matters:
    // such a number is out of every range this API has.
    (v.is_finite() && v.fract() == 0.0).then_some(v as i128)
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer, like 4")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i128::from(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(i128::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                whole(v)
                    .map(Int)
                    .ok_or_else(|| E::invalid_type(de::Unexpected::Float(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A nested object of the request (`init`, check's `gradients`, import's `dataset`), read only
/// from a JSON object. serde's derived structs also read a JSON array by position
/// (`"init": ["numpy_rand", 0]`), which the contract refuses.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object, {\"name\": value, ...}")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Object)
    }
}

/// A string-valued enum of the API: `words! { pub enum Name { Variant = "word", ... } }`.
/// serde's derived enums answer a number where the word goes with a *syntax* error from
/// serde_json ("expected value"), which would be a 400 `invalid_json`; these are read as
/// strings, so `"activation": 5` is the wrong form, and the detail lists the words.
macro_rules! words {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($variant),+
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl ::serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter) -> ::std::fmt::Result {
                        $crate::api::wire::one_of(f, &[$($word),+])
                    }
                    fn visit_str<E: ::serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        match s {
                            $($word => Ok($name::$variant),)+
                            _ => Err(E::invalid_value(::serde::de::Unexpected::Str(s), &self)),
                        }
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
pub(crate) use words;

/// `one of "relu", "sigmoid", "tanh"` (or `"word"` when there is one).
pub fn one_of(f: &mut fmt::Formatter, words: &[&str]) -> fmt::Result {
    if let [only] = words {
        return write!(f, "{only:?}");
    }
    f.write_str("one of ")?;
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{w:?}")?;
    }
    Ok(())
}

words! {
    pub enum ActivationWire {
        Relu = "relu",
        Sigmoid = "sigmoid",
        Tanh = "tanh",
    }
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

words! {
    pub enum ReductionWire {
        Sum = "sum",
        Mean = "mean",
    }
}

impl From<ReductionWire> for crate::nn::GradReduction {
    fn from(r: ReductionWire) -> Self {
        match r {
            ReductionWire::Sum => Self::Sum,
            ReductionWire::Mean => Self::Mean,
        }
    }
}

words! {
    pub enum MethodWire {
        NumpyRand = "numpy_rand",
        Xavier = "xavier",
        He = "he",
        Explicit = "explicit",
    }
}

/// Python's `repr` of a float, which is what the notebook prints (`f'{loss}'`): the shortest
/// digits that read back to the same double, written positionally when the decimal exponent
/// is from -4 to 15 (`0.0001`, `1000000000000000.0`, always with a point) and otherwise as
/// `d.ddde±XX` with at least two exponent digits (`1e-05`, `5e-324`, `1e+16`).
pub fn python_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "-1.2345e-5", "5e-324".
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if v < 0.0 { "-" } else { "" };
    // The point sits after `point` digits: 1e16 has point 17, 0.0001 has -3.
    let point = exp + 1;
    let n = digits.len() as i32;
    let body = if (-3..=16).contains(&point) {
        if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point >= n {
            format!("{digits}{}.0", "0".repeat((point - n) as usize))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{first}{dot}{rest}e{exp_sign}{:02}", exp.abs())
    };
    format!("{sign}{body}")
}

/// NumPy's spelling of a shape: `(3, 4)`, `(3,)`, `()`.
pub fn numpy_shape(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `Some(problem)` when `x` looks like one sample sent without its enclosing list: its
/// "samples" together hold exactly the input layer's `n_in` values
/// (`{"x": [[56, 231], [24, 1]]}` for a network taking 4). The detail shows the wrapped form.
pub fn bare_sample_hint(samples: &SampleSet, n_in: usize) -> Option<NnError> {
    let width: usize = samples.sample_shape().iter().product();
    let m = samples.len();
    if m < 2 || width == n_in || m.checked_mul(width) != Some(n_in) {
        return None;
    }
    // Small enough to print back: rebuild the nesting from the flat values.
    let example = if n_in <= 16 {
        let flat = samples.clone().into_matrix(width).ok()?;
        let mut shape = vec![m];
        shape.extend_from_slice(samples.sample_shape());
        let sent = nest(flat.as_slice()?, &shape);
        format!(" (as {{\"x\": [{sent}]}})")
    } else {
        String::new()
    };
    let sample = if samples.sample_shape().is_empty() {
        "a number".to_string()
    } else {
        format!("{width} values")
    };
    Some(NnError::ShapeMismatch(format!(
        "x is a list of samples, so this x holds {m} samples of {sample} each, and the input \
         layer takes {n_in} values per sample; if it is one sample, put it in a list of its \
         own{example}"
    )))
}

/// `values` written as nested JSON lists of `shape` (`[[56, 231], [24, 1]]`).
fn nest(values: &[f64], shape: &[usize]) -> String {
    match shape.split_first() {
        // Whole numbers as the client most likely wrote them: 56, not 56.0.
        None if values[0].fract() == 0.0 && values[0].abs() < 1e15 => {
            format!("{}", values[0] as i64)
        }
        None => serde_json::to_string(&values[0]).unwrap_or_default(),
        Some((&len, inner)) => {
            let step: usize = inner.iter().product();
            let parts: Vec<String> = (0..len)
                .map(|i| nest(&values[i * step..(i + 1) * step], inner))
                .collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's own repr of each value, written by `tests/golden/generate.py`.
    #[test]
    fn python_repr_matches_python() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/pyrepr.json")).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() > 50);
        for c in cases {
            let v = c["value"].as_f64().unwrap();
            assert_eq!(python_repr(v), c["repr"].as_str().unwrap(), "{v:e}");
            assert_eq!(
                python_repr(-v),
                format!("-{}", c["repr"].as_str().unwrap()),
                "{v:e}"
            );
        }
    }

    #[test]
    fn a_bare_sample_is_recognised_and_shown_wrapped() {
        let mut b = SampleSetBuilder::new(10);
        for row in [[56.0, 231.0], [24.0, 1.0]] {
            b.begin_sample();
            b.open_list();
            row.iter().for_each(|&v| b.number(v));
            b.close_list();
            b.end_sample();
        }
        let samples = b.finish().unwrap();
        let hint = bare_sample_hint(&samples, 4).expect("a hint").to_string();
        assert!(hint.contains(r#"{"x": [[[56, 231], [24, 1]]]}"#), "{hint}");
        assert!(bare_sample_hint(&samples, 2).is_none());
        assert!(bare_sample_hint(&samples, 5).is_none());
    }
}
