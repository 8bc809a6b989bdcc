//! The lock object's body: s3backer's two lines (host and time) and the
//! lines s3block adds to name the holder's process.

use s3block_core::{HolderProcess, Liveness, holder_liveness};

/// Who holds a lock, as recorded in the lock object.
///
/// The body is s3backer's two lines, host and time, followed by lines of
/// `name=value` that identify the holder's process on its host (see
/// [`HolderProcess`]):
///
/// ```text
/// vps
/// 20260101T120000Z
/// pid=1234
/// boot=b9f3be6e-d765-43a6-ac75-9fec22d6b93e
/// start=440894
/// machine=3d1219c7c4c5404aaa1f6d2a48adfda4
/// pidns=4026531836
/// ```
///
/// s3backer reads only the token header, never the body; a body of two
/// lines (s3backer's, an older s3block's) parses with an unknown process.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// Host name.
    pub host: String,
    /// When it was taken, `YYYYMMDDTHHMMSSZ`.
    pub since: String,
    /// The mount token, if the object carries one.
    pub token: Option<String>,
    /// The holder's process on its host, as far as the lock records it.
    pub process: HolderProcess,
}

/// How much of a lock body is parsed: more is ignored.
pub(super) const MAX_LOCK_BODY: usize = 4096;

impl LockInfo {
    /// A holder as a lock object names it.
    pub fn new(host: impl Into<String>, since: impl Into<String>, token: Option<String>) -> Self {
        LockInfo { host: host.into(), since: since.into(), token, process: HolderProcess::default() }
    }

    /// This holder with its process.
    pub fn with_process(mut self, process: HolderProcess) -> Self {
        self.process = process;
        self
    }

    /// The lock object's body for this holder.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n", self.host, self.since);
        let p = &self.process;
        let lines = [
            p.pid.map(|v| format!("pid={v}")),
            p.boot_id.as_ref().map(|v| format!("boot={v}")),
            p.start.map(|v| format!("start={v}")),
            p.machine_id.as_ref().map(|v| format!("machine={v}")),
            p.pid_ns.map(|v| format!("pidns={v}")),
        ];
        for line in lines.into_iter().flatten() {
            body.push_str(&line);
            body.push('\n');
        }
        body
    }

    /// Parses a lock object's body (any bytes: what cannot be read is left
    /// unknown), with the token from the object's metadata.
    pub fn parse(body: &[u8], token: Option<String>) -> LockInfo {
        let text = String::from_utf8_lossy(&body[..body.len().min(MAX_LOCK_BODY)]);
        let mut lines = text.lines();
        let host = lines.next().unwrap_or("").trim();
        let since = lines.next().unwrap_or("").trim();
        let mut process = HolderProcess::default();
        for line in lines {
            let Some((name, value)) = line.split_once('=') else { continue };
            let value = value.trim();
            let id = || (!value.is_empty() && value.len() <= 64).then(|| printable(value));
            match name.trim() {
                "pid" => process.pid = value.parse().ok(),
                "boot" => process.boot_id = id(),
                "start" => process.start = value.parse().ok(),
                "machine" => process.machine_id = id(),
                "pidns" => process.pid_ns = value.parse().ok(),
                _ => {}
            }
        }
        LockInfo {
            host: if host.is_empty() { "an unknown host".into() } else { printable(host) },
            since: if since.is_empty() { "an unknown time".into() } else { printable(since) },
            token,
            process,
        }
    }

    /// Whether the holder still runs, for a lock naming `this_host` (the
    /// host this machine records in its locks); `None` for another host.
    pub fn liveness(&self, this_host: &str) -> Option<Liveness> {
        (self.host == this_host).then(|| holder_liveness(&self.process))
    }

    /// The holder as a log line names it: host, process and time.
    pub fn describe(&self) -> String {
        match self.process.pid {
            Some(pid) => format!("{} (process {pid}) since {}", self.host, self.since),
            None => format!("{} since {}", self.host, self.since),
        }
    }
}

/// `text` with its control characters (terminal escapes, NULs) replaced by
/// U+FFFD: what a lock names ends up in messages printed to a terminal.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { char::REPLACEMENT_CHARACTER } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostname;

    #[test]
    fn a_new_body_keeps_s3backers_two_lines_first() {
        let process = HolderProcess::new(Some(1234), Some("b9f3be6e-d765-43a6-ac75-9fec22d6b93e".into()))
            .with_start(Some(440_894))
            .with_machine_id(Some("3d1219c7".into()))
            .with_pid_ns(Some(4_026_531_836));
        let info = LockInfo::new("vps", "20260101T120000Z", None).with_process(process.clone());
        let body = info.body();
        assert_eq!(
            body,
            "vps\n20260101T120000Z\npid=1234\nboot=b9f3be6e-d765-43a6-ac75-9fec22d6b93e\nstart=440894\n\
             machine=3d1219c7\npidns=4026531836\n"
        );
        let parsed = LockInfo::parse(body.as_bytes(), Some("0badcafe".into()));
        assert_eq!(
            parsed,
            LockInfo::new("vps", "20260101T120000Z", Some("0badcafe".into())).with_process(process)
        );
        // The minimal new body of pid and boot id.
        let parsed = LockInfo::parse(b"vps\n20260101T120000Z\npid=77\nboot=abc\n", None);
        assert_eq!(parsed.process, HolderProcess::new(Some(77), Some("abc".into())));
        assert_eq!(parsed.describe(), "vps (process 77) since 20260101T120000Z");
    }

    #[test]
    fn old_bodies_parse_with_an_unknown_process() {
        for body in
            [&b"vps\n20250101T000000Z\n"[..], b"vps\n20250101T000000Z", b"vps\r\n20250101T000000Z\r\n"]
        {
            let info = LockInfo::parse(body, None);
            assert_eq!((info.host.as_str(), info.since.as_str()), ("vps", "20250101T000000Z"), "{body:?}");
            assert!(!info.process.is_known());
        }
        let empty = LockInfo::parse(b"", None);
        assert_eq!((empty.host.as_str(), empty.since.as_str()), ("an unknown host", "an unknown time"));
        // A lock of this host that records no process proves nothing.
        let here = hostname();
        let old = LockInfo::parse(format!("{here}\n20250101T000000Z\n").as_bytes(), None);
        assert!(matches!(old.liveness(&here), Some(Liveness::Unknown(_))));
        assert_eq!(old.liveness("elsewhere.example"), None);
    }

    #[test]
    fn bad_lines_are_left_unknown() {
        let body = b"vps\nnow\npid=-3\nboot=\nstart=soon\nmachine=" as &[u8];
        let info = LockInfo::parse(body, None);
        assert_eq!(info.process, HolderProcess::default());
        let long =
            format!("vps\nnow\nboot={}\npid=99999999999\nnoise\n=x\ncolour=blue\npid=5\n", "b".repeat(65));
        let info = LockInfo::parse(long.as_bytes(), None);
        assert_eq!(info.process, HolderProcess::new(Some(5), None));
    }

    #[test]
    fn garbage_bodies_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        let seeds: [&[u8]; 4] = [b"vps\n20260101T120000Z\npid=1\nboot=x\n", b"\xff\xfe\n=\n", b"", b"\n\n\n"];
        for round in 0..2000 {
            let mut body = seeds[round % seeds.len()].to_vec();
            for _ in 0..rng.random_range(0..16) {
                let at = rng.random_range(0..=body.len());
                match rng.random_range(0..3) {
                    0 => body.insert(at, rng.random()),
                    1 if at < body.len() => body[at] = rng.random(),
                    _ => body.extend_from_slice(b"\npid=4294967296\nstart=18446744073709551616\nboot=\xc3("),
                }
            }
            let info = LockInfo::parse(&body, None);
            assert!(!info.host.is_empty() && !info.since.is_empty());
            let _ = info.liveness(&info.host.clone());
        }
        // A huge body is read only so far.
        let mut huge = b"vps\nnow\n".to_vec();
        huge.resize(MAX_LOCK_BODY, b'x');
        huge.extend_from_slice(b"\npid=5\n");
        assert_eq!(LockInfo::parse(&huge, None).process.pid, None);
    }
}
