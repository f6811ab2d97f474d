//! SOURCE on the command line: a local path, or the URL of an object or a prefix in an object
//! store (`s3://`, `gs://`, `az://`, `http(s)://`), connected with the remote `-o` options.
//! The rest of arrfs sees only the [`Location`] this returns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::io::remote::{self, Remote, RemoteOptions};
use crate::io::{Location, ObjectBytes, ObjectListing, ObjectStore};

/// The `-o` options of remote sources, as `name` or `name=`.
const ANONYMOUS: &str = "anonymous";
const ALLOW_HTTP: &str = "allow_http";
const ENDPOINT: &str = "endpoint=";
const REGION: &str = "region=";
const MAX_REQUESTS: &str = "max_requests=";
/// `-o timeout=SECONDS`: longest one request may take; retries stop after twice that, so a
/// read of a stalled store fails with EIO after about three times that.
const TIMEOUT: &str = "timeout=";

/// Whether `-o opt` is about reaching a remote source (taken by [`remote_options`]).
pub fn is_remote_option(opt: &str) -> bool {
    opt == ANONYMOUS
        || opt == ALLOW_HTTP
        || [ENDPOINT, REGION, MAX_REQUESTS, TIMEOUT]
            .iter()
            .any(|prefix| opt.starts_with(prefix))
}

/// Where the cache of a remote source lives, and how big it may grow.
#[derive(Clone, Debug, Default)]
pub struct CacheArgs {
    /// Bytes of blocks in memory (`--cache-size`).
    pub memory: u64,
    /// `--cache-dir`: blocks kept on disk across mounts.
    pub dir: Option<PathBuf>,
    /// `--disk-cache-size`.
    pub disk_size: Option<u64>,
}

/// Hands a mount's remote options to the worker processes it starts (one line each:
/// the `-o` options, then `cache_dir=` and `disk_cache_size=`). Secrets are not among
/// them: credentials reach the worker through the environment it inherits.
const WORKER_OPTIONS_ENV: &str = "ARRFS_WORKER_REMOTE_OPTIONS";

/// The remote options this process was given, for [`remote_env`].
static GIVEN: OnceLock<Vec<String>> = OnceLock::new();

/// The environment a worker process needs to reach the same store the same way.
pub fn remote_env() -> Vec<(&'static str, String)> {
    GIVEN
        .get()
        .map(|lines| vec![(WORKER_OPTIONS_ENV, lines.join("\n"))])
        .unwrap_or_default()
}

/// In a worker process: SOURCE as a [`Location`], connected with the daemon's options and
/// a block cache of `memory` bytes.
pub fn locate_in_worker(source: &Path, memory: u64) -> Result<Location> {
    let given = std::env::var(WORKER_OPTIONS_ENV).unwrap_or_default();
    let mut opts = Vec::new();
    let mut cache = CacheArgs {
        memory,
        ..CacheArgs::default()
    };
    for line in given.lines() {
        if let Some(dir) = line.strip_prefix("cache_dir=") {
            cache.dir = Some(PathBuf::from(dir));
        } else if let Some(size) = line.strip_prefix("disk_cache_size=") {
            cache.disk_size = size.parse().ok();
        } else {
            opts.push(line.to_string());
        }
    }
    locate(source, &remote_options(&opts, &cache)?)
}

/// The remote options from the `-o` list; other options are left to their owners.
pub fn remote_options(opts: &[String], cache: &CacheArgs) -> Result<RemoteOptions> {
    let mut lines: Vec<String> = opts
        .iter()
        .filter(|o| is_remote_option(o))
        .cloned()
        .collect();
    lines.extend(
        cache
            .dir
            .as_ref()
            .map(|d| format!("cache_dir={}", d.display())),
    );
    lines.extend(cache.disk_size.map(|n| format!("disk_cache_size={n}")));
    let _ = GIVEN.set(lines);
    let mut options = RemoteOptions {
        memory_cache: cache.memory,
        cache_dir: cache.dir.clone(),
        ..RemoteOptions::default()
    };
    if let Some(size) = cache.disk_size {
        options.disk_cache_size = size;
    }
    for opt in opts.iter().filter(|opt| is_remote_option(opt)) {
        apply(&mut options, opt)?;
    }
    Ok(options)
}

fn apply(options: &mut RemoteOptions, opt: &str) -> Result<()> {
    let value = |prefix: &str| opt[prefix.len()..].to_string();
    match opt {
        ANONYMOUS => options.anonymous = true,
        ALLOW_HTTP => options.allow_http = true,
        _ if opt.starts_with(ENDPOINT) => options.endpoint = Some(value(ENDPOINT)),
        _ if opt.starts_with(REGION) => options.region = Some(value(REGION)),
        _ if opt.starts_with(TIMEOUT) => {
            let seconds = value(TIMEOUT).parse::<u64>().ok().filter(|n| *n > 0);
            let seconds = seconds.ok_or_else(|| {
                Error::Usage(format!(
                    "-o {opt}: timeout takes a positive number of seconds"
                ))
            })?;
            options.timeout = Duration::from_secs(seconds);
            options.connect_timeout = options.connect_timeout.min(options.timeout);
            options.retry_timeout = 2 * options.timeout;
        }
        _ => {
            let n = value(MAX_REQUESTS).parse::<usize>().ok().filter(|n| *n > 0);
            options.max_requests = n.ok_or_else(|| {
                Error::Usage(format!("-o {opt}: max_requests takes a positive number"))
            })?;
        }
    }
    Ok(())
}

/// Whether SOURCE names a remote object or prefix rather than a local path.
pub fn is_remote(source: &Path) -> bool {
    source.to_str().is_some_and(remote::is_url)
}

/// The source as a [`Location`]: a local path as given; a URL connected (and checked: a
/// missing bucket, key or credential fails here, with one line naming the URL).
pub fn locate(source: &Path, options: &RemoteOptions) -> Result<Location> {
    let Some(url) = source.to_str().filter(|s| remote::is_url(s)) else {
        return Ok(Location::local(source));
    };
    let remote = Remote::connect(url, options)?;
    // The object the URL names is the key of its own name under its directory.
    let key = match remote.root_object() {
        Some(_) => url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string(),
        None => String::new(),
    };
    let store = Store {
        opened: quick_cache::sync::Cache::new(OPENED_OBJECTS),
        remote,
    };
    if let Some(root) = store.remote.root_object() {
        store.opened.insert(key.clone(), root);
    }
    Ok(Location::Remote {
        store: Arc::new(store),
        key,
    })
}

/// The time the tree shows for every entry: the local file's modification time; for a
/// remote source the time of mounting.
pub fn modified(location: &Location) -> Result<SystemTime> {
    let Some(path) = location.local_path() else {
        return Ok(SystemTime::now());
    };
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(path, e))
}

/// Objects whose HEAD a store remembers: a container is opened for detection, then by its
/// source, then again by a directory mount that closed it, and each HEAD is a round trip.
const OPENED_OBJECTS: usize = 4096;

/// A connected [`Remote`] as the object store the sources read from.
struct Store {
    remote: Arc<Remote>,
    /// Objects already opened, by key. An object keeps the version it was opened at, so a
    /// reopened container reads the bytes its tree was built from, or fails as changed.
    opened: quick_cache::sync::Cache<String, remote::RemoteObject>,
}

impl ObjectStore for Store {
    fn open(&self, key: &str) -> Result<Arc<dyn ObjectBytes>> {
        let object = self
            .opened
            .get_or_insert_with(key, || self.remote.open(key))?;
        Ok(Arc::new(object))
    }

    fn list(&self, prefix: &str) -> Result<ObjectListing> {
        let listing = self.remote.list(prefix)?;
        Ok(ObjectListing {
            dirs: listing.dirs,
            objects: listing.objects,
        })
    }

    fn url(&self, key: &str) -> String {
        self.remote.url_of(key)
    }
}

impl ObjectBytes for remote::RemoteObject {
    fn size(&self) -> u64 {
        self.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        remote::RemoteObject::read_at(self, offset, buf)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        remote::RemoteObject::prefetch(self, offset, len)
    }
}
