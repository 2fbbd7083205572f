//! The one matrix product the core needs, `C = A · B`, on faer's GEMM.
//!
//! [`matmul_into`] takes ndarray views of any layout; [`matmul`] takes faer views, which
//! `train.rs` uses to hand out disjoint blocks of one gradient to several threads. Both check
//! the shapes and hold no `unsafe` of their own but the one line that clears the AVX state.
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
//!   outside the slice. Nothing here calls it; [`mat_mut`] uses the plain constructors.

use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// Up to this many multiply-adds the plain loop runs (faer's own threshold for its small
/// kernels is 4096; below ~1000 the loop wins: `cargo bench --bench core -- gemm/small`).
const SMALL: usize = 1024;

/// `c = a · b`, overwriting `c`; `a` is `(m, k)`, `b` is `(k, n)`, `c` is `(m, n)`, in any
/// memory layout (a layout faer cannot take is copied first).
///
/// # Panics
/// If the shapes do not agree: that is a bug in the caller, never a property of input data.
pub fn matmul_into(c: &mut ArrayViewMut2<'_, f64>, a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) {
    check(c.dim(), a.dim(), b.dim());
    // Views whose elements are not one contiguous run (a slice of columns, say) are copied
    // to row-major first; the core's own buffers never need it.
    let (a_own, b_own);
    let a = match mat(a) {
        Some(m) => m,
        None => {
            a_own = a.as_standard_layout().into_owned();
            mat(a_own.view()).expect("a standard-layout array is contiguous")
        }
    };
    let b = match mat(b) {
        Some(m) => m,
        None => {
            b_own = b.as_standard_layout().into_owned();
            mat(b_own.view()).expect("a standard-layout array is contiguous")
        }
    };
    match mat_mut(c.view_mut()) {
        Some(dst) => matmul(dst, a, b),
        None => {
            let mut tmp = Array2::zeros(c.dim());
            matmul(
                mat_mut(tmp.view_mut()).expect("a fresh array is contiguous"),
                a,
                b,
            );
            c.assign(&tmp);
        }
    }
}

/// `c = a · b` on faer views.
///
/// # Panics
/// If the shapes do not agree.
pub(crate) fn matmul(mut c: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    check(
        (c.nrows(), c.ncols()),
        (a.nrows(), a.ncols()),
        (b.nrows(), b.ncols()),
    );
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    if m == 0 || n == 0 {
        return;
    }
    if m.saturating_mul(n).saturating_mul(k) <= SMALL {
        for i in 0..m {
            let row = a.row(i);
            for j in 0..n {
                let mut s = 0.0;
                for (x, y) in row.iter().zip(b.col(j).iter()) {
                    s += x * y;
                }
                c[(i, j)] = s;
            }
        }
        return;
    }
    faer::linalg::matmul::matmul(c, Accum::Replace, a, b, 1.0, Par::Seq);
    clear_upper_state();
}

fn check(c: (usize, usize), a: (usize, usize), b: (usize, usize)) {
    assert!(
        a.1 == b.0 && c == (a.0, b.1),
        "matmul: {a:?} x {b:?} into {c:?}: the shapes do not agree"
    );
}

/// An ndarray view as a faer view, if its elements are one contiguous run in row-major
/// (standard) or column-major order.
pub(crate) fn mat(a: ArrayView2<'_, f64>) -> Option<MatRef<'_, f64>> {
    let (rows, cols) = a.dim();
    if let Some(s) = a.to_slice() {
        return Some(MatRef::from_row_major_slice(s, rows, cols));
    }
    let t = a.reversed_axes();
    t.to_slice()
        .map(|s| MatRef::from_row_major_slice(s, cols, rows).transpose())
}

/// [`mat`] for a mutable view.
pub(crate) fn mat_mut(a: ArrayViewMut2<'_, f64>) -> Option<MatMut<'_, f64>> {
    let (rows, cols) = a.dim();
    if a.is_standard_layout() {
        return a
            .into_slice()
            .map(|s| MatMut::from_row_major_slice_mut(s, rows, cols));
    }
    let t = a.reversed_axes();
    if t.is_standard_layout() {
        return t
            .into_slice()
            .map(|s| MatMut::from_row_major_slice_mut(s, cols, rows).transpose_mut());
    }
    None
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
    fn blocks_of_a_faer_view_are_products_of_blocks() {
        // What train.rs does with a weight gradient: column blocks of D^T A into row blocks
        // of the destination, and column blocks of A into column blocks of it.
        let (m, out, inp) = (300, 20, 30);
        let d = exact(m, out, 3);
        let a = exact(m, inp, 4);
        let want = naive(&d.t().to_owned(), &a);
        let mut g = Array2::from_elem((out, inp), f64::NAN);
        {
            let dm = mat(d.view()).unwrap();
            let am = mat(a.view()).unwrap();
            let (top, bottom) = mat_mut(g.view_mut()).unwrap().split_at_row_mut(7);
            matmul(top, dm.subcols(0, 7).transpose(), am);
            let (left, right) = bottom.split_at_col_mut(11);
            matmul(left, dm.subcols(7, 13).transpose(), am.subcols(0, 11));
            matmul(right, dm.subcols(7, 13).transpose(), am.subcols(11, 19));
        }
        assert_eq!(g, want);
    }

    #[test]
    #[should_panic(expected = "the shapes do not agree")]
    fn mismatched_shapes_panic_before_touching_memory() {
        let a = Array2::<f64>::zeros((3, 4));
        let b = Array2::<f64>::zeros((5, 2));
        let mut c = Array2::<f64>::zeros((3, 2));
        matmul_into(&mut c.view_mut(), a.view(), b.view());
    }
}
