//! Micro-benchmarks of the per-block work outside the cache: zero detection
//! (every written block is checked, an all-zero one is deleted instead of
//! stored) and deflate compression (`--compress`), at the block sizes the
//! benchmark report uses. The cache's hit and write-back paths have their own
//! bench in the cache crate (`cargo bench -p s3block-cache`).
//!
//! Run with `cargo bench -p s3block-examples`; figures are printed, not asserted.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use s3block_core::{BlockId, is_zero};
use s3block_store::{Codec, CodecContext, CodecMeta, Deflate};

const SIZES: [usize; 2] = [64 << 10, 1 << 20];

/// Text-like data that compresses about as well as filesystem metadata and
/// source files do: repeated words with a varying counter.
fn compressible(len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(format!("block {i} of the volume holds inode {} ", i * 7 % 1000).as_bytes());
        i += 1;
    }
    v.truncate(len);
    v.into()
}

/// Data no compressor can shrink.
fn random(len: usize) -> Bytes {
    s3block_examples::incompressible(len, 0x2545_f491_4f6c_dd1d)
}

fn zero_detection(c: &mut Criterion) {
    let mut g = c.benchmark_group("is_zero");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let zeros = vec![0u8; size];
        // The worst case: only the last byte is non-zero, so all is scanned.
        let mut last = vec![0u8; size];
        last[size - 1] = 1;
        g.bench_with_input(BenchmarkId::new("all_zero", size), &zeros, |b, d| {
            b.iter(|| is_zero(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("last_byte_set", size), &last, |b, d| {
            b.iter(|| is_zero(black_box(d)))
        });
    }
    g.finish();
}

fn deflate(c: &mut Criterion) {
    let codec = Deflate::new(6).expect("level 6 is valid");
    let mut g = c.benchmark_group("deflate");
    g.sample_size(20);
    for size in SIZES {
        let cx = CodecContext { block: BlockId(1), key: "bench/00000001", block_size: size };
        g.throughput(Throughput::Bytes(size as u64));
        for (kind, data) in [("text", compressible(size)), ("random", random(size))] {
            let mut meta = CodecMeta::new();
            let encoded = codec.encode(&cx, data.clone(), &mut meta).expect("encode");
            assert_eq!(codec.decode(&cx, encoded.clone(), &meta).expect("decode"), data, "round trip");
            g.bench_with_input(BenchmarkId::new(format!("encode_{kind}"), size), &data, |b, d| {
                b.iter(|| codec.encode(&cx, black_box(d.clone()), &mut CodecMeta::new()).expect("encode"))
            });
            g.bench_with_input(BenchmarkId::new(format!("decode_{kind}"), size), &encoded, |b, e| {
                b.iter(|| codec.decode(&cx, black_box(e.clone()), &meta).expect("decode"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, zero_detection, deflate);
criterion_main!(benches);
