//! The store's error type: what callers of the store branch on (a lost race, a missing row, a
//! row that does not map, a retryable outage).

/// Errors of every [`Store`](super::Store) method.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A version or condition guard failed: another writer got there first (or the item the
    /// guard expected is gone). Re-read and decide again.
    #[error("the item changed concurrently (condition failed)")]
    Conflict,
    /// The item the operation needs does not exist (or no longer holds a connection).
    #[error("the item was not found")]
    NotFound,
    /// A stored item does not map to its type: a bug or a hand edit, never retried.
    #[error("a stored item is corrupt: {what}")]
    Corrupt { what: String },
    /// Any other DynamoDB failure (throttling, network, timeouts, service errors): retry later.
    #[error("DynamoDB is unavailable")]
    Unavailable(#[source] Box<aws_sdk_dynamodb::Error>),
    /// DynamoDB kept leaving a batch's writes unprocessed (it throttles them): retry later.
    #[error("DynamoDB left writes unprocessed (throttled)")]
    Unprocessed,
    /// The function's role may not do this (a missing IAM permission): the operator's to fix.
    #[error("DynamoDB refused the request (missing permission)")]
    Denied(#[source] Box<aws_sdk_dynamodb::Error>),
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into() }
    }
}

/// Maps any operation's SDK error: a failed condition is [`StoreError::Conflict`], the rest is
/// [`StoreError::Unavailable`] with its cause kept.
pub(crate) fn from_sdk(err: impl Into<aws_sdk_dynamodb::Error>) -> StoreError {
    match err.into() {
        aws_sdk_dynamodb::Error::ConditionalCheckFailedException(_) => StoreError::Conflict,
        other
            if matches!(
                aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&other),
                Some("AccessDeniedException" | "UnrecognizedClientException")
            ) =>
        {
            tracing::error!(error = %other, operator_alarm = true, "DynamoDB denied the request");
            StoreError::Denied(Box::new(other))
        }
        other => {
            tracing::warn!(error = %other, "DynamoDB request failed");
            StoreError::Unavailable(Box::new(other))
        }
    }
}

/// A write whose lost race is fine (the item moved on; the caller has nothing to redo): a
/// failed condition counts as done.
pub(crate) fn conflict_is_done<T>(r: Result<T, StoreError>) -> Result<(), StoreError> {
    match r {
        Ok(_) | Err(StoreError::Conflict) => Ok(()),
        Err(e) => Err(e),
    }
}
