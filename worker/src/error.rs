//! Errors that stop a worker: below the lease loop, so that the device code can return them.

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator refused the worker for good (e.g. a protocol version mismatch).
    #[error("coordinator refused this worker: {0}")]
    Refused(String),
    /// The device could not be opened.
    #[error("device {0}: {1}")]
    Device(String, String),
    /// The coordinator URL is malformed.
    #[error("coordinator URL {0:?}: {1}")]
    Url(String, String),
}
