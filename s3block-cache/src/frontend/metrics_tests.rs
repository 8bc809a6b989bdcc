//! Tests of `--metrics`: the address, the text a scrape gets, the server.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};

use super::*;
use crate::{CacheStats, DiskFigures, UploadStartFigures, WholeBlockFigures};
use s3block_core::RequestCounts;

#[test]
fn the_address_is_loopback_unless_given() {
    assert_eq!(parse_metrics_addr("9477").unwrap(), "127.0.0.1:9477".parse().unwrap());
    assert_eq!(parse_metrics_addr("0.0.0.0:9477").unwrap(), "0.0.0.0:9477".parse().unwrap());
    assert_eq!(parse_metrics_addr("[::]:9477").unwrap(), "[::]:9477".parse().unwrap());
    assert_eq!(parse_metrics_addr("[::1]:0").unwrap(), "[::1]:0".parse().unwrap());
    for bad in ["", "70000", "metrics", "localhost:9477", "1.2.3.4", "1.2.3.4:99999", ":9477"] {
        let err = parse_metrics_addr(bad).unwrap_err();
        assert!(err.contains(&format!("{bad:?}")) && err.contains("ADDR:PORT"), "{bad}: {err}");
    }
}

/// A snapshot where every figure is different, so a value in the wrong
/// series shows.
fn sample() -> MetricsSnapshot {
    let cache = CacheStats {
        hits: 61,
        read_ahead_used: 20,
        read_ahead_issued: 22,
        zero_hits: 7,
        misses: 4,
        uploads: 3,
        unchanged_writes: 29,
        dirty_blocks: 5,
        dirty_bytes: 5 * 65_536,
        uploads_in_flight: 2,
        resident_bytes: 1 << 20,
        cache_size: 64 << 20,
        whole_block: WholeBlockFigures {
            written: 31,
            in_flight: 32,
            large: 33,
            sequential: 34,
            next_block: 35,
            dense: 36,
        },
        upload_starts: UploadStartFigures { written_whole: 41, delay: 42, flush: 43, dirty_limit: 44 },
        ..Default::default()
    };
    let mut requests = RequestCounts {
        gets: 37,
        block_fetches: 13,
        read_ahead_fetches: 22,
        metadata_gets: 2,
        puts: 9,
        block_uploads: 8,
        metadata_puts: 1,
        bulk_deletes: 1,
        metadata_deletes: 1,
        deletes: 1,
        lists: 1,
        retries: 3,
        errors: 1,
        bytes_sent: 524_288,
        bytes_received: 1_441_792,
        fetch_bytes_received: 860_160,
        ranged_gets: 5,
        ..Default::default()
    };
    requests.retries_by_method.put = 3;
    requests.bandwidth.upload_cap = 1_048_576;
    requests.bandwidth.upload_wait_micros = 2_500_000;
    requests.errors_by_method.get = 1;
    // PUTs: 2 within 10 ms, 1 within 100 ms, 1 over 10 s.
    requests.latency.put.counts[1] = 2;
    requests.latency.put.counts[4] = 1;
    requests.latency.put.counts[LATENCY_BUCKETS_MS.len()] = 1;
    requests.latency.put.sum_micros = 12_500_000;
    let mut stats = MountStats::new(&cache, &requests, 5.0, 0.4);
    stats.disk = Some(DiskFigures {
        durability: "remote".into(),
        size_bytes: 1 << 30,
        used_bytes: 3 << 20,
        unstored_blocks: 6,
        unstored_bytes: 393_216,
        oldest_unstored_secs: Some(2.5),
        hits: 11,
        misses: 12,
        ..Default::default()
    });
    MetricsSnapshot {
        stats,
        health: StoreHealth {
            unreachable_since: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            waiting: 4,
        },
        lock_held: true,
    }
}

/// The samples of an exposition, checked line by line against the text
/// format: every sample's family has a HELP and a TYPE line before it,
/// names and labels are well formed, values are numbers. Keys are the
/// series as written (`name{labels}`), without the constant labels.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = Vec::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "{text}");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "{line}");
            helped.push(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert_eq!(helped.last().map(String::as_str), Some(name), "HELP before TYPE: {line}");
            assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none(), "one TYPE per family: {line}");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        assert!(name.starts_with("s3block_"), "{line}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{line}");
        let family = typed
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("no TYPE before {line}"));
        let suffix = &name[family.len()..];
        let allowed: &[&str] = match typed[family].as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        assert!(allowed.contains(&suffix), "{line}");
        let labels = labels.strip_suffix('}').unwrap();
        let mut kept = Vec::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (key, quoted) = pair.split_once('=').unwrap();
            assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{line}");
            assert!(quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'), "{line}");
            if key != "store" && key != "bucket" {
                kept.push(pair);
            }
        }
        assert!(labels.starts_with("store=\"s3\",bucket=\"backups\""), "constant labels first: {line}");
        let key = if kept.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", kept.join(",")) };
        assert!(samples.insert(key, value).is_none(), "a series twice: {line}");
    }
    samples
}

#[test]
fn a_scrape_shows_the_snapshot_in_the_text_format() {
    let metrics = Metrics::new("s3", "backups", sample);
    let text = metrics.render();
    let m = parse(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    // Requests by method and outcome: ok is what was neither retried nor failed.
    assert_eq!(get(r#"s3block_requests_total{method="PUT",outcome="ok"}"#), 6.0);
    assert_eq!(get(r#"s3block_requests_total{method="PUT",outcome="retried"}"#), 3.0);
    assert_eq!(get(r#"s3block_requests_total{method="GET",outcome="ok"}"#), 36.0);
    assert_eq!(get(r#"s3block_requests_total{method="GET",outcome="failed"}"#), 1.0);
    assert_eq!(get(r#"s3block_requests_total{method="DELETE",outcome="ok"}"#), 1.0);
    assert_eq!(get(r#"s3block_requests_total{method="LIST",outcome="ok"}"#), 1.0);
    assert_eq!(get(r#"s3block_requests_by_purpose_total{purpose="read_ahead_fetch"}"#), 22.0);
    assert_eq!(get(r#"s3block_requests_by_purpose_total{purpose="block_upload"}"#), 8.0);
    assert_eq!(get(r#"s3block_requests_by_purpose_total{purpose="metadata_put"}"#), 1.0);
    assert_eq!(get("s3block_sent_bytes_total"), 524_288.0);
    assert_eq!(get("s3block_received_bytes_total"), 1_441_792.0);
    assert_eq!(get("s3block_fetch_received_bytes_total"), 860_160.0);
    assert_eq!(get("s3block_ranged_gets_total"), 5.0);
    assert_eq!(get("s3block_blocks_stored_total"), 3.0);
    assert_eq!(get(r#"s3block_bandwidth_cap_bytes_per_second{direction="upload"}"#), 1_048_576.0);
    assert_eq!(get(r#"s3block_bandwidth_cap_bytes_per_second{direction="download"}"#), 0.0);
    assert_eq!(get(r#"s3block_bandwidth_wait_seconds_total{direction="upload"}"#), 2.5);
    // Cost: (9 PUT + 1 LIST) at $5 per 1000, 37 GETs at $0.4.
    assert!((get("s3block_request_cost_dollars") - (10.0 * 5.0 + 37.0 * 0.4) / 1000.0).abs() < 1e-12);
    // Latency: cumulative buckets in seconds, +Inf the count.
    let put =
        |le: &str| get(&format!(r#"s3block_request_duration_seconds_bucket{{method="PUT",le="{le}"}}"#));
    assert_eq!((put("0.005"), put("0.01"), put("0.05"), put("0.1"), put("10")), (0.0, 2.0, 2.0, 3.0, 3.0));
    assert_eq!(put("+Inf"), 4.0);
    assert_eq!(get(r#"s3block_request_duration_seconds_count{method="PUT"}"#), 4.0);
    assert_eq!(get(r#"s3block_request_duration_seconds_sum{method="PUT"}"#), 12.5);
    assert_eq!(get(r#"s3block_request_duration_seconds_count{method="GET"}"#), 0.0);
    // Both tiers of the cache.
    assert_eq!(get(r#"s3block_cache_reads_total{tier="memory",result="hit"}"#), 61.0);
    assert_eq!(get(r#"s3block_cache_reads_total{tier="memory",result="zero_hit"}"#), 7.0);
    assert_eq!(get(r#"s3block_cache_reads_total{tier="memory",result="miss"}"#), 4.0);
    assert_eq!(get(r#"s3block_cache_reads_total{tier="disk",result="hit"}"#), 11.0);
    assert_eq!(get(r#"s3block_cache_reads_total{tier="disk",result="miss"}"#), 12.0);
    assert_eq!(get("s3block_unchanged_writes_total"), 29.0);
    for (rule, n) in [
        ("written", 31),
        ("in_flight", 32),
        ("large", 33),
        ("sequential", 34),
        ("next_block", 35),
        ("dense", 36),
    ] {
        assert_eq!(
            get(&format!(r#"s3block_whole_block_misses_total{{rule="{rule}"}}"#)),
            f64::from(n),
            "{rule}"
        );
    }
    for (cause, n) in [("written_whole", 41), ("delay", 42), ("flush", 43), ("dirty_limit", 44)] {
        assert_eq!(
            get(&format!(r#"s3block_uploads_started_total{{cause="{cause}"}}"#)),
            f64::from(n),
            "{cause}"
        );
    }
    assert_eq!(get(r#"s3block_dirty_bytes{tier="memory"}"#), 327_680.0);
    assert_eq!(get(r#"s3block_dirty_bytes{tier="disk"}"#), 393_216.0);
    assert_eq!(get(r#"s3block_cache_size_bytes{tier="disk"}"#), f64::from(1u32 << 30));
    assert_eq!(get(r#"s3block_upload_queue_blocks{state="uploading"}"#), 2.0);
    assert_eq!(get(r#"s3block_upload_queue_blocks{state="waiting"}"#), 3.0);
    assert_eq!(get("s3block_disk_oldest_unstored_seconds"), 2.5);
    // The lock and the store's health.
    assert_eq!(get("s3block_lock_held"), 1.0);
    assert_eq!(get("s3block_store_reachable"), 0.0);
    assert_eq!(get("s3block_store_unreachable_since_seconds"), 1_800_000_000.0);
    assert_eq!(get("s3block_requests_waiting"), 4.0);
    assert!(text.contains("# TYPE s3block_request_duration_seconds histogram\n"), "{text}");
    assert!(text.contains("# TYPE s3block_requests_total counter\n"), "{text}");
    assert!(text.contains("# TYPE s3block_dirty_bytes gauge\n"), "{text}");

    // Without a disk cache there is no disk tier; a healthy store reads 1.
    let metrics = Metrics::new("s3", "backups", || {
        let mut s = sample();
        s.stats.disk = None;
        s.health = StoreHealth::default();
        s.lock_held = false;
        s
    });
    let text = metrics.render();
    let m = parse(&text);
    assert!(!text.contains("tier=\"disk\"") && !text.contains("s3block_disk_"), "{text}");
    assert_eq!((m["s3block_store_reachable"], m["s3block_store_unreachable_since_seconds"]), (1.0, 0.0));
    assert_eq!(m["s3block_lock_held"], 0.0);
}

/// One raw exchange with the server: what it answered, whole.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before a large request is all sent.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_get_metrics_and_refuses_the_rest() {
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    // The port taken: a second listener fails, naming the address.
    let err = MetricsServer::bind(addr).unwrap_err();
    assert!(err.contains(&format!("--metrics {addr}")) && err.contains("in use"), "{err}");
    let task = server.serve(Metrics::new("s3", "backups", sample)).unwrap();

    let answers = tokio::task::spawn_blocking(move || {
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let query = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        let other = exchange(addr, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        let garbage = exchange(addr, b"\x16\x03\x01 hello there\r\n\r\n");
        let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 64 * 1024));
        big.extend(b"\r\n\r\n");
        let huge = exchange(addr, &big);
        [ok, head, query, other, post, garbage, huge]
    })
    .await
    .unwrap();
    let [ok, head, query, other, post, garbage, huge] = answers;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{ok}");
    let body = &ok[ok.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(parse(body)["s3block_sent_bytes_total"], 524_288.0);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "no body: {head}");
    assert!(query.starts_with("HTTP/1.0 200 OK\r\n"), "{query}");
    assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n") && other.contains("/metrics only"), "{other}");
    assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
    assert!(post.contains("allow: GET, HEAD\r\n"), "{post}");
    assert!(garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{garbage}");
    assert!(huge.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{huge}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_slow_clients_let_go() {
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let task = server.serve(Metrics::new("s3", "backups", sample)).unwrap();
    let (extra, after) = tokio::task::spawn_blocking(move || {
        // MAX_CONNECTIONS clients that send nothing hold every slot...
        let idle: Vec<_> =
            (0..MAX_CONNECTIONS).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        // ...so one more is closed without an answer,
        let extra = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        // until the head timeout lets them go.
        std::thread::sleep(HEAD_TIMEOUT + Duration::from_secs(1));
        let after = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        drop(idle);
        (extra, after)
    })
    .await
    .unwrap();
    assert_eq!(extra, "", "closed without an answer");
    assert!(after.starts_with("HTTP/1.1 200 OK\r\n"), "{after}");
    task.abort();
}
