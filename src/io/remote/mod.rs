//! Remote sources: objects in S3 (and S3-compatible stores), GCS, Azure or on an HTTP
//! server, read by byte range through block caches (see blocks.rs), listed by prefix.
//!
//! One [`Remote`] per mount owns the async runtime of the store client (object_store is
//! async; the FUSE threads are plain threads and block on it), the caches and the counters.
//! docs/remote.md tells the design and why object_store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

mod blocks;
mod disk;
mod pacing;
mod store;
#[cfg(test)]
mod tests;

use blocks::{Blocks, ObjectState, Tuning, Version};
use store::{describe, join, path_of, Location, Scheme};

/// How to reach the store and how much to cache. Credentials come from the environment
/// (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as each store's SDK reads them), never from here,
/// except through `config`.
#[derive(Clone)]
pub struct RemoteOptions {
    /// No credentials: unsigned requests (public buckets).
    pub anonymous: bool,
    /// The store's endpoint (S3-compatible stores, Azure emulators); wins over
    /// `AWS_ENDPOINT_URL`. An `http://` endpoint allows plain HTTP.
    pub endpoint: Option<String>,
    /// S3 region; wins over `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Allow plain HTTP to the store (implied by an `http://` URL or endpoint).
    pub allow_http: bool,
    /// Requests in flight at once (GET, HEAD, LIST), for the whole mount.
    pub max_requests: usize,
    /// Bytes of blocks kept in memory.
    pub memory_cache: u64,
    /// Directory of the disk cache; none: no disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the disk cache may hold.
    pub disk_cache_size: u64,
    /// Bytes per block: the unit of fetching and caching.
    pub block_size: u64,
    /// Bytes read ahead of a sequential reader.
    pub read_ahead: u64,
    /// Serve a sequential reader from one streaming GET of the rest of the object
    /// (blocks/stream.rs) rather than from a ranged GET per read-ahead step.
    pub stream_reads: bool,
    /// Longest one request may take (connect, headers and body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries of a failed request (5xx, timeout, dropped connection), with backoff...
    pub retries: usize,
    /// ...within this time from the first attempt.
    pub retry_timeout: Duration,
    /// More settings for the store client, as object_store's config keys
    /// (`aws_access_key_id`, `aws_virtual_hosted_style_request`, ...). May hold secrets:
    /// never printed.
    pub config: Vec<(String, String)>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            anonymous: false,
            endpoint: None,
            region: None,
            allow_http: false,
            max_requests: 24,
            memory_cache: 256 << 20,
            cache_dir: None,
            disk_cache_size: 4 << 30,
            block_size: 1 << 20,
            read_ahead: 64 << 20,
            stream_reads: true,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retries: 4,
            retry_timeout: Duration::from_secs(60),
            config: Vec::new(),
        }
    }
}

impl std::fmt::Debug for RemoteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config_keys: Vec<&str> = self.config.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("RemoteOptions")
            .field("anonymous", &self.anonymous)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("max_requests", &self.max_requests)
            .field("memory_cache", &self.memory_cache)
            .field("cache_dir", &self.cache_dir)
            .field("disk_cache_size", &self.disk_cache_size)
            .field("block_size", &self.block_size)
            .field("read_ahead", &self.read_ahead)
            .field("stream_reads", &self.stream_reads)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("config_keys", &config_keys)
            .finish()
    }
}

/// True for the URLs a remote mount takes: s3:// (s3a://), gs://, az:// (azure://,
/// abfs[s]://), http://, https://.
pub fn is_url(text: &str) -> bool {
    Scheme::of(text).is_some()
}

/// Counters of what a mount asked of the store, for tests and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Ranged GETs sent (each may be retried inside the client).
    pub gets: u64,
    /// Body bytes those GETs brought.
    pub get_bytes: u64,
    /// GETs that failed after the client's retries.
    pub get_failures: u64,
    pub heads: u64,
    pub lists: u64,
    /// Blocks found in memory, in the disk cache, and written to the disk cache.
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub disk_writes: u64,
}

/// One level of a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteListing {
    /// Names of the sub-prefixes (without the trailing '/').
    pub dirs: Vec<String>,
    /// Names and sizes of the objects.
    pub objects: Vec<(String, u64)>,
}

/// One connected store for one mount. Cheap to share (`Arc`).
pub struct Remote {
    core: Arc<Core>,
    location: Location,
    /// Keys given to `open` and `list` are relative to this prefix: the URL's prefix, or the
    /// directory of the object it names.
    base: String,
    root: Option<RemoteObject>,
}

/// What objects keep alive: the runtime and the shared block machinery. Fetch tasks hold
/// only `Blocks`, so the runtime is never dropped from inside itself.
struct Core {
    runtime: tokio::runtime::Runtime,
    blocks: Arc<Blocks>,
}

impl Core {
    fn new(store: Arc<dyn ObjectStore>, options: &RemoteOptions) -> Result<Core> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("arrfs-remote")
            .enable_all()
            .build()
            .map_err(|e| Error::Mount(format!("cannot start the I/O runtime: {e}")))?;
        let disk = match &options.cache_dir {
            Some(dir) => Some(
                disk::DiskCache::open(dir, options.disk_cache_size)
                    .map_err(|e| Error::io(dir, e))?,
            ),
            None => None,
        };
        let block_size = options.block_size.max(4096);
        let tuning = Tuning {
            block_size,
            max_get_blocks: (16 << 20) / block_size + 1,
            read_ahead: options.read_ahead,
            stream_reads: options.stream_reads,
            // A request may take `timeout` per attempt, and retries go on for
            // `retry_timeout` (plus one backoff): past that nothing useful is coming.
            fetch_limit: options.retry_timeout
                + options.timeout
                + options.timeout.min(Duration::from_secs(5)),
            stall_limit: options.timeout,
        };
        let blocks = Blocks::new(
            store,
            tuning,
            options.max_requests,
            options.memory_cache,
            disk,
        );
        Ok(Core {
            runtime,
            blocks: Arc::new(blocks),
        })
    }

    /// Runs one store request on the runtime, under the request bound, from a plain thread.
    fn request<T>(
        &self,
        counter: &std::sync::atomic::AtomicU64,
        call: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limit = self.blocks.tuning.fetch_limit;
        self.runtime.block_on(async {
            let _permit = self.blocks.requests.acquire().await;
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(object_store::Error::Generic {
                    store: "remote",
                    source: format!("no answer from the store within {limit:?}").into(),
                }),
            }
        })
    }
}

impl Remote {
    /// Parses the URL, builds the client (credentials from the environment, overrides from
    /// `options`) and checks it at once: HEAD of the object, or one listing of a prefix
    /// (a URL ending in '/', or a key that is no object but a prefix). Any failure is one
    /// line naming the URL and the cause.
    pub fn connect(url: &str, options: &RemoteOptions) -> Result<Arc<Remote>> {
        let location = Location::parse(url)?;
        let store = store::build(url, &location, options)?;
        Remote::with_store(store, location, options)
    }

    /// `connect` over a given store (the unit tests use an in-memory one).
    fn with_store(
        store: Arc<dyn ObjectStore>,
        location: Location,
        options: &RemoteOptions,
    ) -> Result<Arc<Remote>> {
        let core = Arc::new(Core::new(store, options)?);
        let mut remote = Remote {
            core,
            base: location.key.clone(),
            location,
            root: None,
        };
        if remote.location.is_prefix {
            remote
                .check_prefix(&remote.location.key)
                .map_err(|e| remote.renamed(e))?;
            return Ok(Arc::new(remote));
        }
        let key = remote.location.key.clone();
        match remote.head_meta(&key) {
            Ok(meta) => {
                remote.base = key.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
                remote.root = Some(remote.object(&key, &meta));
            }
            // Not an object: a prefix with something in it will do (not over HTTP, which
            // has no listing).
            Err(object_store::Error::NotFound { .. }) if remote.location.scheme != Scheme::Http => {
                let listing = remote.list_full(&key).map_err(|e| remote.renamed(e))?;
                if listing.is_empty() {
                    return Err(
                        remote.failure("no such object (nor a prefix with objects under it)")
                    );
                }
            }
            // A HEAD answer has no body to say why it was refused; a listing's has (wrong
            // key, wrong secret, expired token).
            Err(
                e @ (object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }),
            ) => {
                let why = match remote.list_full(&key) {
                    Err(Error::Remote { cause, .. }) => cause,
                    _ => describe(&e),
                };
                return Err(remote.failure(&why));
            }
            Err(e) => return Err(remote.failure(&describe(&e))),
        }
        Ok(Arc::new(remote))
    }

    /// An error about the URL itself.
    fn failure(&self, cause: &str) -> Error {
        Error::Remote {
            url: self.url(),
            cause: cause.to_string(),
        }
    }

    /// The same error, said of the URL.
    fn renamed(&self, error: Error) -> Error {
        match error {
            Error::Remote { cause, .. } => self.failure(&cause),
            other => other,
        }
    }

    /// The object the URL names, if it names one (None for a prefix).
    pub fn root_object(&self) -> Option<RemoteObject> {
        self.root.clone()
    }

    /// The URL as shown in messages: `scheme://bucket/key` without user info or query.
    pub fn url(&self) -> String {
        let url = self.location.url_of(&self.location.key);
        if self.location.is_prefix && !url.ends_with('/') {
            url + "/"
        } else {
            url
        }
    }

    /// HEAD of `key` (relative to the URL's prefix, or to the directory of the object it
    /// names): its size and version.
    /// The URL of `key` (relative to the source's prefix), for messages.
    pub fn url_of(&self, key: &str) -> String {
        self.location.url_of(&join(&self.base, key))
    }

    pub fn open(&self, key: &str) -> Result<RemoteObject> {
        self.head(&join(&self.base, key))
    }

    /// One level of `prefix` (relative, "" for the URL's own prefix): sub-prefixes and
    /// objects, all pages.
    pub fn list(&self, prefix: &str) -> Result<RemoteListing> {
        self.list_full(&join(&self.base, prefix))
    }

    /// What the mount asked of the store so far.
    pub fn stats(&self) -> RemoteStats {
        self.core.blocks.counters.snapshot()
    }

    fn head(&self, key: &str) -> Result<RemoteObject> {
        let meta = self.head_meta(key).map_err(|e| Error::Remote {
            url: self.location.url_of(key),
            cause: describe(&e),
        })?;
        Ok(self.object(key, &meta))
    }

    fn head_meta(&self, key: &str) -> object_store::Result<object_store::ObjectMeta> {
        let blocks = &self.core.blocks;
        self.core
            .request(&blocks.counters.heads, blocks.store.head(&path_of(key)))
    }

    fn object(&self, key: &str, meta: &object_store::ObjectMeta) -> RemoteObject {
        let state = ObjectState::new(self.location.url_of(key), path_of(key), Version::of(meta));
        RemoteObject {
            core: self.core.clone(),
            state: Arc::new(state),
        }
    }

    /// One listing of `key`'s prefix: fails if the bucket, the credentials or the network do.
    fn check_prefix(&self, key: &str) -> Result<()> {
        self.list_full(key).map(|_| ())
    }

    fn list_full(&self, key: &str) -> Result<RemoteListing> {
        let blocks = &self.core.blocks;
        let prefix = (!key.is_empty()).then(|| path_of(key));
        let listed = self
            .core
            .request(
                &blocks.counters.lists,
                blocks.store.list_with_delimiter(prefix.as_ref()),
            )
            .map_err(|e| Error::Remote {
                url: format!("{}/", self.location.url_of(key)),
                cause: describe(&e),
            })?;
        let name = |path: &Path| path.filename().unwrap_or_default().to_string();
        Ok(RemoteListing {
            dirs: listed.common_prefixes.iter().map(name).collect(),
            objects: listed
                .objects
                .iter()
                .map(|meta| (name(&meta.location), meta.size))
                .collect(),
        })
    }
}

impl RemoteListing {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.objects.is_empty()
    }
}

/// One object of a store, as opened (its size and version fixed then). Cheap to clone.
#[derive(Clone)]
pub struct RemoteObject {
    core: Arc<Core>,
    state: Arc<ObjectState>,
}

impl std::fmt::Debug for RemoteObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteObject")
            .field("url", &self.state.url)
            .field("len", &self.state.version.size)
            .finish()
    }
}

impl RemoteObject {
    pub fn len(&self) -> u64 {
        self.state.version.size
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The object's URL, for messages (no secrets).
    pub fn url(&self) -> &str {
        &self.state.url
    }

    /// Exactly `buf.len()` bytes at `offset`, through the block caches. If the object
    /// changed on the store since it was opened: [`Error::SourceChanged`], for good. If the
    /// store cannot be reached after the retries: [`Error::Unavailable`] for this read; a later
    /// read tries again.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let runtime = self.core.runtime.handle();
        self.core.blocks.read(runtime, &self.state, offset, buf)
    }

    /// Starts fetching `[offset, offset + len)` in the background and returns at once: for
    /// a reader that knows what it will read next (the head of an HDF5 file before its
    /// metadata is parsed, the chunks of a slice before they are decoded one by one).
    /// Later `read_at`s of that range wait for these fetches instead of sending their own.
    pub fn prefetch(&self, offset: u64, len: u64) {
        let runtime = self.core.runtime.handle();
        self.core.blocks.prefetch(runtime, &self.state, offset, len)
    }
}
