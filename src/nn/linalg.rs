//! The one matrix product the core needs, `C = A · B`, on the `gemm` crate.
//!
//! Operands are [`Strided`]: a slice and two strides, so a row-major buffer, its transpose
//! and a block of its columns are all views of one slice, checked against its length once
//! when made; the result is a row-major slice. [`matmul_rows`] is what `train.rs` calls, on
//! chunks of rows and on blocks of gradient rows that several threads fill at once;
//! [`matmul_into`] takes ndarray views of any layout. The one `unsafe` is the call into
//! `gemm`, whose pointers and strides come from checked `Strided` values.
//!
//! Products of up to [`SMALL`] multiply-adds (every product of the notebook's nets) run a
//! plain loop that sums in index order without FMA, so their bits do not depend on the CPU
//! and the tiny nets pay no dispatch. Larger ones run `gemm::gemm` on one thread
//! (`Parallelism::None`): a product's bits then depend only on its operands, its shape and
//! the machine, which is what lets `train.rs` promise the same numbers for any thread count.
//!
//! Why `gemm` 0.19 and not faer 0.24 or the core's own kernel (`bench/README.md` has the
//! figures): it was the fastest of the three on a blobs epoch here (faer 6-7% slower, the
//! own kernel a third slower). It allocates its packing buffers on each call, which costs
//! less than it saves. faer's assembly kernels also leave the upper halves of the vector
//! registers dirty, which made every later SSE instruction (glibc's `exp`) 25 times slower
//! until a `vzeroupper` followed each call.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// Up to this many multiply-adds the plain loop runs (`cargo bench --bench core --
/// gemm/small` places it). Every product of the notebook's nets is far below.
const SMALL: usize = 512;

/// A `rows x cols` matrix inside a slice: element `(i, j)` is `data[i * rs + j * cs]`, and
/// one of the strides is 1 (the matrix or its transpose is row-major with a row stride).
/// Invariant, kept by every constructor: when the matrix is not empty,
/// `(rows - 1) * rs + (cols - 1) * cs < data.len()`, so every element is inside `data`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided<'a> {
    data: &'a [f64],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Strided<'a> {
    /// A row-major `rows x cols` matrix filling `data`.
    ///
    /// # Panics
    /// If `data` does not hold exactly `rows * cols` values.
    pub(crate) fn rows(data: &'a [f64], rows: usize, cols: usize) -> Self {
        assert_eq!(
            Some(data.len()),
            rows.checked_mul(cols),
            "a row-major {rows} x {cols} matrix in {} values",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Columns `start .. start + len`.
    ///
    /// # Panics
    /// If they are not all columns of this matrix.
    pub(crate) fn cols(self, start: usize, len: usize) -> Self {
        assert!(
            start + len <= self.cols,
            "columns {start}..+{len} of {}",
            self.cols
        );
        let offset = if self.rows == 0 { 0 } else { start * self.cs };
        Self {
            data: &self.data[offset.min(self.data.len())..],
            cols: len,
            ..self
        }
    }

    /// `sum_p self[i][p] * b[p][j]`, in order of `p`, from 0.
    #[inline]
    fn dot(&self, i: usize, b: &Strided<'_>, j: usize) -> f64 {
        let mut s = 0.0;
        if self.cs == 1 && b.rs == 1 {
            let row = &self.data[i * self.rs..][..self.cols];
            let col = &b.data[j * b.cs..][..b.rows];
            for (x, y) in row.iter().zip(col) {
                s += x * y;
            }
        } else {
            for p in 0..self.cols {
                s += self.data[i * self.rs + p * self.cs] * b.data[p * b.rs + j * b.cs];
            }
        }
        s
    }
}

/// `c = a · b`, overwriting `c`, row-major `(m, n)`; `a` is `(m, k)`, `b` is `(k, n)`.
///
/// # Panics
/// If the shapes do not agree: that is a bug in the caller, never a property of input data.
pub(crate) fn matmul_rows(c: &mut [f64], a: Strided<'_>, b: Strided<'_>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        k == b.rows && c.len() == m * n,
        "matmul: ({m}, {k}) x ({}, {n}) into {} values: the shapes do not agree",
        b.rows,
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if m.saturating_mul(n).saturating_mul(k) <= SMALL {
        small(c, a, b);
    } else {
        gemm_rows(c, a, b);
    }
}

/// `c = a · b` through the gemm crate, shapes already checked by [`matmul_rows`] (and
/// `m`, `n` not zero); `pub(crate)` so that `benches/core.rs` can place [`SMALL`].
pub(crate) fn gemm_rows(c: &mut [f64], a: Strided<'_>, b: Strided<'_>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        k == b.rows && c.len() == m * n,
        "gemm_rows: the shapes do not agree"
    );
    // SAFETY: `a` and `b` are Strided values, every element of which is inside its slice
    // (the type's invariant), and their shapes are (m, k) and (k, n), none of them zero
    // (checked above); `c` is a unique borrow of exactly m * n values, written row-major
    // (row stride n, column stride 1), so it aliases neither operand. With `read_dst`
    // false, gemm overwrites `c` without reading it; `Parallelism::None` keeps the call on
    // this thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The plain loop: each `c[i][j]` is `((0 + a[i][0] b[0][j]) + a[i][1] b[1][j]) + ...`, in
/// index order without FMA, whichever way the loops run. Where the rows of `b` are
/// contiguous (the backward pass's `D W` and `D^T A`), four sums of a row of `c` advance
/// together over `p` in registers; otherwise one dot product at a time.
fn small(c: &mut [f64], a: Strided<'_>, b: Strided<'_>) {
    const W: usize = 4;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let blocked = if b.cs == 1 && !(a.cs == 1 && b.rs == 1) {
        n - n % W
    } else {
        0
    };
    for i in 0..m {
        for j in (0..blocked).step_by(W) {
            let mut s = [0.0; W];
            for p in 0..k {
                let x = a.data[i * a.rs + p * a.cs];
                let row = &b.data[p * b.rs + j..][..W];
                for (s, y) in s.iter_mut().zip(row) {
                    *s += x * y;
                }
            }
            c[i * n + j..][..W].copy_from_slice(&s);
        }
        for j in blocked..n {
            c[i * n + j] = a.dot(i, &b, j);
        }
    }
}

/// `c = a · b` for ndarray views of any layout (what is neither row- nor column-major is
/// copied first).
///
/// # Panics
/// If the shapes do not agree.
pub fn matmul_into(c: &mut ArrayViewMut2<'_, f64>, a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) {
    check(c.dim(), a.dim(), b.dim());
    let (a_own, b_own);
    let a = match strided(&a) {
        Some(s) => s,
        None => {
            a_own = a.as_standard_layout().into_owned();
            strided(&a_own.view()).expect("a standard-layout array is contiguous")
        }
    };
    let b = match strided(&b) {
        Some(s) => s,
        None => {
            b_own = b.as_standard_layout().into_owned();
            strided(&b_own.view()).expect("a standard-layout array is contiguous")
        }
    };
    let (m, n) = c.dim();
    if let Some(s) = c.as_slice_mut() {
        return matmul_rows(s, a, b);
    }
    // A column-major C is a row-major C^T = B^T A^T.
    let ct = c.view_mut().reversed_axes();
    if let Some(s) = ct.into_slice() {
        return matmul_rows(s, b.t(), a.t());
    }
    let mut tmp = Array2::zeros((m, n));
    let s = tmp.as_slice_mut().expect("a fresh array is contiguous");
    matmul_rows(s, a, b);
    c.assign(&tmp);
}

/// An ndarray view as a [`Strided`], if it is row-major or column-major and contiguous.
fn strided<'a>(a: &ArrayView2<'a, f64>) -> Option<Strided<'a>> {
    let (rows, cols) = a.dim();
    if let Some(s) = a.to_slice() {
        return Some(Strided::rows(s, rows, cols));
    }
    // A view is Copy: its transpose keeps the lifetime of the data.
    let t: ArrayView2<'a, f64> = (*a).reversed_axes();
    t.to_slice().map(|s| Strided::rows(s, cols, rows).t())
}

fn check(c: (usize, usize), a: (usize, usize), b: (usize, usize)) {
    assert!(
        a.1 == b.0 && c == (a.0, b.1),
        "matmul: {a:?} x {b:?} into {c:?}: the shapes do not agree"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[(i, p)] * b[(p, j)]).sum())
    }

    /// Small integers times powers of two: every partial sum is exact, so any summation
    /// order (and FMA) gives the same bits and `==` is the right comparison.
    fn exact(rows: usize, cols: usize, salt: usize) -> Array2<f64> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            ((i * 7 + j * 3 + salt) % 11) as f64 - 5.0
        })
    }

    #[test]
    fn every_path_and_layout_matches_the_definition() {
        // Tiny (the loop), gemm's small kernels, its packed kernels past one depth block,
        // vectors, and sizes that leave partial register tiles.
        let shapes = [
            (6, 4, 3),
            (3, 6, 9),
            (4, 6, 8),
            (1, 1, 1),
            (12, 12, 12),
            (70, 64, 128),
            (128, 600, 10),
            (1, 300, 1),
            (10, 1000, 1),
            (257, 3, 129),
        ];
        for &(m, k, n) in &shapes {
            let a = exact(m, k, 1);
            let b = exact(k, n, 2);
            let want = naive(&a, &b);
            let (at, bt) = (a.t().to_owned(), b.t().to_owned());
            // Row-major operands and C.
            let mut c = Array2::from_elem((m, n), f64::NAN);
            matmul_into(&mut c.view_mut(), a.view(), b.view());
            assert_eq!(c, want, "({m}, {k}) x ({k}, {n}), row-major");
            // A column-major, B row-major (the backward pass's D^T A).
            let mut c = Array2::from_elem((m, n), f64::NAN);
            matmul_into(&mut c.view_mut(), at.t(), b.view());
            assert_eq!(c, want, "({m}, {k}) x ({k}, {n}), column-major A");
            // Column-major operands (transposed views) and C.
            let mut ct = Array2::from_elem((n, m), f64::NAN);
            matmul_into(&mut ct.view_mut().reversed_axes(), at.t(), bt.t());
            assert_eq!(ct.t(), want, "({m}, {k}) x ({k}, {n}), column-major");
            // Strided views: every other column of a wider C, reversed rows of A; these
            // take the copying path.
            let mut wide = Array2::from_elem((m, 2 * n), f64::NAN);
            let mut c_gap = wide.slice_mut(ndarray::s![.., ..;2]);
            matmul_into(&mut c_gap, a.slice(ndarray::s![..;-1, ..]), b.view());
            assert_eq!(
                c_gap.slice(ndarray::s![..;-1, ..]),
                want,
                "({m}, {k}) x ({k}, {n}), strided C and reversed A"
            );
        }
    }

    #[test]
    fn blocks_of_rows_are_products_of_column_blocks() {
        // What train.rs does with a weight gradient: row blocks of dW = D^T A are products
        // of column blocks of D, for tiny blocks (the loop) and large ones (gemm).
        for (m, out, inp, split) in [(300, 20, 30, 7), (6, 4, 3, 1), (6, 5, 4, 2)] {
            let d = exact(m, out, 3);
            let a = exact(m, inp, 4);
            let want = naive(&d.t().to_owned(), &a);
            let mut g = Array2::from_elem((out, inp), f64::NAN);
            let ds = Strided::rows(d.as_slice().unwrap(), m, out);
            let xs = Strided::rows(a.as_slice().unwrap(), m, inp);
            let (top, bottom) = g.as_slice_mut().unwrap().split_at_mut(split * inp);
            matmul_rows(top, ds.cols(0, split).t(), xs);
            matmul_rows(bottom, ds.cols(split, out - split).t(), xs);
            assert_eq!(g, want, "({m}, {out}) x ({m}, {inp})");
        }
    }

    #[test]
    #[should_panic(expected = "the shapes do not agree")]
    fn mismatched_shapes_panic_before_touching_memory() {
        let a = Array2::<f64>::zeros((3, 4));
        let b = Array2::<f64>::zeros((5, 2));
        let mut c = Array2::<f64>::zeros((3, 2));
        matmul_into(&mut c.view_mut(), a.view(), b.view());
    }

    #[test]
    #[should_panic(expected = "the shapes do not agree")]
    fn a_result_of_the_wrong_size_panics_before_touching_memory() {
        let (a, b) = ([0.0; 12], [0.0; 8]);
        let mut c = [0.0; 5];
        matmul_rows(&mut c, Strided::rows(&a, 3, 4), Strided::rows(&b, 4, 2));
    }

    #[test]
    #[should_panic(expected = "columns 3..+2 of 4")]
    fn a_block_past_the_last_column_panics() {
        let v = [0.0; 8];
        let _ = Strided::rows(&v, 2, 4).cols(3, 2);
    }
}
