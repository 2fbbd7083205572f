//! Sessions to rows and back, bit for bit.
//!
//! Every array of numbers (weights, biases, samples, labels, losses) is a blob of
//! little-endian f64s, row-major: what the core holds, byte for byte, so a restart gives
//! back the very same bits. Settings are columns; the layer sizes and a sample's shape are
//! small JSON arrays.

use std::sync::Arc;

use crate::datasets::{StoredDataset, builtin};
use crate::nn::{
    Activation, Dataset, GradReduction, Init, Labels, NetConfig, Network, Params, SampleSet,
    SampleSetBuilder,
};
use crate::store::{InitEcho, Session, StoreError, StoreResult};

/// A session's settings as columns.
#[derive(Debug, Clone)]
pub struct Settings {
    pub layers: String,
    pub activation: &'static str,
    pub learning_rate: f64,
    pub grad_reduction: &'static str,
    pub bias: bool,
    pub init_method: &'static str,
    pub init_seed: Option<i64>,
}

/// A dataset as a row: a built-in one by name only.
#[derive(Debug, Clone)]
pub struct DatasetRow {
    pub builtin: Option<String>,
    pub sample_shape: String,
    pub samples: i64,
    pub x: Option<Vec<u8>>,
    pub y: Option<Vec<u8>>,
}

fn corrupt(what: String) -> StoreError {
    StoreError::Internal(format!("the database holds a damaged session: {what}"))
}

pub fn settings(s: &Session) -> Settings {
    let c = s.net.config();
    Settings {
        layers: serde_json::to_string(&c.layers).unwrap_or_default(),
        activation: c.activation.name(),
        learning_rate: c.learning_rate,
        grad_reduction: c.grad_reduction.name(),
        bias: c.bias,
        init_method: s.init.method,
        init_seed: s.init.seed.map(i64::from),
    }
}

/// The network's settings from their columns.
pub fn net_config(
    layers: &str,
    activation: &str,
    learning_rate: f64,
    grad_reduction: &str,
    bias: bool,
) -> StoreResult<NetConfig> {
    let sizes: Vec<usize> =
        serde_json::from_str(layers).map_err(|e| corrupt(format!("layers {layers:?}: {e}")))?;
    let mut config = NetConfig::new(sizes);
    config.activation = [Activation::Relu, Activation::Sigmoid, Activation::Tanh]
        .into_iter()
        .find(|a| a.name() == activation)
        .ok_or_else(|| corrupt(format!("activation {activation:?}")))?;
    config.grad_reduction = [GradReduction::Sum, GradReduction::Mean]
        .into_iter()
        .find(|r| r.name() == grad_reduction)
        .ok_or_else(|| corrupt(format!("grad_reduction {grad_reduction:?}")))?;
    config.learning_rate = learning_rate;
    config.bias = bias;
    Ok(config)
}

pub fn init_echo(method: &str, seed: Option<i64>) -> StoreResult<InitEcho> {
    let seed = seed
        .map(|s| u32::try_from(s).map_err(|_| corrupt(format!("init seed {s}"))))
        .transpose()?;
    InitEcho::parse(method, seed).ok_or_else(|| corrupt(format!("init method {method:?}")))
}

/// Numbers as a blob of little-endian f64s.
pub fn blob<'a>(values: impl IntoIterator<Item = &'a f64>, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len * 8);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A blob of little-endian f64s as numbers.
pub fn floats(blob: &[u8], what: &str) -> StoreResult<Vec<f64>> {
    if !blob.len().is_multiple_of(8) {
        return Err(corrupt(format!(
            "{what} has {} bytes, not a whole number of f64s",
            blob.len()
        )));
    }
    Ok(blob
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect())
}

/// Every weight matrix, then every bias vector, row-major.
pub fn params_blob(p: &Params) -> Vec<u8> {
    let len = p.weights.iter().map(|w| w.len()).sum::<usize>()
        + p.biases.iter().flatten().map(|b| b.len()).sum::<usize>();
    let weights = p.weights.iter().flat_map(|w| w.iter());
    let biases = p.biases.iter().flatten().flat_map(|b| b.iter());
    blob(weights.chain(biases), len)
}

/// The network with `config`'s shapes and the parameters in `blob`.
pub fn network(config: NetConfig, blob: &[u8]) -> StoreResult<Network> {
    let values = floats(blob, "weights")?;
    let shapes: Vec<(usize, usize)> = config.shapes().collect();
    let weights_len: usize = shapes.iter().map(|(o, i)| o * i).sum();
    let biases_len: usize = if config.bias {
        shapes.iter().map(|(o, _)| o).sum()
    } else {
        0
    };
    if values.len() != weights_len + biases_len {
        return Err(corrupt(format!(
            "weights hold {} numbers; layers {:?} need {}",
            values.len(),
            config.layers,
            weights_len + biases_len
        )));
    }
    let mut rest = values.as_slice();
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head
    };
    let weights: Vec<Vec<Vec<f64>>> = shapes
        .iter()
        .map(|&(o, i)| take(o * i).chunks(i).map(<[f64]>::to_vec).collect())
        .collect();
    let biases = config
        .bias
        .then(|| shapes.iter().map(|&(o, _)| take(o).to_vec()).collect());
    Network::new(config, &Init::Explicit { weights, biases })
        .map_err(|e| corrupt(format!("weights: {e}")))
}

pub fn dataset_row(d: &StoredDataset) -> DatasetRow {
    let data = &d.data;
    let inline = d.builtin.is_none();
    DatasetRow {
        builtin: d.builtin.map(str::to_owned),
        sample_shape: serde_json::to_string(data.sample_shape()).unwrap_or_default(),
        samples: i64::try_from(data.samples()).unwrap_or(i64::MAX),
        x: inline.then(|| blob(data.x().iter(), data.x().len())),
        y: inline.then(|| blob(data.y().iter(), data.y().len())),
    }
}

/// The dataset a row describes, checked against the network's sizes as when it was sent.
pub fn dataset(row: DatasetRow, n_in: usize, n_out: usize) -> StoreResult<Arc<StoredDataset>> {
    if let Some(name) = &row.builtin {
        let b = builtin(name).ok_or_else(|| corrupt(format!("built-in dataset {name:?}")))?;
        return b
            .for_network(n_in, n_out)
            .map_err(|e| corrupt(format!("dataset: {e}")));
    }
    let (Some(x), Some(y)) = (&row.x, &row.y) else {
        return Err(corrupt("a dataset with neither a name nor data".into()));
    };
    let shape: Vec<usize> = serde_json::from_str(&row.sample_shape)
        .map_err(|e| corrupt(format!("sample_shape {:?}: {e}", row.sample_shape)))?;
    let x = floats(x, "dataset x")?;
    let y = floats(y, "dataset y")?;
    let samples = if shape == [n_in] {
        SampleSet::from_flat(x, n_in)
    } else {
        nested(&x, n_in, &shape)
    }
    .map_err(|e| corrupt(format!("dataset x: {e}")))?;
    let dataset = Dataset::new(samples, labels(&y, n_out), n_in, n_out)
        .map_err(|e| corrupt(format!("dataset: {e}")))?;
    Ok(Arc::new(StoredDataset {
        data: dataset,
        builtin: None,
    }))
}

/// Flat rows of `n_in` values, each nested as `shape` again (its shape as it was sent).
fn nested(x: &[f64], n_in: usize, shape: &[usize]) -> crate::nn::Result<SampleSet> {
    fn emit(b: &mut SampleSetBuilder, values: &[f64], shape: &[usize]) {
        match shape.split_first() {
            None => values.iter().for_each(|&v| b.number(v)),
            Some((&n, inner)) => {
                b.open_list();
                for part in values.chunks((values.len() / n.max(1)).max(1)) {
                    emit(b, part, inner);
                }
                b.close_list();
            }
        }
    }
    let mut b = SampleSetBuilder::new(usize::MAX);
    for row in x.chunks(n_in.max(1)) {
        b.begin_sample();
        emit(&mut b, row, shape);
        b.end_sample();
    }
    b.finish()
}

/// Label rows; as class indices when every row is exactly one-hot (the same matrix, built
/// without a vector per row).
fn labels(y: &[f64], n_out: usize) -> Labels {
    let one = 1.0f64.to_bits();
    let index = |row: &[f64]| -> Option<i64> {
        let hot = row.iter().position(|v| v.to_bits() == one)?;
        let rest_zero = row
            .iter()
            .enumerate()
            .all(|(i, v)| i == hot || v.to_bits() == 0);
        rest_zero.then_some(hot as i64)
    };
    let rows = y.chunks(n_out.max(1));
    match rows.clone().map(index).collect::<Option<Vec<i64>>>() {
        Some(indices) => Labels::Indices(indices),
        None => Labels::Rows(rows.map(<[f64]>::to_vec).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::SampleSetBuilder;

    fn samples_2x2(values: &[[f64; 4]]) -> SampleSet {
        let mut b = SampleSetBuilder::new(usize::MAX);
        for v in values {
            b.begin_sample();
            b.open_list();
            for row in v.chunks(2) {
                b.open_list();
                row.iter().for_each(|&x| b.number(x));
                b.close_list();
            }
            b.close_list();
            b.end_sample();
        }
        b.finish().unwrap()
    }

    #[test]
    fn a_network_survives_its_blob_bit_for_bit() {
        let mut config = NetConfig::new(vec![3, 2, 2]);
        config.bias = true;
        let weights = vec![
            vec![vec![0.1, -0.0, f64::MIN_POSITIVE], vec![1e-310, 3.0, -7.5]],
            vec![vec![1.0 / 3.0, 2.0], vec![-1e300, 0.5]],
        ];
        let biases = Some(vec![vec![0.25, -0.125], vec![1e-7, 9.0]]);
        let net = Network::new(config.clone(), &Init::Explicit { weights, biases }).unwrap();
        let back = network(config, &params_blob(net.params())).unwrap();
        let bits = |n: &Network| params_blob(n.params());
        assert_eq!(bits(&back), bits(&net));
        assert_eq!(back, net);
    }

    #[test]
    fn a_blob_of_the_wrong_size_is_an_error_not_a_panic() {
        let config = NetConfig::new(vec![2, 2]);
        assert!(network(config.clone(), &[0u8; 24]).is_err());
        assert!(network(config, &[0u8; 33]).is_err());
    }

    #[test]
    fn an_inline_dataset_survives_its_row_with_its_sample_shape() {
        let x = samples_2x2(&[[56.0, 231.0, 24.0, 1.0], [120.0, 30.0, 24.0, -0.0]]);
        for labels_in in [
            Labels::Indices(vec![2, 0]),
            Labels::Rows(vec![vec![0.25, 0.75, 0.0], vec![1.0, -0.0, 0.0]]),
        ] {
            let data = Dataset::new(x.clone(), labels_in, 4, 3).unwrap();
            let stored = StoredDataset {
                data,
                builtin: None,
            };
            let back = dataset(dataset_row(&stored), 4, 3).unwrap();
            assert_eq!(back.data.sample_shape(), &[2, 2]);
            let bits = |d: &Dataset| {
                let x: Vec<u64> = d.x().iter().map(|v| v.to_bits()).collect();
                let y: Vec<u64> = d.y().iter().map(|v| v.to_bits()).collect();
                (x, y)
            };
            assert_eq!(bits(&back.data), bits(&stored.data));
        }
    }

    #[test]
    fn a_builtin_dataset_is_stored_by_name_and_shared_again() {
        let stored = builtin("cat-dog-ship").unwrap().for_network(4, 3).unwrap();
        let row = dataset_row(&stored);
        assert_eq!(row.builtin.as_deref(), Some("cat-dog-ship"));
        assert!(row.x.is_none() && row.y.is_none());
        let back = dataset(row, 4, 3).unwrap();
        assert!(Arc::ptr_eq(&back, &stored));
    }
}
