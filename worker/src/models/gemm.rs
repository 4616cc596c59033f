//! One safe door to the `gemm` crate for the hand-written kernels (transformer scans,
//! CNN training): matrices as strided views of slices, bounds checked once per call,
//! run on the calling thread (the kernels spread their own tasks over the threads).

/// A matrix in a slice: rows and columns, and their strides.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl View<'_> {
    /// Whether its last element lies in the slice.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[m, n] = a[m, k] · b[k, n]`, or `+=` with `accumulate`; `dst`'s rows `dst_rs`
/// apart, its columns adjacent.
pub(crate) fn gemm(dst: &mut [f32], dst_rs: usize, a: View<'_>, b: View<'_>, accumulate: bool) {
    product(dst, dst_rs, a, b, accumulate, gemm::Parallelism::None);
}

/// [`gemm`] spread over the rayon pool's threads by the `gemm` crate itself, which
/// splits the output, never the sum, so the bits do not depend on the thread count.
/// For one large product (a layer's over a whole batch): splitting it into products
/// per block of rows packs the shared operand again for every block (for the weight
/// gradient of a layer, the whole batch's activations: 40 % of a GPT-2 step's GEMM
/// time, perf).
pub(crate) fn gemm_threads(
    dst: &mut [f32],
    dst_rs: usize,
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
) {
    product(dst, dst_rs, a, b, accumulate, gemm::Parallelism::Rayon(0));
}

fn product(
    dst: &mut [f32],
    dst_rs: usize,
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && a.fits() && b.fits());
    assert!(m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len());
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every element of a, b and dst in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}
