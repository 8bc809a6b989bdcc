//! Benchmarks of the block cache (written next).

fn main() {}
