//! s3block-cache (in progress).
