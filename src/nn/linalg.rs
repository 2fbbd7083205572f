//! The one matrix product the core needs, `C = A · B` over ndarray views (any strides, so
//! transposes are free).
//!
//! Large products go to the `gemm` crate: pure Rust, it picks AVX-512 / AVX2 / SSE kernels
//! at run time on stable Rust, and keeps its packing buffers in thread-locals, so a training
//! loop that calls it repeatedly allocates nothing after its first epoch. ndarray's own
//! backend (matrixmultiply) was rejected: it has no AVX-512 kernels and allocates its packing
//! buffer on every call. The notebook's products (6x4 by 4x3) are far below the size where
//! packing pays, so those run a plain triple loop.

use ndarray::{ArrayView2, ArrayViewMut2};

/// Below this many multiply-adds a plain loop beats any packing GEMM.
const SMALL: usize = 4096;

/// `c = a · b`, overwriting `c`. Shapes are the caller's invariant: `a` is `(m, k)`,
/// `b` is `(k, n)`, `c` is `(m, n)`.
pub fn matmul_into(c: &mut ArrayViewMut2<'_, f64>, a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert!(
        k == k2 && c.dim() == (m, n),
        "matmul_into: ({m}, {k}) x ({k2}, {n}) into {:?}",
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    if m.saturating_mul(n).saturating_mul(k) <= SMALL {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += a[(i, p)] * b[(p, j)];
                }
                c[(i, j)] = s;
            }
        }
        return;
    }
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    // SAFETY: the pointers and strides come from live ndarray views whose shapes were checked
    // above, so every index gemm touches is in bounds; `c` is a unique borrow, so it aliases
    // neither `a` nor `b`. `read_dst = false` makes gemm ignore c's old contents, and its
    // `beta` (the product's factor; `alpha` scales dst) is 1.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn naive(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[(i, p)] * b[(p, j)]).sum())
    }

    #[test]
    fn small_and_large_products_agree_with_the_definition() {
        for &(m, k, n) in &[
            (6, 4, 3),
            (3, 6, 4),
            (70, 64, 128),
            (128, 300, 10),
            (1, 1, 1),
        ] {
            let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0);
            let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j) % 13) as f64 * 0.25);
            let mut c = Array2::from_elem((m, n), f64::NAN);
            matmul_into(&mut c.view_mut(), a.view(), b.view());
            assert_eq!(c, naive(&a, &b), "({m}, {k}) x ({k}, {n})");
            // Transposed views (negative of contiguous strides) must work too.
            let bt = b.t().to_owned();
            let mut c2 = Array2::from_elem((m, n), f64::NAN);
            matmul_into(&mut c2.view_mut(), a.view(), bt.t());
            assert_eq!(c2, c, "transposed rhs, ({m}, {k}) x ({k}, {n})");
        }
    }
}
