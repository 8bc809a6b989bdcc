//! Turning `object_store` errors into s3block's [`Error`], and deciding which
//! ones are worth retrying.
//!
//! # Classification
//!
//! `object_store` already maps the HTTP statuses it understands: 404 is
//! `NotFound`, 409 and 412 are `AlreadyExists`/`Precondition`, 401 and 403 are
//! `Unauthenticated`/`PermissionDenied`. Everything else arrives as `Generic`
//! with the HTTP error inside. For those s3block walks the error's source
//! chain:
//!
//! - an [`HttpError`] of kind connect, request, timeout or interrupted (the
//!   connection failed, was reset, or timed out) is **transient**;
//! - a status of 5xx, 429, or 408 in the message, or an S3 error code
//!   `SlowDown`, `InternalError`, `ServiceUnavailable`, `RequestTimeout`, is
//!   **transient**;
//! - S3 codes `NoSuchBucket` and `AccessDenied`/`InvalidAccessKeyId`/
//!   `SignatureDoesNotMatch` become not-found and unauthorized with a message
//!   saying what to fix;
//! - a fault from the `FaultStore` (`testing` feature) says itself whether it
//!   is transient;
//! - an error the [`RetryStore`](crate::RetryStore) named after its endpoint
//!   and bucket is classified by the error inside;
//! - anything else (other 4xx, decoding failures) is **permanent** and fails
//!   at once.

use std::error::Error as StdError;

use object_store::client::{HttpError, HttpErrorKind};
use s3block_core::{BlockId, Error, StoreErrorKind};

#[cfg(feature = "testing")]
use crate::fault::InjectedFault;

/// How an `object_store` error should be treated.
pub fn classify(err: &object_store::Error) -> StoreErrorKind {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => StoreErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => StoreErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => StoreErrorKind::Unauthorized,
        E::NotSupported { .. } | E::NotImplemented { .. } => StoreErrorKind::NotSupported,
        E::Generic { source, .. } => match source.downcast_ref::<TargetError>() {
            Some(t) => t.kind,
            None => classify_source(source.as_ref()),
        },
        _ => StoreErrorKind::Permanent,
    }
}

/// Whether `err` says the bucket does not exist (S3 `NoSuchBucket`).
/// `object_store` reports it as `NotFound`, like a missing object; only the
/// error code in the answer tells them apart (a HEAD has no body, so a HEAD
/// on a missing bucket looks like a missing object).
pub(crate) fn is_missing_bucket(err: &object_store::Error) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.to_string().contains("NoSuchBucket") {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Whether `err` means the object is absent (and not the bucket).
pub(crate) fn is_absent(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::NotFound { .. }) && !is_missing_bucket(err)
}

/// The innermost error of `err`'s chain, as text ("Connection refused (os
/// error 111)"): the cause a user can act on.
pub(crate) fn root_cause(err: &object_store::Error) -> String {
    let mut last: &(dyn StdError + 'static) = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// An error with a message naming the endpoint and bucket and saying what to
/// fix; made by the [`RetryStore`](crate::RetryStore), carried inside
/// `object_store::Error::Generic` and unwrapped again by [`store_error`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct TargetError {
    message: String,
    /// How the error inside was classified.
    kind: StoreErrorKind,
    #[source]
    source: s3block_core::BoxError,
}

impl TargetError {
    pub(crate) fn new(message: String, source: object_store::Error) -> Self {
        TargetError { message, kind: classify(&source), source: Box::new(source) }
    }

    /// An error of `kind` whose cause is shown as `summary` only (the
    /// server's answer cut to its status and code).
    pub(crate) fn summarised(message: String, kind: StoreErrorKind, summary: String) -> Self {
        TargetError { message, kind, source: summary.into() }
    }

    pub(crate) fn into_error(self) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: Box::new(self) }
    }
}

fn classify_source(source: &(dyn StdError + 'static)) -> StoreErrorKind {
    let mut text = String::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(source);
    while let Some(e) = cur {
        #[cfg(feature = "testing")]
        if let Some(fault) = e.downcast_ref::<InjectedFault>() {
            return fault.kind();
        }
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted => StoreErrorKind::Transient,
                _ => StoreErrorKind::Permanent,
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::TimedOut | K::ConnectionReset | K::ConnectionAborted | K::Interrupted | K::BrokenPipe
            ) {
                return StoreErrorKind::Transient;
            }
        }
        text.push_str(&e.to_string());
        text.push('\n');
        cur = e.source();
    }
    classify_text(&text)
}

/// Classifies by the status code or S3 error code found in an error message.
fn classify_text(text: &str) -> StoreErrorKind {
    const TRANSIENT_CODES: [&str; 5] = [
        "<Code>SlowDown<",
        "<Code>InternalError<",
        "<Code>ServiceUnavailable<",
        "<Code>RequestTimeout<",
        "<Code>ThrottlingException<",
    ];
    if TRANSIENT_CODES.iter().any(|c| text.contains(c)) {
        return StoreErrorKind::Transient;
    }
    if text.contains("<Code>NoSuchBucket<") {
        return StoreErrorKind::NotFound;
    }
    if ["<Code>AccessDenied<", "<Code>InvalidAccessKeyId<", "<Code>SignatureDoesNotMatch<"]
        .iter()
        .any(|c| text.contains(c))
    {
        return StoreErrorKind::Unauthorized;
    }
    match status_in(text) {
        Some(s) if (500..600).contains(&s) || s == 429 || s == 408 => StoreErrorKind::Transient,
        Some(404) => StoreErrorKind::NotFound,
        Some(401 | 403) => StoreErrorKind::Unauthorized,
        _ => StoreErrorKind::Permanent,
    }
}

/// The HTTP status in `object_store`'s "status code: 503 ..." message.
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// Wraps an `object_store` error as [`Error::Store`] for `key` (and `block`),
/// with a hint saying what to fix for the errors a user can fix.
pub fn store_error(err: object_store::Error, key: &str, block: Option<BlockId>) -> Error {
    let kind = classify(&err);
    let err = match err {
        object_store::Error::Generic { store, source } => match source.downcast::<TargetError>() {
            // Already says what to fix, naming the endpoint and bucket.
            Ok(t) => return Error::Store { block, key: key.to_owned(), kind, source: t },
            Err(source) => object_store::Error::Generic { store, source },
        },
        other => other,
    };
    let hint = match kind {
        StoreErrorKind::Unauthorized => {
            Some("check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the access file, and the bucket policy")
        }
        StoreErrorKind::NotFound if is_missing_bucket(&err) => {
            Some("the bucket does not exist: check the bucket name in the URL and the region/endpoint")
        }
        _ => None,
    };
    let source: s3block_core::BoxError = match hint {
        Some(h) => Box::new(Hinted { hint: h, source: err }),
        None => Box::new(err),
    };
    Error::Store { block, key: key.to_owned(), kind, source }
}

/// An error with a sentence in front saying what the user should fix.
#[derive(Debug, thiserror::Error)]
#[error("{hint} ({source})")]
pub(crate) struct Hinted {
    hint: &'static str,
    source: object_store::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(msg: &str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: msg.to_owned().into() }
    }

    #[test]
    fn statuses_and_codes() {
        assert_eq!(
            classify(&generic("Server returned non-2xx status code: 503 Service Unavailable: ")),
            StoreErrorKind::Transient
        );
        assert_eq!(
            classify(&generic("Server returned non-2xx status code: 400 Bad Request: x")),
            StoreErrorKind::Permanent
        );
        assert_eq!(
            classify(&generic("error response: <Error><Code>SlowDown</Code></Error>")),
            StoreErrorKind::Transient
        );
        assert_eq!(classify(&generic("<Error><Code>NoSuchBucket</Code></Error>")), StoreErrorKind::NotFound);
        let nf = object_store::Error::NotFound { path: "k".into(), source: "gone".into() };
        assert_eq!(classify(&nf), StoreErrorKind::NotFound);
        let denied = object_store::Error::PermissionDenied { path: "k".into(), source: "no".into() };
        let e = store_error(denied, "vol/00000001", Some(BlockId(1)));
        let msg = e.to_string();
        assert!(msg.contains("vol/00000001") && msg.contains("block 1"), "{msg}");
        let chain = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
        assert!(chain.contains("AWS_ACCESS_KEY_ID"), "{chain}");
        let timeout = object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(HttpErrorKind::Timeout, std::io::Error::other("slow"))),
        };
        assert_eq!(classify(&timeout), StoreErrorKind::Transient);
    }

    #[test]
    fn a_missing_bucket_is_not_an_absent_object() {
        let body =
            "Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>";
        let bucket = object_store::Error::NotFound { path: "vol/x".into(), source: body.into() };
        let object = object_store::Error::NotFound { path: "vol/x".into(), source: "404".into() };
        assert!(is_missing_bucket(&bucket) && !is_absent(&bucket));
        assert!(!is_missing_bucket(&object) && is_absent(&object));
        let msg = store_error(bucket, "vol/x", None).to_string();
        assert!(msg.contains("the bucket does not exist"), "{msg}");
    }

    #[test]
    fn target_errors_keep_their_kind_and_message() {
        let denied = object_store::Error::PermissionDenied { path: "k".into(), source: "403".into() };
        let wrapped = TargetError::new("endpoint E refused the credentials".into(), denied).into_error();
        assert_eq!(classify(&wrapped), StoreErrorKind::Unauthorized);
        let e = store_error(wrapped, "vol/k", None);
        assert!(matches!(e, Error::Store { kind: StoreErrorKind::Unauthorized, .. }));
        assert_eq!(e.to_string(), "key vol/k: access denied: endpoint E refused the credentials");
        let chain = std::error::Error::source(&e).and_then(std::error::Error::source).map(|s| s.to_string());
        assert!(chain.unwrap_or_default().contains("privileges"), "the original error stays in the chain");
    }
}
