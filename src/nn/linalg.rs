//! The one matrix product the core needs, `C = A · B` over ndarray views (any strides, so
//! transposes are free).
//!
//! Large products run a packed, cache-blocked GEMM written here (the Goto/BLIS scheme): the
//! operands are copied block by block into thread-local buffers laid out for a register-tile
//! kernel, picked at run time: AVX-512 (16x12 tile), AVX2+FMA (8x6), or portable Rust (4x4).
//! The buffers only ever grow, so a training loop that calls this repeatedly allocates nothing
//! after its first epoch. The crates measured instead (`bench/README.md` has the figures):
//! `gemm` 0.19 allocates its packed right-hand side and a bookkeeping vector on every call
//! (8 allocations per epoch of a `[64, 128, 10]` net), ndarray's own backend (matrixmultiply)
//! allocates its packing buffer on every call, and `faer` allocates nothing but would bring
//! about 65 crates. The notebook's products (6x4 by 4x3) are far below the
//! size where packing pays, so those run a plain loop that sums in index order without FMA:
//! their bits do not depend on the CPU. (Packed products do, in the last place: FMA or not,
//! and the tile shape, change the rounding.)

use std::cell::RefCell;

use ndarray::{ArrayView2, ArrayViewMut2};

/// Up to this many multiply-adds a plain loop beats packing: packing's fixed cost is about
/// 200 ns, the loop's rate about 3 GFLOP/s (`cargo bench --bench core -- gemm/small`: the
/// loop wins at 8x8x8, packing at 12x12x12).
const SMALL: usize = 1024;

/// Depth of one packed block: a `KC x NR` sliver of B stays in L1 while the kernel runs.
const KC: usize = 256;
/// Rows of A packed at once (`MC x KC` doubles, 384 KiB, sit in L2); a multiple of every MR.
const MC: usize = 192;
/// Columns of B packed at once (`KC x NC`, 8 MiB, sit in L3); a multiple of every NR.
const NC: usize = 4080;
/// The largest register tile, `MR * NR`, over the kernels below.
const TILE: usize = 16 * 12;

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
        small(c, a, b);
        return;
    }
    large(Kernel::detect(), c, a, b);
}

/// The packed product, with the shapes already checked and all three dimensions nonzero.
/// (`pub(crate)`, like `small`, so `benches/core.rs` can time both sides of `SMALL`.)
pub(crate) fn large(
    kernel: Kernel,
    c: &mut ArrayViewMut2<'_, f64>,
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let c_ptr = c.as_mut_ptr();
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    let a = Strided::new(a.as_ptr(), a.strides());
    let b = Strided::new(b.as_ptr(), b.strides());
    // C = A B and C^T = B^T A^T are the same product; take the orientation whose C has
    // contiguous columns, so whole tiles are stored straight from the registers (measured
    // faster on every product of a blobs epoch than minimising the tile's padding); if
    // neither or both, the one that wastes less of the tile on padding.
    let waste = |m: usize, n: usize| m.next_multiple_of(kernel.mr) * n.next_multiple_of(kernel.nr);
    let swap = match (c_rs.unsigned_abs() == 1, c_cs.unsigned_abs() == 1) {
        (true, false) => false,
        (false, true) => true,
        _ => waste(n, m) < waste(m, n),
    };
    // SAFETY: the three descriptors come from live views whose shapes the caller checked, so
    // every (i, j) with i < rows, j < cols is in bounds; `c` is a unique borrow, so it
    // aliases neither `a` nor `b`.
    unsafe {
        if swap {
            packed(kernel, n, m, k, b.t(), a.t(), c_ptr, c_cs, c_rs);
        } else {
            packed(kernel, m, n, k, a, b, c_ptr, c_rs, c_cs);
        }
    }
}

/// The plain loop for tiny products. Raw reads: ndarray's checked indexing cost as much as
/// the arithmetic here.
pub(crate) fn small(
    c: &mut ArrayViewMut2<'_, f64>,
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
) {
    let k = a.ncols();
    let (a, b) = (
        Strided::new(a.as_ptr(), a.strides()),
        Strided::new(b.as_ptr(), b.strides()),
    );
    for (i, mut row) in c.rows_mut().into_iter().enumerate() {
        for (j, out) in row.iter_mut().enumerate() {
            let mut s = 0.0;
            for p in 0..k {
                // SAFETY: i < m, p < k, j < n, the shapes matmul_into checked.
                s += unsafe { a.at(i, p) * b.at(p, j) };
            }
            *out = s;
        }
    }
}

/// A matrix operand as a pointer and two strides, in elements: `(i, j)` is at
/// `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
struct Strided {
    ptr: *const f64,
    rs: isize,
    cs: isize,
}

impl Strided {
    fn new(ptr: *const f64, strides: &[isize]) -> Self {
        Self {
            ptr,
            rs: strides[0],
            cs: strides[1],
        }
    }

    fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// # Safety
    /// `(i, j)` must be inside the matrix this was made from.
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> f64 {
        // SAFETY: the caller's bounds; offsets of an in-bounds element fit in isize.
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

/// A register-tile kernel: `micro(kc, a, lda, b, dst, ld, add)` computes the `mr x nr`
/// product of an `mr x kc` sliver of A (its columns contiguous and `lda` apart: `mr` when
/// packed) and a packed `kc x nr` sliver of B (row after row), and writes it (or with `add`, adds it) to `dst`, column-major with
/// leading dimension `ld`: straight into C when C's columns are contiguous and the tile is
/// whole, else into a scratch tile that [`store_tile`] copies out.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    mr: usize,
    nr: usize,
    micro: unsafe fn(usize, *const f64, isize, *const f64, *mut f64, isize, bool),
}

impl Kernel {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            // std caches the CPUID answers, so this is two relaxed loads per call.
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self {
                    mr: 16,
                    nr: 12,
                    micro: x86::micro_16x12,
                };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self {
                    mr: 8,
                    nr: 6,
                    micro: x86::micro_8x6,
                };
            }
        }
        Self {
            mr: 4,
            nr: 4,
            micro: micro_4x4,
        }
    }
}

/// The most the packing buffers of one thread grow to, in bytes: an `MC x KC` block of A and
/// a `KC x NC` block of B (MC and NC are multiples of every tile side, so no rounding adds).
pub const SCRATCH_BYTES: usize = (MC + NC) * KC * std::mem::size_of::<f64>();

/// Packing buffers, per thread, grown to the largest block seen and never shrunk.
struct Buffers {
    a: Vec<f64>,
    b: Vec<f64>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = const {
        RefCell::new(Buffers { a: Vec::new(), b: Vec::new() })
    };
}

/// The blocked product `C = A B` for `(m, k) x (k, n)`, C at `c` with strides `(rs, cs)`.
///
/// # Safety
/// `a`, `b` and `c` must describe matrices of those shapes, `c` writable and aliasing
/// neither operand.
#[allow(clippy::too_many_arguments)]
unsafe fn packed(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: Strided,
    b: Strided,
    c: *mut f64,
    rs: isize,
    cs: isize,
) {
    let Kernel { mr, nr, micro } = kernel;
    BUFFERS.with_borrow_mut(|buf| {
        let kc_max = k.min(KC);
        let need_a = m.min(MC).next_multiple_of(mr) * kc_max;
        let need_b = n.min(NC).next_multiple_of(nr) * kc_max;
        if buf.a.len() < need_a {
            buf.a.resize(need_a, 0.0);
        }
        if buf.b.len() < need_b {
            buf.b.resize(need_b, 0.0);
        }
        let mut tile = Tile([0.0; TILE]);
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                // SAFETY: the block [pc, pc + kc) x [jc, jc + nc) is inside B, and the buffer
                // holds nc rounded up to nr columns of kc rows.
                unsafe { pack(&mut buf.b, b.t(), jc, nc, pc, kc, nr) };
                for ic in (0..m).step_by(MC) {
                    let mcb = MC.min(m - ic);
                    // SAFETY: A's block [ic, ic + mcb) x [pc, pc + kc) is inside A, and the
                    // buffer holds mcb rounded up to mr rows of kc.
                    unsafe { pack(&mut buf.a, a, ic, mcb, pc, kc, mr) };
                    for jr in (0..nc).step_by(nr) {
                        let nr_eff = nr.min(nc - jr);
                        let b_sliver = buf.b[jr * kc..].as_ptr();
                        for ir in (0..mcb).step_by(mr) {
                            let mr_eff = mr.min(mcb - ir);
                            let a_sliver = buf.a[ir * kc..].as_ptr();
                            let lda = mr as isize;
                            let add = pc > 0;
                            // SAFETY: rows ic + ir .. + mr_eff and columns jc + jr .. + nr_eff
                            // are inside C; the slivers hold kc * mr and kc * nr packed
                            // values (zero-padded past the matrix edge); the tile holds
                            // mr * nr. A whole tile with contiguous columns is all inside C.
                            unsafe {
                                let dst =
                                    c.offset((ic + ir) as isize * rs + (jc + jr) as isize * cs);
                                if rs == 1 && mr_eff == mr && nr_eff == nr {
                                    micro(kc, a_sliver, lda, b_sliver, dst, cs, add);
                                } else {
                                    let t = tile.0.as_mut_ptr();
                                    micro(kc, a_sliver, lda, b_sliver, t, mr as isize, false);
                                    store_tile(&tile.0, mr, mr_eff, nr_eff, dst, rs, cs, add);
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

#[repr(align(64))]
struct Tile([f64; TILE]);

/// Packs `src[r0 .. r0 + rows, c0 .. c0 + depth]` as slivers of `w` rows, each stored column
/// after column (`w` values per column), rows past `rows` zero. A's blocks are packed as
/// they are, with `w = MR`; B's as `B^T`, with `w = NR`.
///
/// # Safety
/// The block must be inside `src`, and `dst` hold `rows` rounded up to `w`, times `depth`.
unsafe fn pack(
    dst: &mut [f64],
    src: Strided,
    r0: usize,
    rows: usize,
    c0: usize,
    depth: usize,
    w: usize,
) {
    // SAFETY: passed through; a constant sliver width lets the copies unroll.
    unsafe {
        match w {
            16 => pack_w::<16>(dst, src, r0, rows, c0, depth),
            12 => pack_w::<12>(dst, src, r0, rows, c0, depth),
            8 => pack_w::<8>(dst, src, r0, rows, c0, depth),
            6 => pack_w::<6>(dst, src, r0, rows, c0, depth),
            4 => pack_w::<4>(dst, src, r0, rows, c0, depth),
            _ => unreachable!("no kernel has a tile side of {w}"),
        }
    }
}

/// # Safety
/// As for [`pack`].
unsafe fn pack_w<const W: usize>(
    dst: &mut [f64],
    src: Strided,
    r0: usize,
    rows: usize,
    c0: usize,
    depth: usize,
) {
    let dst = &mut dst[..rows.next_multiple_of(W) * depth];
    let whole = rows / W;
    if src.rs == 1 {
        // Columns are contiguous: walk them in memory order, cutting each into W-wide
        // pieces, one per sliver, so a large operand streams through once.
        for p in 0..depth {
            // SAFETY: (r0, c0 + p) is inside src, and rows r0 .. r0 + rows are contiguous.
            let col = unsafe {
                std::slice::from_raw_parts(
                    src.ptr.offset(r0 as isize + (c0 + p) as isize * src.cs),
                    rows,
                )
            };
            for (s, piece) in col.chunks_exact(W).enumerate() {
                let at = s * W * depth + p * W;
                dst[at..at + W].copy_from_slice(piece);
            }
            if whole * W < rows {
                let tail = &col[whole * W..];
                let at = whole * W * depth + p * W;
                dst[at..at + tail.len()].copy_from_slice(tail);
                dst[at + tail.len()..at + W].fill(0.0);
            }
        }
        return;
    }
    for (s, sliver) in dst.chunks_exact_mut(W * depth).enumerate() {
        let live = W.min(rows - s * W);
        // SAFETY: (r0 + s * W, c0) is inside src: s * W < rows.
        let origin = unsafe {
            src.ptr
                .offset((r0 + s * W) as isize * src.rs + c0 as isize * src.cs)
        };
        if live < W {
            sliver.fill(0.0);
        }
        if src.cs == 1 {
            // Rows are contiguous: read each row once, scatter it down the sliver.
            for i in 0..live {
                // SAFETY: row s * W + i < rows, columns c0 .. c0 + depth, contiguous.
                let row = unsafe {
                    std::slice::from_raw_parts(origin.offset(i as isize * src.rs), depth)
                };
                for (out, &v) in sliver.chunks_exact_mut(W).zip(row) {
                    out[i] = v;
                }
            }
        } else {
            for (p, out) in sliver.chunks_exact_mut(W).enumerate() {
                for (i, v) in out[..live].iter_mut().enumerate() {
                    // SAFETY: i < live and p < depth keep the element inside the block.
                    *v = unsafe { *origin.offset(i as isize * src.rs + p as isize * src.cs) };
                }
            }
        }
    }
}

/// Writes (or, with `add`, adds) the live `mr_eff x nr_eff` corner of a tile into C.
///
/// # Safety
/// `dst` must point at C's element where the tile starts, with the tile's live part inside C.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn store_tile(
    tile: &[f64],
    mr: usize,
    mr_eff: usize,
    nr_eff: usize,
    dst: *mut f64,
    rs: isize,
    cs: isize,
    add: bool,
) {
    for (j, col) in tile.chunks_exact(mr).take(nr_eff).enumerate() {
        // SAFETY: column j < nr_eff of the tile is inside C.
        let d = unsafe { dst.offset(j as isize * cs) };
        if rs == 1 {
            // SAFETY: the column's mr_eff elements are contiguous in C, and C is not
            // otherwise borrowed while this slice lives.
            let out = unsafe { std::slice::from_raw_parts_mut(d, mr_eff) };
            if add {
                out.iter_mut().zip(col).for_each(|(o, t)| *o += t);
            } else {
                out.copy_from_slice(&col[..mr_eff]);
            }
        } else {
            for (i, &t) in col[..mr_eff].iter().enumerate() {
                // SAFETY: row i < mr_eff is inside C.
                unsafe {
                    let o = d.offset(i as isize * rs);
                    *o = if add { *o + t } else { t };
                }
            }
        }
    }
}

/// The portable kernel, for CPUs without AVX2.
///
/// # Safety
/// `a` must hold `kc` columns of 4 values, `lda` apart, `b` `kc * 4`; `dst` a 4x4
/// column-major tile, stride `ld`.
unsafe fn micro_4x4(
    kc: usize,
    a: *const f64,
    lda: isize,
    b: *const f64,
    dst: *mut f64,
    ld: isize,
    add: bool,
) {
    // SAFETY: the caller's sizes.
    let b = unsafe { std::slice::from_raw_parts(b, 4 * kc) };
    let mut acc = [[0.0f64; 4]; 4];
    for (p, bp) in b.chunks_exact(4).enumerate() {
        // SAFETY: column p < kc of the sliver holds 4 contiguous values.
        let ap = unsafe { std::slice::from_raw_parts(a.offset(p as isize * lda), 4) };
        for (accj, &bj) in acc.iter_mut().zip(bp) {
            for (acc, &ai) in accj.iter_mut().zip(ap) {
                *acc += ai * bj;
            }
        }
    }
    for (j, accj) in acc.iter().enumerate() {
        for (i, &v) in accj.iter().enumerate() {
            // SAFETY: (i, j) is inside the 4x4 tile.
            unsafe {
                let o = dst.offset(j as isize * ld + i as isize);
                *o = if add { *o + v } else { v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 16 rows (two 8-lane vectors) by 12 columns: 24 accumulators of the 32 zmm registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `a` must hold `kc` columns of 16 values, `lda` apart, `b`
    /// `kc * 12`; `dst` a
    /// 16x12 column-major tile with column stride `ld`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn micro_16x12(
        kc: usize,
        a: *const f64,
        lda: isize,
        b: *const f64,
        dst: *mut f64,
        ld: isize,
        add: bool,
    ) {
        const NR: usize = 12;
        let mut acc = [[_mm512_setzero_pd(); 2]; NR];
        for p in 0..kc {
            // SAFETY: p < kc, so these reads are inside the packed slivers.
            unsafe {
                let col = a.offset(p as isize * lda);
                let a0 = _mm512_loadu_pd(col);
                let a1 = _mm512_loadu_pd(col.add(8));
                for (j, acc) in acc.iter_mut().enumerate() {
                    let bj = _mm512_set1_pd(*b.add(p * NR + j));
                    acc[0] = _mm512_fmadd_pd(a0, bj, acc[0]);
                    acc[1] = _mm512_fmadd_pd(a1, bj, acc[1]);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: column j < NR of the tile, rows 0 .. MR, are inside dst.
            unsafe {
                let col = dst.offset(j as isize * ld);
                let (mut lo, mut hi) = (acc[0], acc[1]);
                if add {
                    lo = _mm512_add_pd(lo, _mm512_loadu_pd(col));
                    hi = _mm512_add_pd(hi, _mm512_loadu_pd(col.add(8)));
                }
                _mm512_storeu_pd(col, lo);
                _mm512_storeu_pd(col.add(8), hi);
            }
        }
    }

    /// 8 rows (two 4-lane vectors) by 6 columns: 12 accumulators of the 16 ymm registers.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `a` must hold `kc` columns of 8 values, `lda` apart,
    /// `b` `kc * 6`; `dst` an
    /// 8x6 column-major tile with column stride `ld`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn micro_8x6(
        kc: usize,
        a: *const f64,
        lda: isize,
        b: *const f64,
        dst: *mut f64,
        ld: isize,
        add: bool,
    ) {
        const NR: usize = 6;
        let mut acc = [[_mm256_setzero_pd(); 2]; NR];
        for p in 0..kc {
            // SAFETY: p < kc, so these reads are inside the packed slivers.
            unsafe {
                let col = a.offset(p as isize * lda);
                let a0 = _mm256_loadu_pd(col);
                let a1 = _mm256_loadu_pd(col.add(4));
                for (j, acc) in acc.iter_mut().enumerate() {
                    let bj = _mm256_set1_pd(*b.add(p * NR + j));
                    acc[0] = _mm256_fmadd_pd(a0, bj, acc[0]);
                    acc[1] = _mm256_fmadd_pd(a1, bj, acc[1]);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: column j < NR of the tile, rows 0 .. MR, are inside dst.
            unsafe {
                let col = dst.offset(j as isize * ld);
                let (mut lo, mut hi) = (acc[0], acc[1]);
                if add {
                    lo = _mm256_add_pd(lo, _mm256_loadu_pd(col));
                    hi = _mm256_add_pd(hi, _mm256_loadu_pd(col.add(4)));
                }
                _mm256_storeu_pd(col, lo);
                _mm256_storeu_pd(col.add(4), hi);
            }
        }
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

    /// Every kernel this CPU can run, the portable one always.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        let mut ks = vec![(
            "portable 4x4",
            Kernel {
                mr: 4,
                nr: 4,
                micro: micro_4x4,
            },
        )];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                ks.push((
                    "avx2 8x6",
                    Kernel {
                        mr: 8,
                        nr: 6,
                        micro: x86::micro_8x6,
                    },
                ));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                ks.push((
                    "avx512 16x12",
                    Kernel {
                        mr: 16,
                        nr: 12,
                        micro: x86::micro_16x12,
                    },
                ));
            }
        }
        ks
    }

    /// Small integers times powers of two: every partial sum is exact, so any summation
    /// order (and FMA) gives the same bits and `==` is the right comparison.
    fn exact(rows: usize, cols: usize, salt: usize) -> Array2<f64> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            ((i * 7 + j * 3 + salt) % 11) as f64 - 5.0
        })
    }

    #[test]
    fn every_kernel_matches_the_definition_across_block_edges_and_layouts() {
        // Past MC rows, past KC depth (so blocks accumulate), past NC columns, and sizes
        // that leave partial tiles for every MR and NR.
        let shapes = [
            (MC + 5, KC + 3, 13),
            (17, 2 * KC + 1, 25),
            (3, 5, NC + 7),
            (10, 128, 10),
            (1, 300, 1),
        ];
        for (name, kernel) in kernels() {
            for &(m, k, n) in &shapes {
                let a = exact(m, k, 1);
                let b = exact(k, n, 2);
                let want = naive(&a, &b);
                let at = a.t().to_owned();
                let bt = b.t().to_owned();
                // Row-major C, column-major C, and a C with a stride of 2 between columns.
                let mut c_row = Array2::from_elem((m, n), f64::NAN);
                large(kernel, &mut c_row.view_mut(), a.view(), bt.t());
                assert_eq!(c_row, want, "{name}: ({m}, {k}) x ({k}, {n}), row-major C");
                let mut c_col = Array2::from_elem((n, m), f64::NAN);
                large(
                    kernel,
                    &mut c_col.view_mut().reversed_axes(),
                    at.t(),
                    b.view(),
                );
                assert_eq!(
                    c_col.t(),
                    want,
                    "{name}: ({m}, {k}) x ({k}, {n}), column-major C"
                );
                let mut wide = Array2::from_elem((m, 2 * n), f64::NAN);
                let mut c_gap = wide.slice_mut(ndarray::s![.., ..;2]);
                large(kernel, &mut c_gap, a.view(), b.view());
                assert_eq!(c_gap, want, "{name}: ({m}, {k}) x ({k}, {n}), strided C");
                // Reversed rows of A (a negative stride) give reversed rows of C.
                let a_rev = a.slice(ndarray::s![..;-1, ..]);
                let mut c_rev = Array2::from_elem((m, n), f64::NAN);
                large(kernel, &mut c_rev.view_mut(), a_rev, b.view());
                assert_eq!(
                    c_rev.slice(ndarray::s![..;-1, ..]),
                    want,
                    "{name}: ({m}, {k}) x ({k}, {n}), reversed A"
                );
            }
        }
    }

    #[test]
    fn the_detected_kernel_is_the_widest_this_cpu_has() {
        let widest = kernels()
            .pop()
            .expect("the portable kernel is always there")
            .1;
        let got = Kernel::detect();
        assert_eq!((got.mr, got.nr), (widest.mr, widest.nr));
    }
}
