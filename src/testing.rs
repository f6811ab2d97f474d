//! Shared by the unit tests.

/// Proptest cases: `default` in `cargo test`, or `$PROPTEST_CASES` for a long run by hand
/// (an explicit `with_cases` would otherwise ignore the variable).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}
