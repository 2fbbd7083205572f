//! Datasets as sessions hold them, and the built-in ones.
//!
//! `cat-dog-ship` is the course notebook's `X` and `Y` exactly, in its order (`x_1` to `x_6`,
//! labels `y_1` to `y_6`: cat, dog, ship, cat, dog, ship; classes cat 0, dog 1, ship 2). The
//! numbers are copied from the notebook (the course's export `000_604ebaaa92069bce.txt`), including
//! `x_4`'s -10; `tests/golden/notebook.json`, written by running that notebook, holds them too,
//! and a test checks that the two agree. `iris` is Fisher's 150 samples in the order of the copy
//! shipped with R and scikit-learn, compiled into the binary from `data/iris.csv`.
//! Built-in datasets are parsed once and shared by every session that uses them.

use std::sync::{Arc, OnceLock};

use crate::nn::{Dataset, Labels, NnError, SampleSet};

/// A session's dataset: the validated matrices, and the built-in name it came from.
#[derive(Debug)]
pub struct StoredDataset {
    pub data: Dataset,
    pub builtin: Option<&'static str>,
}

pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    pub class_names: &'static [&'static str],
    /// Each sample's shape as served by `GET /datasets/{name}`.
    pub sample_shape: &'static [usize],
    pub x: Vec<f64>,
    pub y: Vec<i64>,
    stored: OnceLock<Arc<StoredDataset>>,
}

impl Builtin {
    pub fn samples(&self) -> usize {
        self.y.len()
    }

    pub fn features(&self) -> usize {
        self.sample_shape.iter().product()
    }

    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// The shared dataset, for a network with `n_in` inputs and `n_out` outputs.
    pub fn for_network(&self, n_in: usize, n_out: usize) -> Result<Arc<StoredDataset>, NnError> {
        if n_in != self.features() || n_out != self.classes() {
            return Err(NnError::ShapeMismatch(format!(
                "the built-in dataset {:?} has {} features and {} classes; this network takes \
                 {n_in} inputs and has {n_out} outputs (create it with layers [{}, ..., {}])",
                self.name,
                self.features(),
                self.classes(),
                self.features(),
                self.classes()
            )));
        }
        if let Some(d) = self.stored.get() {
            return Ok(d.clone());
        }
        let samples = SampleSet::from_flat(self.x.clone(), self.features())?;
        let data = Dataset::new(samples, Labels::Indices(self.y.clone()), n_in, n_out)?;
        let stored = Arc::new(StoredDataset {
            data,
            builtin: Some(self.name),
        });
        Ok(self.stored.get_or_init(|| stored).clone())
    }
}

fn cat_dog_ship() -> Builtin {
    #[rustfmt::skip]
    let x = vec![
        56.0, 231.0, 24.0, 1.0,     // cat   (x_1)
        120.0, 30.0, 24.0, 0.0,     // dog   (x_2)
        20.0, 31.0, 240.0, 100.0,   // ship  (x_3)
        56.0, 201.0, 22.0, -10.0,   // cat   (x_4; the notebook's -10 is kept)
        140.0, 27.0, 30.0, 10.0,    // dog   (x_5)
        25.0, 30.0, 230.0, 110.0,   // ship  (x_6)
    ];
    Builtin {
        name: "cat-dog-ship",
        description: "The course notebook's X and Y: six 2x2 images (pixel values, one of \
                      them -10), in the notebook's order cat, dog, ship, cat, dog, ship.",
        class_names: &["cat", "dog", "ship"],
        sample_shape: &[2, 2],
        x,
        y: vec![0, 1, 2, 0, 1, 2],
        stored: OnceLock::new(),
    }
}

fn iris() -> Builtin {
    const CSV: &str = include_str!("../data/iris.csv");
    let mut x = Vec::with_capacity(600);
    let mut y = Vec::with_capacity(150);
    for line in CSV.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        // The file is ours and fixed; a unit test checks every row parses.
        x.extend(
            fields[..4]
                .iter()
                .map(|f| f.trim().parse::<f64>().unwrap_or(f64::NAN)),
        );
        y.push(fields[4].trim().parse::<i64>().unwrap_or(-1));
    }
    Builtin {
        name: "iris",
        description: "Fisher's Iris data (1936): 150 flowers, 4 measurements in cm (sepal \
                      length, sepal width, petal length, petal width), 3 species.",
        class_names: &["setosa", "versicolor", "virginica"],
        sample_shape: &[4],
        x,
        y,
        stored: OnceLock::new(),
    }
}

/// Every built-in dataset, parsed once.
pub fn builtins() -> &'static [Builtin] {
    static ALL: OnceLock<Vec<Builtin>> = OnceLock::new();
    ALL.get_or_init(|| vec![cat_dog_ship(), iris()])
}

pub fn builtin(name: &str) -> Option<&'static Builtin> {
    builtins().iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iris_is_complete_and_finite() {
        let iris = builtin("iris").unwrap();
        assert_eq!(iris.samples(), 150);
        assert_eq!(iris.x.len(), 600);
        assert!(iris.x.iter().all(|v| v.is_finite() && *v > 0.0));
        for c in 0..3 {
            assert_eq!(iris.y.iter().filter(|&&y| y == c).count(), 50, "class {c}");
        }
        // R's copy (not UCI's): sample 35 (1-based) is 4.9,3.1,1.5,0.2 and 38 is 4.9,3.6,1.4,0.1.
        assert_eq!(&iris.x[34 * 4..35 * 4], &[4.9, 3.1, 1.5, 0.2]);
        assert_eq!(&iris.x[37 * 4..38 * 4], &[4.9, 3.6, 1.4, 0.1]);
        assert!(iris.for_network(4, 3).is_ok());
    }

    #[test]
    fn builtin_refuses_a_network_it_does_not_fit() {
        let err = builtin("cat-dog-ship")
            .unwrap()
            .for_network(4, 2)
            .unwrap_err();
        assert!(matches!(err, NnError::ShapeMismatch(m) if m.contains("3 classes")));
    }
}
