//! Where a store is and how to reach it: the settings a sink includes in its own, and
//! the parsing of `url`.

use std::path::PathBuf;
use std::time::Duration;

use plexus_config::Secret;
use plexus_connector::{ConnectorError, FieldKind, FieldSpec, Settings};

/// The settings of an object store, as a sink's configuration holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `s3://bucket/optional/prefix`, `file:///absolute/dir`, or a directory path.
    pub url: String,
    /// An S3-compatible server instead of AWS (`http://127.0.0.1:8333`).
    pub endpoint: Option<String>,
    /// The bucket's region. Default: `us-east-1` with an `endpoint`, else the standard
    /// AWS chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (most
    /// S3-compatible servers need this).
    pub path_style: bool,
    /// With `secret_access_key`: the credentials to sign with. Without both: the
    /// standard AWS chain (environment variables, profile, instance role).
    pub access_key_id: Option<String>,
    /// The secret of `access_key_id`; `Debug` shows `***`.
    pub secret_access_key: Option<Secret>,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// Parts of one upload sent at the same time (each held in memory until stored).
    pub upload_concurrency: usize,
    /// Attempts per request, the first included, for throttling, server errors and lost
    /// connections (exponential backoff with jitter in between).
    pub max_attempts: u32,
    /// The longest wait for a connection to the server.
    pub connect_timeout: Duration,
    /// The longest one attempt of one request may take, a part upload included.
    pub request_timeout: Duration,
    /// Keys asked for per listing request (S3 answers at most 1000). Not a user
    /// setting: tests lower it to cross page boundaries with few objects.
    pub list_page_size: u16,
}

/// Parts of one upload in flight at once, by default.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 2;
/// Attempts per request, the first included, by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The longest wait for a connection, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one attempt of a request may take, by default. A server that hangs
/// (accepts connections, never answers) gives a retriable error after at most
/// `max_attempts` times this, plus backoff.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl StoreSettings {
    /// Settings for `url` with every default: credentials and region from the standard
    /// AWS chain.
    pub fn new(url: impl Into<String>) -> StoreSettings {
        StoreSettings {
            url: url.into(),
            endpoint: None,
            region: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            list_page_size: 1000,
        }
    }

    /// Reads settings validated against [`fields`]; absent optional settings take their
    /// defaults. Errors are fatal and name the setting.
    pub fn from_settings(settings: &Settings) -> Result<StoreSettings, ConnectorError> {
        let url = settings
            .string("url")
            .ok_or_else(|| invalid("url", "is required: `s3://bucket/prefix`, `file:///dir` or a directory"))?;
        let mut store = StoreSettings::new(url);
        let string = |name: &str| settings.string(name).map(str::to_owned);
        store.endpoint = string("endpoint");
        store.region = string("region");
        store.path_style = settings.bool("path_style").unwrap_or(false);
        store.access_key_id = string("access_key_id");
        store.secret_access_key = secret(settings, "secret_access_key");
        store.session_token = secret(settings, "session_token");
        if let Some(n) = settings.integer("upload_concurrency") {
            store.upload_concurrency = usize::try_from(n)
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| invalid("upload_concurrency", "must be 1 to 64"))?;
        }
        if let Some(n) = settings.integer("max_attempts") {
            store.max_attempts = u32::try_from(n)
                .ok()
                .filter(|n| (1..=20).contains(n))
                .ok_or_else(|| invalid("max_attempts", "must be 1 to 20"))?;
        }
        if settings.get("connect_timeout").is_some() {
            store.connect_timeout = positive_duration(settings, "connect_timeout")?;
        }
        if settings.get("request_timeout").is_some() {
            store.request_timeout = positive_duration(settings, "request_timeout")?;
        }
        store.validate()?;
        Ok(store)
    }

    /// Checks what a schema cannot: the url, and that credentials come as a pair.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let location = StoreUrl::parse(&self.url).map_err(|e| invalid("url", &e))?;
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "access_key_id",
                    "is set without `secret_access_key`: set both or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "secret_access_key",
                    "is set without `access_key_id`: set both or neither",
                ));
            }
            _ => {}
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err(invalid(
                "session_token",
                "needs `access_key_id` and `secret_access_key`",
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "endpoint",
                &format!("`{endpoint}` must start with http:// or https://"),
            ));
        }
        if matches!(location, StoreUrl::Local { .. }) {
            let s3_only = [
                ("endpoint", self.endpoint.is_some()),
                ("region", self.region.is_some()),
                ("access_key_id", self.access_key_id.is_some()),
            ];
            if let Some((name, _)) = s3_only.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    name,
                    &format!(
                        "only applies to `s3://` urls, and `url` is the local directory `{}`",
                        self.url
                    ),
                ));
            }
        }
        if self.upload_concurrency == 0 {
            return Err(invalid("upload_concurrency", "must be at least 1"));
        }
        Ok(())
    }
}

/// The settings [`StoreSettings::from_settings`] reads, for a sink's
/// [`plexus_connector::ConfigSchema`].
pub fn fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::new("url", FieldKind::String).required().doc(
            "Where the files go: `s3://bucket/optional/prefix`, `file:///absolute/dir`, or a directory path (created if \
             missing).",
        ),
        FieldSpec::new("endpoint", FieldKind::String)
            .doc("An S3-compatible server instead of AWS, like `http://127.0.0.1:8333` (MinIO, SeaweedFS, Ceph)."),
        FieldSpec::new("region", FieldKind::String).doc(
            "The bucket's region. Default: `us-east-1` with an `endpoint`, else the standard AWS chain (`AWS_REGION`, \
             the profile).",
        ),
        FieldSpec::new("path_style", FieldKind::Bool)
            .with_default(false)
            .doc("Address buckets as `endpoint/bucket` instead of `bucket.endpoint`: most S3-compatible servers need it."),
        FieldSpec::new("access_key_id", FieldKind::String).doc(
            "The access key to sign requests with, together with `secret_access_key`. Without both: the standard AWS \
             chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the profile in ~/.aws, an instance role).",
        ),
        FieldSpec::new("secret_access_key", FieldKind::String)
            .secret()
            .doc("The secret of `access_key_id` (a secret: use `${ENV}`)."),
        FieldSpec::new("session_token", FieldKind::String)
            .secret()
            .doc("The session token of temporary credentials (a secret: use `${ENV}`)."),
        FieldSpec::new("upload_concurrency", FieldKind::integer_between(Some(1), Some(64)))
            .with_default(DEFAULT_UPLOAD_CONCURRENCY as i64)
            .doc("Parts of one file uploaded at the same time; each is held in memory until stored."),
        FieldSpec::new("max_attempts", FieldKind::integer_between(Some(1), Some(20)))
            .with_default(i64::from(DEFAULT_MAX_ATTEMPTS))
            .doc(
                "Attempts per request, the first included, when the server is busy (503 SlowDown), fails (5xx) or the \
                 connection is lost; exponential backoff with jitter in between.",
            ),
        FieldSpec::new("connect_timeout", FieldKind::Duration)
            .with_default(plexus_config::Duration::from_secs(DEFAULT_CONNECT_TIMEOUT.as_secs()))
            .doc("The longest wait for a connection to the server."),
        FieldSpec::new("request_timeout", FieldKind::Duration)
            .with_default(plexus_config::Duration::from_secs(DEFAULT_REQUEST_TIMEOUT.as_secs()))
            .doc("The longest one attempt of one request may take, a part upload included."),
    ]
}

/// A parsed `url` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `s3://bucket/prefix`; `prefix` is empty or ends with `/`.
    S3 { bucket: String, prefix: String },
    /// `file:///dir` or a plain path.
    Local { root: PathBuf },
}

impl StoreUrl {
    /// Parses `s3://bucket/prefix`, `file:///absolute/dir` or a directory path; the error
    /// says what is wrong and what is expected.
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        if url.trim().is_empty() {
            return Err("is empty: write `s3://bucket/prefix`, `file:///dir` or a directory path".into());
        }
        if url.trim() != url {
            return Err(format!("`{url}` has leading or trailing spaces"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(StoreUrl::Local {
                root: PathBuf::from(url),
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => parse_s3(url, rest),
            "file" => parse_file(url, rest),
            other => Err(format!(
                "`{url}`: the scheme `{other}` is not supported; write `s3://bucket/prefix`, `file:///dir` or a \
                 directory path"
            )),
        }
    }

    /// The url in its normal form: `s3://bucket/prefix/`, `file:///abs/dir`.
    pub fn to_url(&self) -> String {
        match self {
            StoreUrl::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
            StoreUrl::Local { root } => {
                let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
                format!("file://{}", root.display())
            }
        }
    }
}

fn parse_s3(url: &str, rest: &str) -> Result<StoreUrl, String> {
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("`{url}` names no bucket: write `s3://bucket/prefix`"));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "`{url}`: the bucket name `{bucket}` holds `{c}`; bucket names are letters, digits, `-`, `.` and `_`"
        ));
    }
    if bucket.len() < 3 || bucket.len() > 63 {
        return Err(format!(
            "`{url}`: the bucket name `{bucket}` must be 3 to 63 characters"
        ));
    }
    if let Some(c) = path.chars().find(|c| matches!(c, '?' | '#') || c.is_control()) {
        return Err(format!(
            "`{url}`: the prefix holds `{}`, which S3 urls here do not take",
            c.escape_debug()
        ));
    }
    let trimmed = path.trim_matches('/');
    if trimmed
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        && !trimmed.is_empty()
    {
        return Err(format!(
            "`{url}`: the prefix `{path}` has an empty, `.` or `..` segment"
        ));
    }
    let prefix = if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    };
    Ok(StoreUrl::S3 {
        bucket: bucket.to_owned(),
        prefix,
    })
}

fn parse_file(url: &str, rest: &str) -> Result<StoreUrl, String> {
    // file:///abs → rest = "/abs"; file://host/abs names another machine.
    if !rest.starts_with('/') {
        return Err(format!(
            "`{url}`: a file url needs an absolute path, like `file:///data/export`"
        ));
    }
    if rest.contains(['?', '#']) {
        return Err(format!("`{url}`: a file url takes no query or fragment"));
    }
    let path = percent_decode(rest).ok_or_else(|| format!("`{url}`: a `%` is not followed by two hex digits"))?;
    Ok(StoreUrl::Local {
        root: PathBuf::from(path),
    })
}

/// Decodes `%20`-style escapes; `None` for a malformed escape or a result that is not
/// UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A secret setting; a plain string is accepted too (settings built by hand).
fn secret(settings: &Settings, name: &str) -> Option<Secret> {
    settings
        .secret(name)
        .cloned()
        .or_else(|| settings.string(name).map(Secret::new))
}

fn positive_duration(settings: &Settings, name: &str) -> Result<Duration, ConnectorError> {
    settings
        .duration(name)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| invalid(name, "must be a duration above 0, like \"30s\""))
}

fn invalid(name: &str, problem: &str) -> ConnectorError {
    ConnectorError::config(format!("object store setting `{name}` {problem}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn s3(bucket: &str, prefix: &str) -> StoreUrl {
        StoreUrl::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn s3_urls_give_bucket_and_a_prefix_ending_in_a_slash() {
        assert_eq!(StoreUrl::parse("s3://bucket").unwrap(), s3("bucket", ""));
        assert_eq!(StoreUrl::parse("s3://bucket/").unwrap(), s3("bucket", ""));
        assert_eq!(StoreUrl::parse("s3://b-1.x/p").unwrap(), s3("b-1.x", "p/"));
        assert_eq!(StoreUrl::parse("s3://bucket/a/b/").unwrap(), s3("bucket", "a/b/"));
        assert_eq!(StoreUrl::parse("S3://bucket/a").unwrap(), s3("bucket", "a/"));
        assert_eq!(StoreUrl::parse("s3://bucket/a/b").unwrap().to_url(), "s3://bucket/a/b/");
    }

    #[test]
    fn file_urls_and_plain_paths_are_local_directories() {
        let local = |p: &str| StoreUrl::Local { root: PathBuf::from(p) };
        assert_eq!(StoreUrl::parse("file:///data/export").unwrap(), local("/data/export"));
        assert_eq!(StoreUrl::parse("file:///data/my%20dir").unwrap(), local("/data/my dir"));
        assert_eq!(StoreUrl::parse("/data/export").unwrap(), local("/data/export"));
        assert_eq!(StoreUrl::parse("out/files").unwrap(), local("out/files"));
        assert_eq!(StoreUrl::parse("file:///x").unwrap().to_url(), "file:///x");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let error = |url: &str| StoreUrl::parse(url).unwrap_err();
        assert!(error("").contains("is empty"), "{}", error(""));
        assert!(error("s3://").contains("names no bucket"));
        assert!(error("s3:///prefix").contains("names no bucket"));
        assert!(error("s3://my bucket/x").contains("holds ` `"));
        assert!(error("s3://ab/x").contains("3 to 63"));
        assert!(error("s3://bucket/a//b").contains("empty, `.` or `..` segment"));
        assert!(error("s3://bucket/a/../b").contains("empty, `.` or `..` segment"));
        assert!(error("s3://bucket/a?versionId=1").contains("`?`"));
        assert!(error("gs://bucket/x").contains("scheme `gs` is not supported"));
        assert!(error("http://host/x").contains("scheme `http` is not supported"));
        assert!(error("file://host/data").contains("absolute path"));
        assert!(error("file://relative").contains("absolute path"));
        assert!(error("file:///data/%zz").contains("two hex digits"));
        assert!(error(" /data").contains("spaces"));
    }

    #[test]
    fn settings_are_read_with_defaults_and_checked() {
        let mut settings = Settings::new();
        settings.insert("url", "s3://bucket/out");
        settings.insert("endpoint", "http://127.0.0.1:8333");
        settings.insert("access_key_id", "AKID");
        settings.insert(
            "secret_access_key",
            plexus_config::Value::Secret(Secret::new("hunter2")),
        );
        settings.insert("upload_concurrency", 4i64);
        let store = StoreSettings::from_settings(&settings).unwrap();
        assert_eq!(store.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(store.secret_access_key.as_ref().map(Secret::expose), Some("hunter2"));
        assert_eq!(store.upload_concurrency, 4);
        assert_eq!(store.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert!(!format!("{store:?}").contains("hunter2"), "Debug shows the secret");

        let mut settings = Settings::new();
        settings.insert("url", "s3://bucket/out");
        settings.insert("access_key_id", "AKID");
        let error = StoreSettings::from_settings(&settings).unwrap_err();
        assert!(error.message().contains("without `secret_access_key`"), "{error}");
        assert!(!error.is_retriable());

        let mut settings = Settings::new();
        settings.insert("url", "/data/out");
        settings.insert("endpoint", "http://127.0.0.1:8333");
        let error = StoreSettings::from_settings(&settings).unwrap_err();
        assert!(error.message().contains("only applies to `s3://` urls"), "{error}");

        let mut settings = Settings::new();
        settings.insert("url", "s3://bucket");
        settings.insert("endpoint", "127.0.0.1:8333");
        let error = StoreSettings::from_settings(&settings).unwrap_err();
        assert!(error.message().contains("http://"), "{error}");
    }

    #[test]
    fn every_field_is_read() {
        let names: Vec<String> = fields().iter().map(|f| f.name.to_string()).collect();
        for name in [
            "url",
            "endpoint",
            "region",
            "path_style",
            "access_key_id",
            "secret_access_key",
            "session_token",
            "upload_concurrency",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
    }
}
