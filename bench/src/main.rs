//! `bench`: Strata's measurements.
fn main() {}
