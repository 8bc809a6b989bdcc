//! The `s3block-nbd` program (being written).

fn main() {}
