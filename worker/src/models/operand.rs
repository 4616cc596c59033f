//! The values of a training op's operand, as the op's kernels read them.

use candle_core::{CpuStorage, Layout, Result};

/// The f32 values a custom op's contiguous operand holds (`op` names it in the error).
pub(crate) fn f32_slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor");
    };
    Ok(&s.as_slice::<f32>()?[start..end])
}
