//! `s3block cost`: what a volume costs at each block size, before it exists.
//!
//! The block size is the costliest choice a user makes and the hardest to
//! change: every block is one object, so filling a volume costs one PUT per
//! block, and a month of writes costs one PUT per block written. Small
//! blocks multiply requests; large blocks multiply the memory a block cache
//! counted in blocks (as s3backer's is) needs. This module computes both, for
//! one block size or a range of them, from list prices the user can override.

use serde::Serialize;

use s3block_core::{Error, Geometry, Result, parse_size};
use s3block_store::{GET_PRICE_PER_1000, PUT_PRICE_PER_1000, STORAGE_PRICE_PER_GB_MONTH};

use crate::format::{self, Align, Table};

/// Request and storage prices, in US dollars.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    /// Dollars per 1000 PUT requests.
    pub put_per_1000: f64,
    /// Dollars per 1000 GET requests.
    pub get_per_1000: f64,
    /// Dollars per GB (2^30 bytes) stored for a month.
    pub storage_per_gb_month: f64,
}

/// S3 Standard list prices in us-east-1 (first 50 TB tier), as of 2025.
pub const S3_STANDARD_PRICES: Prices = Prices {
    put_per_1000: PUT_PRICE_PER_1000,
    get_per_1000: GET_PRICE_PER_1000,
    storage_per_gb_month: STORAGE_PRICE_PER_GB_MONTH,
};

/// Where [`S3_STANDARD_PRICES`] come from, shown with every estimate.
pub const S3_STANDARD_SOURCE: &str = "S3 Standard list prices, us-east-1, first 50 TB tier, as of 2025";

/// S3 prices of 2009 (PUT $0.01 per 1000, GET $0.01 per 10,000, storage
/// $0.15 per GB-month): those the s3backer LVM how-to paid.
pub const S3_2009_PRICES: Prices =
    Prices { put_per_1000: 0.01, get_per_1000: 0.001, storage_per_gb_month: 0.15 };

/// Where [`S3_2009_PRICES`] come from.
pub const S3_2009_SOURCE: &str = "S3 list prices of 2009, as paid in the s3backer LVM how-to";

/// Bytes in the GB that storage is billed by.
const GB: f64 = (1u64 << 30) as f64;

/// What to estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct CostInput {
    /// Volume size in bytes.
    pub size: u64,
    /// Block sizes to compare, in bytes.
    pub block_sizes: Vec<u32>,
    /// Bytes of non-zero data the volume holds (billed storage); at most `size`.
    pub stored: u64,
    /// Bytes written per month.
    pub write_per_month: u64,
    /// Bytes read from the store per month (cache misses).
    pub read_per_month: u64,
    /// Bytes of memory given to the block cache.
    pub cache_size: u64,
    /// Memory of the machine, to flag block caches that do not fit.
    pub memory: u64,
    /// Blocks in s3backer's block cache (its `--blockCacheSize`, 1000 by default).
    pub s3backer_cache_blocks: u64,
    /// The prices to apply.
    pub prices: Prices,
    /// Where the prices come from, shown with the estimate.
    pub price_source: String,
}

/// The estimate for one block size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostRow {
    /// Block size in bytes.
    pub block_size: u32,
    /// Objects in a full volume: one per block.
    pub objects_to_fill: u64,
    /// PUT cost of writing every block once.
    pub fill_put_cost: f64,
    /// PUTs for a month of writes.
    pub puts_per_month: u64,
    /// GETs for a month of reads.
    pub gets_per_month: u64,
    /// Cost of those PUTs and GETs.
    pub request_cost_per_month: f64,
    /// Cost of storing the data for a month.
    pub storage_cost_per_month: f64,
    /// Requests plus storage for a month.
    pub total_cost_per_month: f64,
    /// Whole blocks a cache of `cache_size` bytes holds.
    pub cache_blocks: u64,
    /// Memory s3backer's block cache of `s3backer_cache_blocks` blocks takes.
    pub s3backer_cache_bytes: u64,
    /// True when that memory is more than the machine has.
    pub s3backer_cache_exceeds_memory: bool,
}

/// The full estimate: the inputs, the assumptions and a row per block size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    /// Volume size in bytes.
    pub size: u64,
    /// Bytes of data stored.
    pub stored: u64,
    /// Bytes written per month.
    pub write_per_month: u64,
    /// Bytes read per month.
    pub read_per_month: u64,
    /// Cache size in bytes.
    pub cache_size: u64,
    /// Machine memory in bytes.
    pub memory: u64,
    /// Blocks in the s3backer block cache compared against.
    pub s3backer_cache_blocks: u64,
    /// The prices applied.
    pub prices: Prices,
    /// Where the prices come from.
    pub price_source: String,
    /// What the figures assume.
    pub assumptions: Vec<String>,
    /// One row per block size, smallest first.
    pub rows: Vec<CostRow>,
}

/// Computes the estimate. Fails, naming the value, on a block size that is
/// not a power of two in range or that would need more blocks than a volume
/// can have, and on stored data larger than the volume.
pub fn estimate(input: &CostInput) -> Result<CostReport> {
    if input.size == 0 {
        return Err(Error::Config("--size must not be zero".into()));
    }
    if input.stored > input.size {
        return Err(Error::Config(format!(
            "--stored {} is more than the volume size {}",
            format::bytes(input.stored),
            format::bytes(input.size)
        )));
    }
    if input.block_sizes.is_empty() {
        return Err(Error::Config("no block size to estimate".into()));
    }
    let p = input.prices;
    for (name, price) in [
        ("--put-price", p.put_per_1000),
        ("--get-price", p.get_per_1000),
        ("--storage-price", p.storage_per_gb_month),
    ] {
        if !price.is_finite() || price < 0.0 {
            return Err(Error::Config(format!("{name} {price} is not a price")));
        }
    }
    let mut block_sizes = input.block_sizes.clone();
    block_sizes.sort_unstable();
    block_sizes.dedup();
    // A volume holds at least one block: block sizes above the volume's
    // size are left out, and a volume smaller than every one is refused.
    let asked = block_sizes.len();
    block_sizes.retain(|&b| u64::from(b) <= input.size);
    if block_sizes.is_empty() {
        return Err(Error::Config(format!(
            "--size {} is smaller than one block of {}: a volume holds at least one block; give a larger \
             --size or a smaller --block-size",
            format::bytes(input.size),
            format::bytes(u64::from(input.block_sizes.iter().copied().min().unwrap_or(0)))
        )));
    }
    let left_out = asked - block_sizes.len();
    let storage_cost = input.stored as f64 / GB * p.storage_per_gb_month;
    let mut rows = Vec::with_capacity(block_sizes.len());
    for bs in block_sizes {
        let b = u64::from(bs);
        let geometry = Geometry::with_blocks(input.size.div_ceil(b), b)?;
        let objects = geometry.block_count();
        let puts = input.write_per_month.div_ceil(b);
        let gets = input.read_per_month.div_ceil(b);
        let request_cost = puts as f64 / 1000.0 * p.put_per_1000 + gets as f64 / 1000.0 * p.get_per_1000;
        let s3backer_cache_bytes = input.s3backer_cache_blocks.saturating_mul(b);
        rows.push(CostRow {
            block_size: bs,
            objects_to_fill: objects,
            fill_put_cost: objects as f64 / 1000.0 * p.put_per_1000,
            puts_per_month: puts,
            gets_per_month: gets,
            request_cost_per_month: request_cost,
            storage_cost_per_month: storage_cost,
            total_cost_per_month: request_cost + storage_cost,
            cache_blocks: input.cache_size / b,
            s3backer_cache_bytes,
            s3backer_cache_exceeds_memory: s3backer_cache_bytes > input.memory,
        });
    }
    let mut assumptions = vec![
        "every block is written whole: a month's writes of W bytes at block size B are W/B PUTs; \
         scattered small writes cost one PUT per block they touch, so with large blocks they cost more"
            .to_owned(),
        "reads are those that miss the cache: R bytes read from the store are R/B GETs".to_owned(),
        "storage is billed per GB of 2^30 bytes for the data stored, before compression; \
         all-zero blocks are not stored"
            .to_owned(),
        "data transfer, LIST and DELETE requests and taxes are not included".to_owned(),
    ];
    if left_out > 0 {
        assumptions.push(format!(
            "{left_out} block sizes larger than the volume ({}) are left out",
            format::bytes(input.size)
        ));
    }
    if rows.iter().any(|r| !input.size.is_multiple_of(u64::from(r.block_size))) {
        assumptions
            .push("the size is not a multiple of every block size; the last block is counted whole".into());
    }
    Ok(CostReport {
        size: input.size,
        stored: input.stored,
        write_per_month: input.write_per_month,
        read_per_month: input.read_per_month,
        cache_size: input.cache_size,
        memory: input.memory,
        s3backer_cache_blocks: input.s3backer_cache_blocks,
        prices: p,
        price_source: input.price_source.clone(),
        assumptions,
        rows,
    })
}

/// The estimate as text for people: a summary, a table, the assumptions.
pub fn render(report: &CostReport) -> String {
    let p = &report.prices;
    let mut out = format!(
        "Volume {}, {} of data stored; {} written and {} read from the store per month.\n\
         Prices: PUT {} per 1000, GET {} per 1000, storage {} per GB-month ({}).\n\n",
        format::bytes(report.size),
        format::bytes(report.stored),
        format::bytes(report.write_per_month),
        format::bytes(report.read_per_month),
        price(p.put_per_1000),
        price(p.get_per_1000),
        price(p.storage_per_gb_month),
        report.price_source,
    );
    let cache_header = format!("{} cache", format::bytes(report.cache_size));
    let s3backer_header = format!("s3backer {} blocks", format::count(report.s3backer_cache_blocks));
    let mut table = Table::new(&[
        ("block", Align::Right),
        ("objects", Align::Right),
        ("fill cost", Align::Right),
        ("PUTs/mo", Align::Right),
        ("GETs/mo", Align::Right),
        ("requests/mo", Align::Right),
        ("storage/mo", Align::Right),
        ("total/mo", Align::Right),
        (&cache_header, Align::Right),
        (&s3backer_header, Align::Right),
    ]);
    let mut flagged = false;
    for r in &report.rows {
        let mut s3backer = format::bytes(r.s3backer_cache_bytes);
        if r.s3backer_cache_exceeds_memory {
            s3backer.push_str(" !");
            flagged = true;
        }
        table.row(vec![
            format::bytes(r.block_size.into()),
            format::count(r.objects_to_fill),
            format::money(r.fill_put_cost),
            format::count(r.puts_per_month),
            format::count(r.gets_per_month),
            format::money(r.request_cost_per_month),
            format::money(r.storage_cost_per_month),
            format::money(r.total_cost_per_month),
            format::count(r.cache_blocks),
            s3backer,
        ]);
    }
    out.push_str(&table.render());
    out.push_str(
        "\nobjects: one per block of a full volume; fill cost: PUTs to write every block once; \
         /mo: per month; cache: blocks the cache holds.\n",
    );
    if flagged {
        out.push_str(&format!(
            "! s3backer's block cache counts blocks, not bytes: at the block sizes marked, its {} blocks need \
             more than the {} of memory given (--memory); s3block's cache is sized in bytes.\n",
            format::count(report.s3backer_cache_blocks),
            format::bytes(report.memory)
        ));
    }
    if report.rows.iter().any(|r| r.cache_blocks == 0) {
        out.push_str("A cache smaller than one block holds nothing: raise --cache-size.\n");
    }
    out.push_str("Assumptions:\n");
    for a in &report.assumptions {
        out.push_str(&format!("- {a}\n"));
    }
    out
}

/// A price with as many decimals as it needs (`$0.005`, `$0.0004`, `$0.023`).
fn price(dollars: f64) -> String {
    let text = format!("{dollars:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("${text}")
}

/// Parses `--block-size` for `cost`: one size (`256K`), a list (`4K,64K,1M`)
/// or a range (`4K..4M`, every power of two from one end to the other).
pub fn parse_block_sizes(spec: &str) -> Result<Vec<u32>> {
    let mut sizes = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if let Some((from, to)) = part.split_once("..") {
            let from = block_size(from)?;
            let to = block_size(to)?;
            if from > to {
                return Err(Error::Config(format!("block size range {part:?} runs backwards")));
            }
            let mut b = from;
            while b <= to {
                sizes.push(b);
                match b.checked_mul(2) {
                    Some(next) => b = next,
                    None => break,
                }
            }
        } else {
            sizes.push(block_size(part)?);
        }
    }
    Ok(sizes)
}

fn block_size(text: &str) -> Result<u32> {
    let bytes = parse_size(text)?;
    let geometry = Geometry::with_blocks(1, bytes)?;
    Ok(geometry.block_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(size: &str, block_sizes: &str, prices: Prices) -> CostInput {
        let size = parse_size(size).unwrap();
        CostInput {
            size,
            block_sizes: parse_block_sizes(block_sizes).unwrap(),
            stored: size,
            write_per_month: 0,
            read_per_month: 0,
            cache_size: 64 << 20,
            memory: 128 << 20,
            s3backer_cache_blocks: 1000,
            prices,
            price_source: "test".into(),
        }
    }

    #[test]
    fn the_how_to_volume_is_7864320_keys_and_78_dollars_to_fill() {
        // 30G at 4K blocks at $0.01 per 1000 PUTs.
        let report = estimate(&input("30G", "4K", S3_2009_PRICES)).unwrap();
        let row = &report.rows[0];
        assert_eq!(row.objects_to_fill, 7_864_320);
        assert!((row.fill_put_cost - 78.6432).abs() < 1e-9, "{}", row.fill_put_cost);
        assert_eq!(format::money(row.fill_put_cost), "$78.64");
        let text = render(&report);
        assert!(text.contains("7,864,320"), "{text}");
        assert!(text.contains("$78.64"), "{text}");
    }

    #[test]
    fn uploading_16g_at_4k_is_4194304_puts() {
        // The how-to's 16 GB upload at 4K: 4,194,304 PUTs, $41.94 in PUTs at
        // 2009 prices (the "$100-odd" it reports is not PUTs alone).
        let mut i = input("30G", "4K,256K", S3_2009_PRICES);
        i.write_per_month = 16 << 30;
        let report = estimate(&i).unwrap();
        assert_eq!(report.rows[0].puts_per_month, 4_194_304);
        assert_eq!(format::money(report.rows[0].request_cost_per_month), "$41.94");
        // 100 GB at 256K is 409,600 PUTs: $4.10.
        i.write_per_month = 100 << 30;
        let report = estimate(&i).unwrap();
        assert_eq!(report.rows[1].puts_per_month, 409_600);
        assert_eq!(format::money(report.rows[1].request_cost_per_month), "$4.10");
    }

    #[test]
    fn block_caches_counted_in_blocks_grow_with_the_block_size() {
        // s3backer's default 1000-block cache: about 4 MB at 4K, 256 MB at
        // 256K, more than a 128 MB machine has.
        let report = estimate(&input("30G", "4K..256K", S3_STANDARD_PRICES)).unwrap();
        let first = &report.rows[0];
        let last = report.rows.last().unwrap();
        assert_eq!(report.rows.len(), 7);
        assert_eq!(first.s3backer_cache_bytes, 4_096_000);
        assert!(!first.s3backer_cache_exceeds_memory);
        assert_eq!(last.block_size, 256 << 10);
        assert_eq!(last.s3backer_cache_bytes, 256_000 << 10);
        assert!(last.s3backer_cache_exceeds_memory);
        // A 64M cache sized in bytes holds 16384 blocks of 4K and 256 of 256K.
        assert_eq!(first.cache_blocks, 16_384);
        assert_eq!(last.cache_blocks, 256);
        assert!(render(&report).contains("250M !"));
    }

    #[test]
    fn monthly_costs_add_requests_and_storage() {
        let mut i = input("10G", "1M", S3_STANDARD_PRICES);
        i.write_per_month = 1 << 30;
        i.read_per_month = 2 << 30;
        i.stored = 4 << 30;
        let row = estimate(&i).unwrap().rows[0].clone();
        assert_eq!(row.puts_per_month, 1024);
        assert_eq!(row.gets_per_month, 2048);
        let requests = 1.024 * 0.005 + 2.048 * 0.0004;
        assert!((row.request_cost_per_month - requests).abs() < 1e-12);
        assert!((row.storage_cost_per_month - 4.0 * 0.023).abs() < 1e-12);
        assert!((row.total_cost_per_month - (requests + 0.092)).abs() < 1e-12);
        assert_eq!(row.objects_to_fill, 10_240);
    }

    #[test]
    fn block_size_specs() {
        assert_eq!(parse_block_sizes("4K").unwrap(), vec![4096]);
        assert_eq!(parse_block_sizes("4K..32K").unwrap(), vec![4096, 8192, 16384, 32768]);
        assert_eq!(parse_block_sizes("64K, 1M").unwrap(), vec![65536, 1 << 20]);
        assert_eq!(parse_block_sizes("64M..64M").unwrap(), vec![64 << 20]);
        assert!(parse_block_sizes("3K").unwrap_err().to_string().contains("power of two"));
        assert!(parse_block_sizes("1M..4K").unwrap_err().to_string().contains("backwards"));
        assert!(parse_block_sizes("4Q").unwrap_err().to_string().contains("4Q"));
        assert!(parse_block_sizes("128M").is_err());
    }

    #[test]
    fn bad_inputs_are_refused_by_name() {
        let mut i = input("1G", "4K", S3_STANDARD_PRICES);
        i.stored = 2 << 30;
        assert!(estimate(&i).unwrap_err().to_string().contains("--stored"));
        let mut i = input("1G", "4K", S3_STANDARD_PRICES);
        i.prices.put_per_1000 = -1.0;
        assert!(estimate(&i).unwrap_err().to_string().contains("--put-price"));
        // 2^32 blocks is the most a volume has: 32T at 512 bytes is too many.
        let i = input("4096T", "512", S3_STANDARD_PRICES);
        assert!(estimate(&i).unwrap_err().to_string().contains("larger block size"));
    }

    #[test]
    fn odd_sizes_count_the_last_block_whole() {
        let i = input("1000K", "64K", S3_STANDARD_PRICES);
        let report = estimate(&i).unwrap();
        assert_eq!(report.rows[0].objects_to_fill, 16);
        assert!(report.assumptions.iter().any(|a| a.contains("last block")));
    }

    #[test]
    fn prices_show_their_decimals() {
        assert_eq!(price(0.005), "$0.005");
        assert_eq!(price(0.0004), "$0.0004");
        assert_eq!(price(0.15), "$0.15");
        assert_eq!(price(1.0), "$1");
    }
}
