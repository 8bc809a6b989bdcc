//! `s3block stat`: one block's object headers and metadata, each with
//! what it means.

use std::io::Write;

use object_store::{Attribute, GetOptions};
use serde::Serialize;

use s3block_core::BlockId;
use s3block_store::store_error;

use crate::args::LayoutArgs;
use crate::exit::{CliResult, OK};
use crate::format::{self, Align, Table, write_json};
use crate::target::Target;
use crate::volume::inspect;

/// What `stat` reports about one block's object.
#[derive(Debug, Clone, Serialize)]
pub struct StatReport {
    /// Block number.
    pub block: u32,
    /// Object key.
    pub key: String,
    /// Whether the object exists (absent: the block is all zeros).
    pub stored: bool,
    /// Object size in bytes.
    pub size: Option<u64>,
    /// Last modified, RFC 3339.
    pub last_modified: Option<String>,
    /// ETag.
    pub etag: Option<String>,
    /// Headers and metadata, each with what it means.
    pub headers: Vec<(String, String, String)>,
}

/// `s3block stat`.
pub async fn stat(
    target: &Target,
    layout: &LayoutArgs,
    block: u32,
    json: bool,
    out: &mut dyn Write,
) -> CliResult {
    let v = inspect(target, layout).await?;
    let id = BlockId(block);
    v.volume.geometry.check_block(id)?;
    let key = v.volume.layout.key(id);
    let head = GetOptions { head: true, ..Default::default() };
    let mut report = StatReport {
        block,
        key: key.clone(),
        stored: false,
        size: None,
        last_modified: None,
        etag: None,
        headers: vec![],
    };
    match target.store.get_opts(&s3block_store::key_path(&key)?, head).await {
        Ok(r) => {
            report.stored = true;
            report.size = Some(r.meta.size);
            report.last_modified = Some(r.meta.last_modified.to_rfc3339());
            report.etag = r.meta.e_tag.clone();
            for (k, val) in r.attributes.iter() {
                let (name, meaning) = describe(k, val.as_ref(), v.volume.geometry.block_size());
                report.headers.push((name, val.to_string(), meaning));
            }
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store_error(e, &key, Some(id)).into()),
    }
    if json {
        write_json(out, &report)?;
        return Ok(OK);
    }
    writeln!(out, "block {block}, key {key}")?;
    if !report.stored {
        writeln!(out, "not stored: the block is all zeros (s3block deletes the object of a zeroed block)")?;
        return Ok(OK);
    }
    let size = report.size.unwrap_or(0);
    writeln!(
        out,
        "size           {} bytes (block size {})",
        format::count(size),
        format::bytes(v.volume.geometry.block_size().into())
    )?;
    if let Some(m) = &report.last_modified {
        writeln!(out, "last modified  {m}")?;
    }
    if let Some(e) = &report.etag {
        writeln!(out, "etag           {e}")?;
    }
    let mut t = Table::new(&[("header", Align::Left), ("value", Align::Left), ("meaning", Align::Left)]);
    for (k, val, meaning) in &report.headers {
        t.row(vec![k.clone(), val.clone(), meaning.clone()]);
    }
    write!(out, "{}", t.render())?;
    Ok(OK)
}

fn describe(attr: &Attribute, value: &str, block_size: u32) -> (String, String) {
    match attr {
        Attribute::ContentEncoding => (
            "Content-Encoding".into(),
            match value.trim() {
                "deflate" => "zlib-compressed; decoded on read".into(),
                "zstd" => "zstd-compressed; decoded on read".into(),
                v if v.contains("encrypt") => "compressed and encrypted (s3backer)".into(),
                v => format!("encoding {v:?}"),
            },
        ),
        Attribute::ContentType => (
            "Content-Type".into(),
            if value == s3block_store::BLOCK_CONTENT_TYPE {
                "an s3backer/s3block block".into()
            } else {
                "not the block content type".into()
            },
        ),
        Attribute::Metadata(name) => {
            let meaning = match name.as_ref() {
                s3block_store::META_BLOCK_SIZE => {
                    if value.trim() == block_size.to_string() {
                        "volume block size (matches)".to_owned()
                    } else {
                        format!("volume block size: DOES NOT MATCH the volume's {block_size}")
                    }
                }
                s3block_store::META_FILE_SIZE => "volume size in bytes, recorded on block 0".into(),
                _ => "user metadata".into(),
            };
            (format!("x-amz-meta-{name}"), meaning)
        }
        other => (format!("{other:?}"), String::new()),
    }
}
