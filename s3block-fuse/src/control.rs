//! The control file: how `s3block resize MOUNTPOINT` asks the running mount
//! to grow its volume.
//!
//! The file `control` sits beside the device file, mode 0600, owned by the
//! mount's owner; only that user (and root) may open it. A client opens it
//! for reading and writing, writes one request line, and reads the answer
//! from the same handle. The requests and answers are the frontends' control
//! protocol (`s3block_cache::frontend::control`): `size`, and `resize SIZE
//! [BLOCK_SIZE]`, answered `ok ...` or `error WHY`.

pub(crate) use s3block_cache::frontend::control::answer;

/// The name of the control file.
pub(crate) const CONTROL_FILE: &str = "control";
