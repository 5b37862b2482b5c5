//! The Open Inference Protocol (KServe V2) on the wire: request decoding (JSON, and Triton's
//! binary tensor data extension), response encoding, metadata documents, the validation every
//! front end applies to an infer request (`validate`), the raw little-endian tensor encoding
//! that the binary extension and gRPC's raw contents share (`binary`), and `ApiError` with its
//! one mapping to HTTP status codes (gRPC maps it in `grpc::status`).
//!
//! Depends only on `tensor`. Decoding validates everything against the model's signature
//! before allocating anything sized by the request.

pub mod binary;
mod decode;
mod encode;
pub mod metadata;
mod numbers;
pub mod validate;

use http::StatusCode;

pub use decode::{DecodeLimits, InferRequest, OutputChoice, declared_spec, decode_infer, decode_outputs};
pub use encode::{EncodedResponse, encode_binary_request, encode_infer};

/// Header naming the length of the JSON part of a binary-extension body.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Everything a client can be told went wrong. Each variant's status is decided in `status`
/// (no wildcard arm: a new variant must choose one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid V2 request (bad JSON, inconsistent sizes, negative dims...).
    #[error("{0}")]
    Malformed(String),
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("model '{model}' has no served version {version}")]
    UnknownVersion { model: String, version: String },
    #[error("no such endpoint: {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("method {method} is not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed { method: String, path: String, allowed: &'static str },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// A `Content-Encoding` we cannot decode.
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// Well-formed, but not what this model takes (input name, datatype, shape, output name).
    #[error("{0}")]
    Mismatch(String),
    #[error("model '{model}' is not ready: {reason}")]
    NotReady { model: String, reason: String },
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    TimedOut(String),
    /// The runtime refused the request's inputs (ONNX Runtime's INVALID_ARGUMENT or a shape its
    /// graph cannot take): valid for the model's signature, but not for its graph.
    #[error("{0}")]
    InputRefused(String),
    #[error("{0}")]
    InferenceFailed(String),
    /// A remote version could not be reached or answered with a failure of its own.
    #[error("{0}")]
    BadGateway(String),
    /// Something other than a model or version that does not exist (a feedback id, a rollout).
    #[error("{0}")]
    NotFound(String),
    /// It existed, but too long ago (a prediction past its feedback time limit).
    #[error("{0}")]
    Gone(String),
    /// It cannot happen twice (a second label for one prediction).
    #[error("{0}")]
    Conflict(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The data plane wants a tenant's API key (`[auth]`) and the request has none it knows.
    #[error("{0}")]
    Unauthenticated(String),
    /// The tenant may not do this (a model outside its list, a pinned version).
    #[error("{0}")]
    Forbidden(String),
    /// Over the tenant's rate or concurrency quota: retry after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u32 },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Internal(String),
    /// A gRPC reply over `max_request_bytes`, which bounds gRPC messages both ways.
    #[error(
        "the reply would be {size} bytes, more than the limit of {limit} bytes (server.max_request_bytes bounds gRPC messages both ways); ask for fewer outputs or rows"
    )]
    ReplyTooLarge { size: usize, limit: usize },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownModel(_) => StatusCode::NOT_FOUND,
            ApiError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
            ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Mismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::InputRefused(_) => StatusCode::BAD_REQUEST,
            ApiError::InferenceFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // Only gRPC produces it; a limit the operator set, hit by a valid request.
            ApiError::ReplyTooLarge { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds a client should wait before retrying, for the errors where retrying helps.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::Overloaded(_) | ApiError::ShuttingDown => Some(1),
            ApiError::NotReady { .. } => Some(5),
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The JSON body: `{"error": "..."}`.
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"error\":");
        encode::write_json_str(&mut out, &self.to_string());
        out.push(b'}');
        out
    }
}
