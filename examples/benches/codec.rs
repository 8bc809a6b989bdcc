//! Micro-benchmarks of the per-block work outside the cache: zero detection
//! (every written block is checked, an all-zero one is deleted instead of
//! stored) and compression (`--compress=deflate`, `--compress=zstd`), at the
//! block sizes the benchmark report uses.
//!
//! zstd is set beside deflate on a realistic mix, read from this machine at
//! bench start: files of /usr/share/doc (text: changelogs, copyright files,
//! READMEs) and of /usr/bin (binaries), half each, concatenated into 32 MiB
//! as a filesystem would hold them, cut into 256K blocks (the default block
//! size). The table printed first gives each codec's ratio and MB/s over
//! the whole mix (one pass, single thread); Criterion then times one block. The cache's hit and write-back paths have their own
//! bench in the cache crate (`cargo bench -p s3block-cache`).
//!
//! Run with `cargo bench -p s3block-examples`; figures are printed, not asserted.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use s3block_core::{BlockId, is_zero};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use s3block_store::{Codec, CodecContext, CodecMeta, Compression, Deflate};

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

/// Bytes of the mix: half text, half binaries.
const MIX_BYTES: usize = 32 << 20;
/// The default block size.
const MIX_BLOCK: usize = 256 << 10;

/// Files under `dir` (recursively, in name order), up to `want` bytes, as
/// one buffer; gzip-compressed files are skipped (already compressed).
fn read_tree(dir: &Path, want: usize, out: &mut Vec<u8>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if out.len() >= want {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            read_tree(&path, want, out);
        } else if meta.is_file()
            && path.extension().is_none_or(|e| e != "gz")
            && let Ok(bytes) = std::fs::read(&path)
        {
            out.extend_from_slice(&bytes[..bytes.len().min(want - out.len())]);
        }
    }
}

/// The mix described in the module docs, in 256K blocks.
fn mix() -> Vec<Bytes> {
    let mut data = Vec::with_capacity(MIX_BYTES);
    read_tree(Path::new("/usr/share/doc"), MIX_BYTES / 2, &mut data);
    read_tree(Path::new("/usr/bin"), MIX_BYTES, &mut data);
    if data.len() < MIX_BYTES {
        // A machine with little in /usr: fill up with the text-like data.
        data.extend_from_slice(&compressible(MIX_BYTES - data.len()));
    }
    data.chunks(MIX_BLOCK).map(Bytes::copy_from_slice).collect()
}

fn mix_codecs() -> Vec<(String, Arc<dyn Codec>)> {
    let levels = [
        Compression::deflate(6),
        Compression::deflate(1),
        Compression::zstd(3),
        Compression::zstd(1),
        Compression::zstd(9),
    ];
    levels
        .into_iter()
        .map(|c| {
            let c = c.expect("a valid level");
            (c.to_string(), c.codec().expect("a codec"))
        })
        .collect()
}

/// Prints ratio and MB/s of each codec over the whole mix.
fn print_mix_table(blocks: &[Bytes]) {
    let total: usize = blocks.iter().map(Bytes::len).sum();
    let cx = CodecContext { block: BlockId(1), key: "bench/00000001", block_size: MIX_BLOCK };
    let mb = total as f64 / 1e6;
    println!("\ncompression of {} blocks of 256K (/usr/share/doc + /usr/bin, {mb:.1} MB):", blocks.len());
    println!("{:<16} {:>7} {:>14} {:>14}", "codec", "ratio", "encode MB/s", "decode MB/s");
    for (name, codec) in mix_codecs() {
        let start = Instant::now();
        let encoded: Vec<Bytes> = blocks
            .iter()
            .map(|b| codec.encode(&cx, b.clone(), &mut CodecMeta::new()).expect("encode"))
            .collect();
        let encode = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for (e, b) in encoded.iter().zip(blocks) {
            let cx = CodecContext { block_size: b.len(), ..cx };
            assert_eq!(&codec.decode(&cx, e.clone(), &CodecMeta::new()).expect("decode"), b, "round trip");
        }
        let decode = start.elapsed().as_secs_f64();
        let stored: usize = encoded.iter().map(Bytes::len).sum();
        println!(
            "{name:<16} {:>7.2} {:>14.0} {:>14.0}",
            total as f64 / stored as f64,
            mb / encode,
            mb / decode
        );
    }
}

fn zstd_beside_deflate(c: &mut Criterion) {
    let blocks = mix();
    print_mix_table(&blocks);
    let mut g = c.benchmark_group("mix_256k");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(MIX_BLOCK as u64));
    let cx = CodecContext { block: BlockId(1), key: "bench/00000001", block_size: MIX_BLOCK };
    // One text block and one binary block, from each half of the mix.
    let samples =
        [("text", blocks[blocks.len() / 4].clone()), ("binary", blocks[blocks.len() * 3 / 4].clone())];
    for (name, codec) in mix_codecs() {
        for (kind, data) in &samples {
            g.bench_with_input(BenchmarkId::new(format!("encode_{kind}"), &name), data, |b, d| {
                b.iter(|| codec.encode(&cx, black_box(d.clone()), &mut CodecMeta::new()).expect("encode"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, zero_detection, deflate, zstd_beside_deflate);
criterion_main!(benches);
