//! The one matrix product the core needs, `C = A · B`, on faer's GEMM.
//!
//! Operands are [`Strided`]: a slice and two strides, so a row-major buffer, its transpose
//! and a block of its columns are all views of one slice, checked against its length once
//! when made. [`matmul`] writes into a faer view, which `train.rs` splits to hand disjoint
//! blocks of one gradient to several threads; [`matmul_into`] takes ndarray views of any
//! layout. There is no `unsafe` here but the one line that clears the AVX state.
//!
//! Products of up to [`SMALL`] multiply-adds (every product of the notebook's nets) run a
//! plain loop that sums in index order without FMA, so their bits do not depend on the CPU
//! and the tiny nets pay no dispatch. Larger ones run `faer::linalg::matmul::matmul` on one
//! thread (`Par::Seq`): a product's bits then depend only on its operands and its shape,
//! which is what lets `train.rs` promise the same numbers for any thread count.
//!
//! Two things about faer 0.24 that shaped this file (`bench/README.md` has the figures):
//! - Its x86 kernels (private-gemm-x86, hand-written assembly) return with the upper halves
//!   of the vector registers dirty. On Intel CPUs every later SSE instruction then pays a
//!   transition penalty: glibc's `exp` and `ln`, which the softmax calls 100,000 times a
//!   blobs epoch, ran 25 times slower (166 ns instead of 7). [`matmul`] issues `vzeroupper`
//!   after each call.
//! - `MatMut::from_row_major_slice_with_stride_mut` builds a column-major view (its row
//!   stride is one) while checking the bounds of a row-major one: safe code that writes
//!   outside the slice. Nothing here calls it.

use faer::reborrow::ReborrowMut;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// Up to this many multiply-adds the plain loop runs: at 8x8x8 it and faer's small kernels
/// (nano-gemm) take the same 0.2 us, at 10x10x10 faer is three times faster (`cargo bench
/// --bench core -- gemm/small`). Every product of the notebook's nets is far below.
const SMALL: usize = 512;

/// A `rows x cols` matrix inside a slice: element `(i, j)` is `data[i * rs + j * cs]`, and
/// one of the strides is 1 (the matrix or its transpose is row-major with a row stride).
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

    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn faer(self) -> MatRef<'a, f64> {
        if self.cs == 1 {
            MatRef::from_row_major_slice_with_stride(self.data, self.rows, self.cols, self.rs)
        } else {
            MatRef::from_column_major_slice_with_stride(self.data, self.rows, self.cols, self.cs)
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

/// `c = a · b`, overwriting `c`; `a` is `(m, k)`, `b` is `(k, n)`, `c` is `(m, n)`.
///
/// # Panics
/// If the shapes do not agree: that is a bug in the caller, never a property of input data.
pub(crate) fn matmul(mut c: MatMut<'_, f64>, a: Strided<'_>, b: Strided<'_>) {
    check((c.nrows(), c.ncols()), a.shape(), b.shape());
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if m.saturating_mul(n).saturating_mul(k) <= SMALL {
        small(c, a, b);
        return;
    }
    faer::linalg::matmul::matmul(
        c.rb_mut(),
        Accum::Replace,
        a.faer(),
        b.faer(),
        1.0,
        Par::Seq,
    );
    clear_upper_state();
}

/// The plain loop: each `c[i][j]` is `((0 + a[i][0] b[0][j]) + a[i][1] b[1][j]) + ...`, in
/// index order without FMA, whichever way the loops run. Where the rows of `b` are
/// contiguous (the backward pass's `D W` and `D^T A`), four sums of a row of `c` advance
/// together over `p` in registers; otherwise one dot product at a time.
fn small(mut c: MatMut<'_, f64>, a: Strided<'_>, b: Strided<'_>) {
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
            for (q, s) in s.into_iter().enumerate() {
                c[(i, j + q)] = s;
            }
        }
        for j in blocked..n {
            c[(i, j)] = a.dot(i, &b, j);
        }
    }
}

/// `c = a · b` into a row-major `(m, n)` slice.
pub(crate) fn matmul_rows(c: &mut [f64], a: Strided<'_>, b: Strided<'_>) {
    let (m, n) = (a.rows, b.cols);
    matmul(MatMut::from_row_major_slice_mut(c, m, n), a, b);
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
    let ct = c.view_mut().reversed_axes();
    if let Some(s) = ct.into_slice() {
        return matmul(MatMut::from_column_major_slice_mut(s, m, n), a, b);
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

/// `vzeroupper`: marks the upper halves of the vector registers clean after faer's kernels,
/// so the SSE code that follows (glibc's `exp`, `ln`) runs at full speed. See the module doc.
#[inline]
fn clear_upper_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), the one requirement of `vzeroupper`;
        // it changes no register a Rust value lives in across this call.
        unsafe { std::arch::x86_64::_mm256_zeroupper() }
    }
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
        // Tiny (the loop), faer's small kernels, its packed kernels past one depth block,
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
    fn blocks_of_columns_are_products_of_blocks() {
        // What train.rs does with a weight gradient: column blocks of D^T A into row blocks
        // of the destination, and column blocks of A into column blocks of it, for tiny
        // blocks (the loop) and large ones (faer).
        for (m, out, inp, split_row, split_col) in [(300, 20, 30, 7, 11), (6, 4, 3, 1, 2)] {
            let d = exact(m, out, 3);
            let a = exact(m, inp, 4);
            let want = naive(&d.t().to_owned(), &a);
            let mut g = Array2::from_elem((out, inp), f64::NAN);
            let ds = Strided::rows(d.as_slice().unwrap(), m, out);
            let xs = Strided::rows(a.as_slice().unwrap(), m, inp);
            let gm = MatMut::from_row_major_slice_mut(g.as_slice_mut().unwrap(), out, inp);
            let (top, bottom) = gm.split_at_row_mut(split_row);
            matmul(top, ds.cols(0, split_row).t(), xs);
            let (left, right) = bottom.split_at_col_mut(split_col);
            let rest = out - split_row;
            matmul(left, ds.cols(split_row, rest).t(), xs.cols(0, split_col));
            matmul(
                right,
                ds.cols(split_row, rest).t(),
                xs.cols(split_col, inp - split_col),
            );
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
    #[should_panic(expected = "columns 3..+2 of 4")]
    fn a_block_past_the_last_column_panics() {
        let v = [0.0; 8];
        let _ = Strided::rows(&v, 2, 4).cols(3, 2);
    }
}
