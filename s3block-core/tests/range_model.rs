//! Byte-range helpers checked against a plain `Vec<u8>` model.

use proptest::prelude::*;
use s3block_core::{BlockDevice, BlockDeviceExt, Bytes, Geometry, MemoryDevice};

const BS: u64 = 512;
const BLOCKS: u64 = 16;

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    Read(u64, usize),
    Zero(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let size = BS * BLOCKS;
    prop_oneof![
        (0..size)
            .prop_flat_map(move |off| {
                (Just(off), proptest::collection::vec(any::<u8>(), 0..=((size - off).min(3 * BS) as usize)))
            })
            .prop_map(|(o, d)| Op::Write(o, d)),
        (0..size)
            .prop_flat_map(move |off| (Just(off), 0..=(size - off) as usize))
            .prop_map(|(o, l)| Op::Read(o, l)),
        (0..size).prop_flat_map(move |off| (Just(off), 0..=(size - off))).prop_map(|(o, l)| Op::Zero(o, l)),
    ]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

proptest! {
    #[test]
    fn byte_ranges_match_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        rt().block_on(async {
            let dev = MemoryDevice::new(Geometry::new(BS * BLOCKS, BS).unwrap());
            let mut model = vec![0u8; (BS * BLOCKS) as usize];
            for op in ops {
                match op {
                    Op::Write(o, d) => {
                        model[o as usize..o as usize + d.len()].copy_from_slice(&d);
                        dev.write_at(o, Bytes::from(d)).await.unwrap();
                    }
                    Op::Read(o, l) => {
                        let got = dev.read_at(o, l).await.unwrap();
                        prop_assert_eq!(&got[..], &model[o as usize..o as usize + l]);
                    }
                    Op::Zero(o, l) => {
                        model[o as usize..(o + l) as usize].fill(0);
                        dev.zero_range(o, l).await.unwrap();
                    }
                }
            }
            let all = dev.read_at(0, model.len()).await.unwrap();
            prop_assert_eq!(&all[..], &model[..]);
            let nonzero = model.chunks(BS as usize).filter(|c| c.iter().any(|&b| b != 0)).count();
            prop_assert_eq!(dev.stored_blocks(), nonzero);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn whole_block_writes_never_read() {
    let dev = MemoryDevice::new(Geometry::new(BS * BLOCKS, BS).unwrap());
    dev.write_at(BS, Bytes::from(vec![7u8; 4 * BS as usize])).await.unwrap();
    assert_eq!(dev.counts().reads, 0);
    assert_eq!(dev.counts().writes, 4);
    // A partial write goes through read-merge-write by default.
    dev.write_at(BS + 1, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(dev.counts().reads, 1);
}

#[tokio::test]
async fn out_of_range_is_an_error_naming_the_range() {
    let dev = MemoryDevice::new(Geometry::new(BS * BLOCKS, BS).unwrap());
    let err = dev.read_at(BS * BLOCKS - 1, 2).await.unwrap_err();
    assert!(err.to_string().contains("8191..8193"), "{err}");
    assert!(dev.write_block(s3block_core::BlockId(16), Bytes::from(vec![1; 512])).await.is_err());
    let err = dev.write_block(s3block_core::BlockId(1), Bytes::from(vec![1; 100])).await.unwrap_err();
    assert!(err.to_string().contains("100 bytes"), "{err}");
}
