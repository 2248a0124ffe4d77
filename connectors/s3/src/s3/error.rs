//! S3's answers as [`ConnectorError`]s: what the user must fix is fatal and says so,
//! what may pass (a busy or unreachable server) is retriable.

use std::error::Error as StdError;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError;
use aws_sdk_s3::operation::put_object::PutObjectError;
use plexus_connector::ConnectorError;

/// An SDK error with its raw HTTP response.
pub(crate) type S3Error<E> = SdkError<E, aws_sdk_s3::config::http::HttpResponse>;

/// What error messages say about where requests went.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) bucket: String,
    /// `http://127.0.0.1:8333`, or `AWS S3 (region eu-west-1)`.
    pub(crate) endpoint: String,
    /// The access key id requests are signed with (never the secret), and where it came
    /// from: `access_key_id` or the AWS chain.
    pub(crate) credentials: String,
}

/// The S3 error codes that mean the credentials are wrong or lack a permission.
const CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "AllAccessDisabled",
];

/// Converts an SDK error from the request described by `what` (`upload part 3 of
/// `x.parquet``) after the SDK's own retries.
pub(crate) fn classify<E>(target: &Target, what: &str, error: S3Error<E>) -> ConnectorError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().map(str::to_owned);
    let detail = match (&error, error.message()) {
        (SdkError::ServiceError(_), Some(message)) => message.to_owned(),
        _ => chain(&error),
    };
    let bucket = &target.bucket;
    let endpoint = &target.endpoint;
    let converted = match &error {
        SdkError::ServiceError(_) => {
            let code_text = code.as_deref().unwrap_or("");
            if status == Some(403) || CREDENTIAL_CODES.contains(&code_text) {
                ConnectorError::fatal(format!(
                    "{what}: {endpoint} refused the credentials of {} for bucket `{bucket}` ({}): check the access key \
                     id and its secret_access_key (and session_token), and that this key may read, write and list \
                     the bucket",
                    target.credentials,
                    short(status, code.as_deref()),
                ))
            } else if code_text == "NoSuchBucket" || (status == Some(404) && matches!(code_text, "" | "NotFound")) {
                ConnectorError::fatal(format!(
                    "{what}: the bucket `{bucket}` does not exist at {endpoint}: create it, or fix the bucket in `url` \
                     (or `endpoint`)"
                ))
            } else if status == Some(301)
                || code_text == "PermanentRedirect"
                || code_text == "AuthorizationHeaderMalformed"
            {
                let region = error
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-bucket-region"))
                    .map_or_else(|| "its region".to_owned(), |r| format!("`{r}`"));
                ConnectorError::fatal(format!(
                    "{what}: the bucket `{bucket}` is in another region than the one configured: set `region` to \
                     {region}"
                ))
            } else if retriable_status(status, code_text) {
                ConnectorError::retriable(format!(
                    "{what}: {endpoint} is busy or failing ({}), still after retries",
                    short(status, code.as_deref())
                ))
            } else {
                ConnectorError::fatal(format!(
                    "{what}: {endpoint} refused the request for bucket `{bucket}` ({}): {detail}",
                    short(status, code.as_deref())
                ))
            }
        }
        SdkError::TimeoutError(_) => ConnectorError::retriable(format!(
            "{what}: {endpoint} did not answer in time (connect_timeout, request_timeout), still after retries"
        )),
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            ConnectorError::fatal(format!("{what}: the request to {endpoint} cannot be sent: {detail}"))
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() => ConnectorError::retriable(format!(
            "{what}: {endpoint} did not answer in time (connect_timeout, request_timeout), still after retries"
        )),
        SdkError::DispatchFailure(_) => ConnectorError::retriable(format!(
            "{what}: cannot reach {endpoint}, still after retries: {detail}"
        )),
        SdkError::ResponseError(_) => ConnectorError::retriable(format!(
            "{what}: the connection to {endpoint} failed during the response: {detail}"
        )),
        SdkError::ConstructionFailure(_) => {
            ConnectorError::fatal(format!("{what}: the request to {endpoint} cannot be built: {detail}"))
        }
        _ => ConnectorError::retriable(format!("{what}: {detail}")),
    };
    converted.with_source(error)
}

/// Whether a PutObject was refused because the key exists (`If-None-Match: *`).
pub(crate) fn put_precondition_failed(error: &S3Error<PutObjectError>) -> bool {
    precondition_failed(error.raw_response().map(|r| r.status().as_u16()), error.code())
}

/// Whether a CompleteMultipartUpload was refused because the key exists.
pub(crate) fn complete_precondition_failed(error: &S3Error<CompleteMultipartUploadError>) -> bool {
    precondition_failed(error.raw_response().map(|r| r.status().as_u16()), error.code())
}

/// Whether an upload id is unknown (completed or aborted already).
pub(crate) fn no_such_upload<E: ProvideErrorMetadata>(error: &S3Error<E>) -> bool {
    error.code() == Some("NoSuchUpload")
}

fn precondition_failed(status: Option<u16>, code: Option<&str>) -> bool {
    status == Some(412) || code == Some("PreconditionFailed")
}

/// Throttling, server failures and AWS's "a conditional write of this key is in
/// progress" (409 ConditionalRequestConflict, which AWS says to retry).
fn retriable_status(status: Option<u16>, code: &str) -> bool {
    matches!(status, Some(408 | 429 | 500..=599))
        || matches!(
            code,
            "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" | "ConditionalRequestConflict"
        )
}

/// An error and its sources, `: `-separated, each said once (SDK errors often repeat
/// their source's text).
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let part = next.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = next.source();
    }
    text
}

fn short(status: Option<u16>, code: Option<&str>) -> String {
    match (status, code) {
        (Some(status), Some(code)) => format!("HTTP {status} {code}"),
        (Some(status), None) => format!("HTTP {status}"),
        (None, Some(code)) => code.to_owned(),
        (None, None) => "no answer".to_owned(),
    }
}
