//! The NBD wire format: constants, and encoding and parsing of the
//! handshake, option replies, requests and replies.
//!
//! Every number on the wire is big-endian. Names follow the protocol's
//! (`NBD_OPT_GO` is [`OPT_GO`]) so that the code reads against the
//! specification (`doc/proto.md` of the NBD project).

use bytes::{BufMut, Bytes, BytesMut};

/// `NBDMAGIC`: the first eight bytes a server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle handshake's magic, and every option's.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// The magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can leave out the 124 zero bytes.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: leave out the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag: always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` (and `NO_HOLE`) is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: `NBD_CMD_FLAG_DF` is supported on reads.
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag: several connections share one cache; a flush on any
/// covers writes completed on all.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: `NBD_CMD_CACHE` is supported.
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
/// Transmission flag: `NBD_CMD_FLAG_FAST_ZERO` is supported.
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// Option: choose the export and enter transmission (no error possible).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the session.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: upgrade the connection to TLS.
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: success, or the end of a list.
pub const REP_ACK: u32 = 1;
/// Option reply: an export's name (to `NBD_OPT_LIST`).
pub const REP_SERVER: u32 = 2;
/// Option reply: one item of information (to `NBD_OPT_INFO`/`GO`).
pub const REP_INFO: u32 = 3;
/// Option reply: a metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Option error: the option is not supported.
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
/// Option error: refused by policy.
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
/// Option error: malformed or out of place.
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
/// Option error: TLS must be started first.
pub const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
/// Option error: no such export.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
/// Option error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;
/// Option error: the request or reply is too large.
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Information item: size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Information item: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// Information item: the export's description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information item: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (a payload follows the request).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect.
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Command: prefetch into the cache.
pub const CMD_CACHE: u16 = 5;
/// Command: write zeros.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command: block status.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag: do not punch holes (write zeros).
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag: do not fragment the read reply.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag: one extent only (block status).
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag: fail unless zeroing is fast.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag: the last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk type: nothing (ends a reply).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: a run of zeros at an offset.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk type: block status descriptors.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk type: an error.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// `base:allocation` flag: the extent is a hole.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` flag: the extent reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

/// Error: operation not permitted (a write to a read-only export).
pub const EPERM: u32 = 1;
/// Error: input/output error.
pub const EIO: u32 = 5;
/// Error: invalid argument.
pub const EINVAL: u32 = 22;
/// Error: no space left (a write past the end).
pub const ENOSPC: u32 = 28;
/// Error: operation not supported.
pub const ENOTSUP: u32 = 95;
/// Error: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// The one metadata context the server knows.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// Length of a request header.
pub const REQUEST_LEN: usize = 28;

/// The protocol's name of a command, for logs.
pub fn command_name(kind: u16) -> &'static str {
    match kind {
        CMD_READ => "READ",
        CMD_WRITE => "WRITE",
        CMD_DISC => "DISC",
        CMD_FLUSH => "FLUSH",
        CMD_TRIM => "TRIM",
        CMD_CACHE => "CACHE",
        CMD_WRITE_ZEROES => "WRITE_ZEROES",
        CMD_BLOCK_STATUS => "BLOCK_STATUS",
        _ => "unknown command",
    }
}

/// The protocol's name of an option, for logs.
pub fn option_name(option: u32) -> &'static str {
    match option {
        OPT_EXPORT_NAME => "EXPORT_NAME",
        OPT_ABORT => "ABORT",
        OPT_LIST => "LIST",
        OPT_STARTTLS => "STARTTLS",
        OPT_INFO => "INFO",
        OPT_GO => "GO",
        OPT_STRUCTURED_REPLY => "STRUCTURED_REPLY",
        OPT_LIST_META_CONTEXT => "LIST_META_CONTEXT",
        OPT_SET_META_CONTEXT => "SET_META_CONTEXT",
        _ => "unknown option",
    }
}

/// A request header, as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// The command.
    pub kind: u16,
    /// The client's handle, echoed in the reply.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

impl Request {
    /// Parses a request header; `Err` carries the magic found instead of
    /// [`REQUEST_MAGIC`].
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Result<Request, u32> {
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != REQUEST_MAGIC {
            return Err(magic);
        }
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let mut u64_at = [0u8; 8];
        u64_at.copy_from_slice(&b[8..16]);
        let cookie = u64::from_be_bytes(u64_at);
        u64_at.copy_from_slice(&b[16..24]);
        let offset = u64::from_be_bytes(u64_at);
        Ok(Request {
            flags: u16_at(4),
            kind: u16_at(6),
            cookie,
            offset,
            len: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
        })
    }

    /// The header's bytes (what a client sends).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// The server's greeting: magic, `IHAVEOPT` and the handshake flags.
pub fn greeting() -> Bytes {
    let mut b = BytesMut::with_capacity(18);
    b.put_u64(NBD_MAGIC);
    b.put_u64(IHAVEOPT);
    b.put_u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    b.freeze()
}

/// An option reply.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(20 + data.len());
    b.put_u64(OPT_REPLY_MAGIC);
    b.put_u32(option);
    b.put_u32(reply);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

/// An option error reply with a message for the user.
pub fn option_error(option: u32, reply: u32, message: &str) -> Bytes {
    option_reply(option, reply, truncate(message).as_bytes())
}

/// Cuts a message to the protocol's 4096-byte limit on strings, at a
/// character boundary.
pub fn truncate(message: &str) -> &str {
    if message.len() <= 4096 {
        return message;
    }
    let mut end = 4096;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// The header of a simple reply (the data of a successful read follows).
pub fn simple_reply(cookie: u64, error: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    b.put_u32(SIMPLE_REPLY_MAGIC);
    b.put_u32(error);
    b.put_u64(cookie);
    b.freeze()
}

/// The header of a structured reply chunk whose payload is `len` bytes.
pub fn chunk_header(cookie: u64, flags: u16, kind: u16, len: u32) -> BytesMut {
    let mut b = BytesMut::with_capacity(20 + 16);
    b.put_u32(STRUCTURED_REPLY_MAGIC);
    b.put_u16(flags);
    b.put_u16(kind);
    b.put_u64(cookie);
    b.put_u32(len);
    b
}

/// A structured error chunk, final, with a message for the user.
pub fn error_chunk(cookie: u64, error: u32, message: &str) -> Bytes {
    let message = truncate(message);
    let mut b = chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 6 + message.len() as u32);
    b.put_u32(error);
    b.put_u16(message.len() as u16);
    b.put_slice(message.as_bytes());
    b.freeze()
}

/// A structured chunk ending a reply with nothing more.
pub fn done_chunk(cookie: u64) -> Bytes {
    chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0).freeze()
}

/// The header of an `OFFSET_DATA` chunk; `len` data bytes follow it.
pub fn data_chunk_header(cookie: u64, done: bool, offset: u64, len: usize) -> Bytes {
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    let mut b = chunk_header(cookie, flags, REPLY_TYPE_OFFSET_DATA, 8 + len as u32);
    b.put_u64(offset);
    b.freeze()
}

/// An `OFFSET_HOLE` chunk: `len` bytes of zeros at `offset`.
pub fn hole_chunk(cookie: u64, done: bool, offset: u64, len: u32) -> Bytes {
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    let mut b = chunk_header(cookie, flags, REPLY_TYPE_OFFSET_HOLE, 12);
    b.put_u64(offset);
    b.put_u32(len);
    b.freeze()
}

/// A final `BLOCK_STATUS` chunk for one context: (length, flags) descriptors.
pub fn block_status_chunk(cookie: u64, context: u32, extents: &[(u32, u32)]) -> Bytes {
    let mut b = chunk_header(cookie, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 4 + 8 * extents.len() as u32);
    b.put_u32(context);
    for &(len, flags) in extents {
        b.put_u32(len);
        b.put_u32(flags);
    }
    b.freeze()
}

/// Reads big-endian fields from an option's data, refusing to read past it.
#[derive(Debug)]
pub struct OptionData<'a> {
    data: &'a [u8],
}

impl<'a> OptionData<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        OptionData { data }
    }

    /// The next `n` bytes, if there are that many.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    /// The next 16-bit number.
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// The next 32-bit number.
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string preceded by its 32-bit length; `None` when it does not fit
    /// or is not UTF-8.
    pub fn string(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.bytes(len)?).ok()
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r =
            Request { flags: CMD_FLAG_FUA, kind: CMD_WRITE, cookie: 0xdead_beef, offset: 1 << 40, len: 4096 };
        assert_eq!(Request::parse(&r.encode()), Ok(r));
        let mut bad = r.encode();
        bad[0] = 0;
        assert_eq!(Request::parse(&bad), Err(0x0060_9513));
    }

    #[test]
    fn option_data_refuses_to_read_past_the_end() {
        let mut d = OptionData::new(&[0, 0, 0, 3, b'a', b'b']);
        assert_eq!(d.string(), None);
        let mut d = OptionData::new(&[0, 0, 0, 2, b'a', b'b', 0, 1]);
        assert_eq!(d.string(), Some("ab"));
        assert_eq!(d.u16(), Some(1));
        assert!(d.is_empty());
        assert_eq!(d.u32(), None);
    }

    #[test]
    fn messages_are_cut_at_the_limit() {
        let long = "é".repeat(3000);
        let cut = truncate(&long);
        assert!(cut.len() <= 4096 && cut.len() >= 4094);
        assert_eq!(error_chunk(1, EIO, &long).len(), 20 + 6 + cut.len());
    }

    #[test]
    fn chunks_have_their_lengths() {
        assert_eq!(hole_chunk(1, true, 0, 512).len(), 32);
        assert_eq!(block_status_chunk(1, 1, &[(512, 3), (512, 0)]).len(), 20 + 4 + 16);
        assert_eq!(&option_reply(OPT_GO, REP_ACK, &[])[..8], &OPT_REPLY_MAGIC.to_be_bytes());
    }
}
