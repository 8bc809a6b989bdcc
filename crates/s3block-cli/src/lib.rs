//! s3block-cli (in progress).
