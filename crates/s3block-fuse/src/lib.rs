//! s3block-fuse (in progress).
