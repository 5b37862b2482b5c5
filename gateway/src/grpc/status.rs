//! `ApiError` → `tonic::Status`: one exhaustive match (no wildcard arm, so a new variant must
//! choose its code), and the same message the HTTP front end puts in `{"error": ...}`.
//!
//! Depends on `protocol` only.

use tonic::{Code, Status};

use crate::protocol::ApiError;

/// The gRPC code for each error. `TooLarge` is RESOURCE_EXHAUSTED, the code gRPC's own
/// implementations (and so Triton) use for a message over the size limit; a client can tell
/// "too big" from "wrong" (INVALID_ARGUMENT) without reading the message.
pub fn code(e: &ApiError) -> Code {
    match e {
        ApiError::Malformed(_) => Code::InvalidArgument,
        ApiError::Mismatch(_) => Code::InvalidArgument,
        ApiError::TooLarge { .. } => Code::ResourceExhausted,
        ApiError::ReplyTooLarge { .. } => Code::ResourceExhausted,
        ApiError::UnknownModel(_) => Code::NotFound,
        ApiError::NotFound(_) => Code::NotFound,
        ApiError::Gone(_) => Code::NotFound,
        ApiError::Conflict(_) => Code::AlreadyExists,
        ApiError::UnsupportedEncoding(_) => Code::InvalidArgument,
        ApiError::UnknownVersion { .. } => Code::NotFound,
        ApiError::NoRoute { .. } => Code::NotFound,
        ApiError::MethodNotAllowed { .. } => Code::Unimplemented,
        ApiError::Overloaded(_) => Code::Unavailable,
        ApiError::NotReady { .. } => Code::Unavailable,
        ApiError::ShuttingDown => Code::Unavailable,
        ApiError::TimedOut(_) => Code::DeadlineExceeded,
        ApiError::InputRefused(_) => Code::InvalidArgument,
        ApiError::InferenceFailed(_) => Code::Internal,
        ApiError::BadGateway(_) => Code::Unavailable,
        ApiError::Internal(_) => Code::Internal,
        ApiError::Unauthorized => Code::Unauthenticated,
        ApiError::Unauthenticated(_) => Code::Unauthenticated,
        ApiError::Forbidden(_) => Code::PermissionDenied,
        ApiError::TooManyRequests { .. } => Code::ResourceExhausted,
    }
}

/// The status a client receives for `e`.
pub fn of(e: &ApiError) -> Status {
    Status::new(code(e), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_http_messages_and_codes_follow_the_http_classes() {
        let cases = [
            (ApiError::Malformed("bad".into()), Code::InvalidArgument, 400),
            (ApiError::Mismatch("shape".into()), Code::InvalidArgument, 422),
            (ApiError::TooLarge { limit: 10 }, Code::ResourceExhausted, 413),
            (ApiError::UnknownModel("m".into()), Code::NotFound, 404),
            (ApiError::Overloaded("full".into()), Code::Unavailable, 503),
            (ApiError::TimedOut("late".into()), Code::DeadlineExceeded, 504),
            (ApiError::InferenceFailed("boom".into()), Code::Internal, 500),
            (ApiError::BadGateway("remote down".into()), Code::Unavailable, 502),
            (ApiError::InputRefused("index out of range".into()), Code::InvalidArgument, 400),
        ];
        for (e, grpc, http) in cases {
            let s = of(&e);
            assert_eq!(s.code(), grpc, "{e}");
            assert_eq!(s.message(), e.to_string());
            assert_eq!(e.status().as_u16(), http, "{e}");
        }
    }
}
