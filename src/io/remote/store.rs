//! From a URL and the mount options to a connected `object_store` client: which store the
//! scheme names, where its credentials come from (the environment variables users already
//! set, then the options), and how its errors read in one line without secrets.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use super::RemoteOptions;
use crate::error::{Error, Result};

/// The store kinds a URL can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    S3,
    Gcs,
    Azure,
    Http,
}

impl Scheme {
    pub(crate) fn of(url: &str) -> Option<Scheme> {
        let (scheme, rest) = url.split_once("://")?;
        if rest.is_empty() {
            return None;
        }
        match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Some(Scheme::S3),
            "gs" => Some(Scheme::Gcs),
            "az" | "azure" | "abfs" | "abfss" => Some(Scheme::Azure),
            "http" | "https" => Some(Scheme::Http),
            _ => None,
        }
    }
}

/// A URL taken apart: what to show in messages, the store's root and the key or prefix in it.
#[derive(Clone, Debug)]
pub(crate) struct Location {
    pub scheme: Scheme,
    /// `scheme://host` (bucket, container or HTTP origin), without user info or query: the
    /// part every object URL of this store starts with.
    pub root: String,
    /// The key (or prefix) inside the store, without a leading '/'.
    pub key: String,
    /// The URL ended in '/': it names a prefix, not an object.
    pub is_prefix: bool,
}

impl Location {
    pub(crate) fn parse(text: &str) -> Result<Location> {
        let bad = |cause: &str| Error::Usage(format!("{text}: {cause}"));
        let scheme = Scheme::of(text)
            .ok_or_else(|| bad("not a URL of s3://, gs://, az://, http:// or https://"))?;
        let url = url_parse(text).map_err(|e| bad(&e))?;
        let host = url
            .host
            .ok_or_else(|| bad("no bucket or host in the URL"))?;
        let key = url.path.trim_start_matches('/').to_string();
        Ok(Location {
            scheme,
            root: format!("{}://{}", url.scheme, host),
            is_prefix: key.is_empty() || key.ends_with('/'),
            key: key.trim_end_matches('/').to_string(),
        })
    }

    /// The URL of `key` (a full key in the store), for messages.
    pub(crate) fn url_of(&self, key: &str) -> String {
        format!("{}/{}", self.root, key)
    }
}

/// The pieces of a URL that matter here. Hand-split rather than a URL crate: the store
/// builders parse the URL themselves; this only needs the scheme, the authority (without any
/// user info, which can hold a secret) and the path (without a query, which can hold a SAS
/// token), percent-decoded as the keys are.
struct UrlParts {
    scheme: String,
    host: Option<String>,
    path: String,
}

fn url_parse(text: &str) -> std::result::Result<UrlParts, String> {
    let (scheme, rest) = text.split_once("://").ok_or("no scheme")?;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or("");
    let path = percent_decode(path).ok_or("the path is not valid percent-encoded UTF-8")?;
    Ok(UrlParts {
        scheme: scheme.to_ascii_lowercase(),
        host: (!host.is_empty()).then(|| host.to_string()),
        path,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The store for `location`, configured from the environment and then `options` (options
/// win). Builds only: nothing is sent until the first request.
pub(crate) fn build(
    text: &str,
    location: &Location,
    options: &RemoteOptions,
) -> Result<Arc<dyn ObjectStore>> {
    let fail = |e: object_store::Error| Error::Remote {
        url: location.url_of(&location.key),
        cause: describe(&e),
    };
    let retry = retry_config(options);
    let client = client_config(location.scheme, options);
    let store: Arc<dyn ObjectStore> = match location.scheme {
        Scheme::S3 => {
            let mut builder = AmazonS3Builder::from_env()
                .with_url(location.root.clone())
                .with_retry(retry);
            for (key, value) in s3_config(options).into_iter().chain(client) {
                builder = builder.with_config(key.parse().map_err(fail)?, value);
            }
            for (key, value) in &options.config {
                builder = builder.with_config(key.parse().map_err(fail)?, value.clone());
            }
            Arc::new(builder.build().map_err(fail)?)
        }
        Scheme::Gcs => {
            no_endpoint_or_region(text, options)?;
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(location.root.clone())
                .with_retry(retry)
                .with_skip_signature(options.anonymous);
            for (key, value) in client.into_iter().chain(options.config.clone()) {
                builder = builder.with_config(key.parse().map_err(fail)?, value);
            }
            Arc::new(builder.build().map_err(fail)?)
        }
        Scheme::Azure => {
            if options.region.is_some() {
                return Err(Error::Usage(format!(
                    "{text}: region= applies to s3:// only"
                )));
            }
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(text.split(['?', '#']).next().unwrap_or(text))
                .with_retry(retry)
                .with_skip_signature(options.anonymous);
            if let Some(endpoint) = &options.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            for (key, value) in client.into_iter().chain(options.config.clone()) {
                builder = builder.with_config(key.parse().map_err(fail)?, value);
            }
            Arc::new(builder.build().map_err(fail)?)
        }
        Scheme::Http => {
            no_endpoint_or_region(text, options)?;
            let mut builder = HttpBuilder::new()
                .with_url(location.root.clone())
                .with_retry(retry);
            for (key, value) in client.into_iter().chain(options.config.clone()) {
                builder = builder.with_config(key.parse().map_err(fail)?, value);
            }
            Arc::new(builder.build().map_err(fail)?)
        }
    };
    Ok(store)
}

fn no_endpoint_or_region(text: &str, options: &RemoteOptions) -> Result<()> {
    if options.endpoint.is_some() || options.region.is_some() {
        return Err(Error::Usage(format!(
            "{text}: endpoint= and region= apply to s3:// (and endpoint= to az://) only"
        )));
    }
    Ok(())
}

/// Overrides of the S3 settings that `AmazonS3Builder::from_env` read (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, ...). An explicit `http://` endpoint is taken as permission for plain HTTP:
/// the user typed it.
fn s3_config(options: &RemoteOptions) -> Vec<(String, String)> {
    let mut config = Vec::new();
    if let Some(endpoint) = &options.endpoint {
        config.push(("aws_endpoint".into(), endpoint.clone()));
    }
    let endpoint = options
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT").ok());
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        config.push(("allow_http".into(), "true".into()));
    }
    if let Some(region) = &options.region {
        config.push(("aws_region".into(), region.clone()));
    }
    if options.anonymous {
        config.push(("aws_skip_signature".into(), "true".into()));
    }
    config
}

/// Timeouts and plain HTTP, for every kind of store. An `http://` URL allows plain HTTP.
fn client_config(scheme: Scheme, options: &RemoteOptions) -> Vec<(String, String)> {
    let mut config = vec![
        (
            "timeout".into(),
            format!("{}ms", options.timeout.as_millis()),
        ),
        (
            "connect_timeout".into(),
            format!("{}ms", options.connect_timeout.as_millis()),
        ),
        (
            "pool_max_idle_per_host".into(),
            options.max_requests.to_string(),
        ),
    ];
    if options.allow_http || scheme == Scheme::Http {
        config.push(("allow_http".into(), "true".into()));
    }
    config
}

/// Retries with exponential backoff for 5xx, timeouts and dropped connections (object_store
/// retries those and not 4xx), bounded in count and in time.
fn retry_config(options: &RemoteOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: options.retries,
        retry_timeout: options.retry_timeout,
    }
}

/// The full key of `key` below `base` ("" for the base itself).
pub(crate) fn join(base: &str, key: &str) -> String {
    let key = key.trim_matches('/');
    match (base.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => base.to_string(),
        (false, false) => format!("{base}/{key}"),
    }
}

/// The object_store path of a full key. `Path::from` percent-encodes what object_store does
/// not allow in a segment, and the stores decode it again, so any key round-trips.
pub(crate) fn path_of(key: &str) -> Path {
    Path::from_iter(key.split('/').filter(|part| !part.is_empty()))
}

/// One line for an object_store error: what the store said, in words a user can act on,
/// with the chain of causes flattened and anything that looks like a secret removed.
pub(crate) fn describe(error: &object_store::Error) -> String {
    let chain = redact(&flatten(error));
    let known = [
        ("NoSuchBucket", "no such bucket"),
        (
            "InvalidAccessKeyId",
            "the store does not know this access key (InvalidAccessKeyId)",
        ),
        (
            "SignatureDoesNotMatch",
            "the store refused the request signature: wrong secret key? (SignatureDoesNotMatch)",
        ),
        (
            "ExpiredToken",
            "the session token has expired (ExpiredToken)",
        ),
        ("AccessDenied", "access denied (AccessDenied)"),
        ("ContainerNotFound", "no such container"),
        ("dns error", "cannot resolve the host name (DNS)"),
        ("Connection refused", "connection refused"),
    ];
    if let Some((_, words)) = known.iter().find(|(code, _)| chain.contains(code)) {
        return words.to_string();
    }
    match error {
        object_store::Error::NotFound { .. } => "no such object".to_string(),
        object_store::Error::PermissionDenied { .. } => {
            format!("access denied (HTTP 403): check the credentials: {chain}")
        }
        object_store::Error::Unauthenticated { .. } => {
            format!("not authenticated (HTTP 401): check the credentials: {chain}")
        }
        _ => chain,
    }
}

/// The error and its sources on one line, each cause once.
fn flatten(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Variables whose values must never reach a log or a message.
const SECRET_VARIABLES: [&str; 8] = [
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_STORAGE_TOKEN",
    "AZURE_CLIENT_SECRET",
];

/// Replaces the values of the secret variables (and of signatures, should a store echo a
/// presigned URL) in `text`.
fn redact(text: &str) -> String {
    let mut text = text.to_string();
    for name in SECRET_VARIABLES {
        if let Ok(value) = std::env::var(name) {
            if value.len() >= 4 {
                text = text.replace(&value, "***");
            }
        }
    }
    for marker in ["X-Amz-Signature=", "X-Amz-Credential=", "sig="] {
        let mut from = 0;
        while let Some(at) = text[from..].find(marker) {
            let start = from + at + marker.len();
            let end = text[start..]
                .find(['&', ' ', '"', '\''])
                .map_or(text.len(), |n| start + n);
            text.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_without_user_info_or_query() {
        let at = Location::parse("s3://bucket/run7/data.h5").unwrap();
        assert_eq!((at.scheme, at.root.as_str()), (Scheme::S3, "s3://bucket"));
        assert_eq!((at.key.as_str(), at.is_prefix), ("run7/data.h5", false));
        let at = Location::parse("s3://bucket/run7/").unwrap();
        assert_eq!((at.key.as_str(), at.is_prefix), ("run7", true));
        let at = Location::parse("s3://bucket").unwrap();
        assert_eq!((at.key.as_str(), at.is_prefix), ("", true));
        let at = Location::parse("https://user:pw@example.org/a%20b/w.bin?sig=x").unwrap();
        assert_eq!(at.root, "https://example.org");
        assert_eq!(at.key, "a b/w.bin");
        assert!(Location::parse("ftp://x/y").is_err());
        assert!(Location::parse("s3://").is_err());
    }

    #[test]
    fn keys_join_below_the_base() {
        assert_eq!(join("", "a/b"), "a/b");
        assert_eq!(join("run7", ""), "run7");
        assert_eq!(join("run7", "/x.h5"), "run7/x.h5");
    }

    #[test]
    fn signatures_are_redacted() {
        let text = redact("GET https://h/k?X-Amz-Signature=abcdef&X-Amz-Credential=AK/x y");
        assert_eq!(
            text,
            "GET https://h/k?X-Amz-Signature=***&X-Amz-Credential=*** y"
        );
    }
}
