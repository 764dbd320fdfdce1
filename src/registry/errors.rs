//! The one error mapping of the `/v2` surface: distribution's error codes as OCI error JSON.
//! Causes are logged; clients get a safe message.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::model::NameError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("manifest unknown")]
    ManifestUnknown(String),
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("invalid repository name")]
    NameInvalid(String),
    #[error("invalid tag")]
    TagInvalid(String),
    #[error("provided digest did not match uploaded content")]
    DigestInvalid(String),
    #[error("invalid number of results requested")]
    PaginationNumberInvalid(String),
    #[error("the operation is unsupported")]
    Unsupported,
    #[error("not found")]
    NotFound,
    #[error("invalid query")]
    BadQuery(String),
    #[error("internal error")]
    Internal(#[from] StoreError),
    /// Started, not ready yet (the selection state is loading).
    #[error("the server is starting; try again in a few seconds")]
    Starting,
    /// Something that should not happen (logged with its cause).
    #[error("internal error")]
    Bug(String),
}

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::Repo(_) => RegistryError::NameInvalid(e.to_string()),
            NameError::Tag(_) => RegistryError::TagInvalid(e.to_string()),
            NameError::Digest(_) => RegistryError::DigestInvalid(e.to_string()),
        }
    }
}

impl RegistryError {
    fn code(&self) -> &'static str {
        match self {
            RegistryError::NameUnknown => "NAME_UNKNOWN",
            RegistryError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            RegistryError::BlobUnknown => "BLOB_UNKNOWN",
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::TagInvalid(_) => "TAG_INVALID",
            RegistryError::DigestInvalid(_) => "DIGEST_INVALID",
            RegistryError::PaginationNumberInvalid(_) => "PAGINATION_NUMBER_INVALID",
            RegistryError::Unsupported => "UNSUPPORTED",
            // Distribution has no code for an unknown endpoint; this read-only API does not
            // support it.
            RegistryError::NotFound => "UNSUPPORTED",
            RegistryError::BadQuery(_) => "INVALID_QUERY",
            RegistryError::Internal(_) | RegistryError::Starting => "UNAVAILABLE",
            RegistryError::Bug(_) => "UNKNOWN",
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            RegistryError::ManifestUnknown(d)
            | RegistryError::NameInvalid(d)
            | RegistryError::TagInvalid(d)
            | RegistryError::DigestInvalid(d)
            | RegistryError::PaginationNumberInvalid(d)
            | RegistryError::BadQuery(d) => serde_json::Value::String(d.clone()),
            _ => serde_json::Value::Null,
        }
    }
}

impl ResponseError for RegistryError {
    fn status_code(&self) -> StatusCode {
        match self {
            RegistryError::NameUnknown
            | RegistryError::ManifestUnknown(_)
            | RegistryError::BlobUnknown
            | RegistryError::NotFound => StatusCode::NOT_FOUND,
            RegistryError::NameInvalid(_)
            | RegistryError::TagInvalid(_)
            | RegistryError::DigestInvalid(_)
            | RegistryError::PaginationNumberInvalid(_)
            | RegistryError::BadQuery(_) => StatusCode::BAD_REQUEST,
            RegistryError::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::Internal(_) | RegistryError::Starting => StatusCode::SERVICE_UNAVAILABLE,
            RegistryError::Bug(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            RegistryError::Internal(cause) => {
                tracing::error!(error = %cause, "registry request failed")
            }
            RegistryError::Bug(cause) => tracing::error!(error = %cause, "registry request failed"),
            _ => {}
        }
        let body = serde_json::json!({
            "errors": [{ "code": self.code(), "message": self.to_string(), "detail": self.detail() }]
        });
        HttpResponse::build(self.status_code()).json(body)
    }
}
