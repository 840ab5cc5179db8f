//! Helpers shared by the SAM and MedSAM parity tests.

use std::path::PathBuf;
use tch::{Kind, Tensor};

/// `${CLISC_CACHE_DIR:-~/.cache/clisc}/parity/<name>`, where a parity
/// test keeps the reference files it generates.
pub fn parity_cache(name: &str) -> PathBuf {
    let base = std::env::var_os("CLISC_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/clisc")
        });
    base.join("parity").join(name)
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}
