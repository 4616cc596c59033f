//! Default values of spec fields (serde needs functions).

pub fn target_columns() -> usize {
    1
}
pub fn label_column() -> i64 {
    -1
}
pub fn val_fraction() -> f64 {
    0.2
}
pub fn depth() -> usize {
    1
}
pub fn width() -> usize {
    64
}
pub fn epochs() -> usize {
    10
}
pub fn batch_size() -> usize {
    64
}
pub fn lr() -> f64 {
    1e-3
}
pub fn momentum() -> f64 {
    0.9
}
pub fn metric() -> super::search::Metrics {
    "val_accuracy".into()
}
pub fn population() -> u32 {
    50
}
pub fn crossover_prob() -> f64 {
    0.9
}
pub fn swapping_prob() -> f64 {
    0.5
}
pub fn num_samples() -> u32 {
    1
}
pub fn max_concurrent() -> u32 {
    0
}
pub fn yes() -> bool {
    true
}
pub fn one() -> f64 {
    1.0
}
pub fn one_u32() -> u32 {
    1
}
pub fn tpe_startup() -> u32 {
    10
}
pub fn tpe_candidates() -> u32 {
    24
}
pub fn asha_rf() -> f64 {
    4.0
}
pub fn asha_max_t() -> u32 {
    100
}
pub fn hyperband_rf() -> u32 {
    3
}
pub fn median_startup() -> u32 {
    5
}
pub fn channels() -> Vec<usize> {
    vec![16, 32]
}
pub fn blocks() -> usize {
    1
}
pub fn layers() -> usize {
    2
}
pub fn d_model() -> usize {
    128
}
pub fn heads() -> usize {
    4
}
pub fn context() -> usize {
    128
}

pub fn geometry_steps() -> usize {
    20
}

pub fn geometry_probes() -> usize {
    10
}
pub fn pbt_rounds() -> u32 {
    4
}
pub fn pbt_interval() -> u32 {
    1
}
pub fn pbt_quantile() -> f64 {
    0.25
}
pub fn pbt_resample() -> f64 {
    0.25
}
pub fn pbt_factors() -> Vec<f64> {
    vec![1.2, 0.8]
}
