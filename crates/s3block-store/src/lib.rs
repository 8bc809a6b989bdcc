//! s3block-store (in progress).
