//! HDF5 files: groups become directories, datasets `.npy` files, attributes xattrs.
//! Metadata comes from libhdf5 (via hdf5-metno); data is read lazily: by `pread` for
//! contiguous datasets, by the direct chunk path (`direct.rs`: `pread` + decode in Rust) for
//! chunked datasets with filters we know, and by libhdf5 hyperslabs of whole elements for the
//! rest.

mod attrs;
mod btree;
mod chunks;
mod codecs;
mod dataset;
mod direct;
mod error;
mod external;
mod ffi;
mod filters;
mod heap;
mod ohdr;
mod plain;
mod records;
mod stab;
mod types;
pub mod vfd;
mod vlen;

use std::path::Path;
use std::sync::{Arc, RwLock};

use hdf5::{IndexType, IterationOrder, LinkType, LocationType};

pub use attrs::element_value;
pub use external::{EXTFILE_PREFIX_ENV, ORIGIN};

/// Bytes fetched at once from the start of a remote HDF5 file, before libhdf5 parses it.
const REMOTE_HEAD_PREFETCH: u64 = 4 << 20;

/// The format signature at the start of an HDF5 superblock.
const SIGNATURE: &[u8] = b"\x89HDF\r\n\x1a\n";

/// HDF5's superblock may follow a user block: it sits at 0, 512, 1024, 2048, ...
pub fn signature_offset(file: &SourceFile) -> Result<Option<u64>> {
    let len = file.len();
    let mut offset = 0;
    while offset + SIGNATURE.len() as u64 <= len {
        let mut buf = [0u8; 8];
        if file.read_at(offset, &mut buf).is_ok() && buf == SIGNATURE {
            return Ok(Some(offset));
        }
        offset = if offset == 0 { 512 } else { offset * 2 };
    }
    Ok(None)
}

/// Chunk-table work done in this process so far: chunk index entries enumerated plus table
/// lookups. Counted so that tests can show reading costs O(chunks), not O(chunks^2).
pub fn chunk_table_work() -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    chunks::TABLE_ENTRIES_VISITED.load(Relaxed) + chunks::TABLE_PROBES.load(Relaxed)
}
use dataset::{DatasetInfo, NotDirect, OpenDataset, ReadPath};
use direct::{DatasetRead, DirectReader};
use error::Hdf5Error;

use crate::error::{Error, Result};
use crate::io::window::ReadWindow;
use crate::io::{stable_hash, Location, SourceFile};
use crate::source::{Entry, EntryKind, Key, Listing, Skipped, Source, SourceOptions, Xattrs, ROOT};

/// How many datasets keep an open handle (and HDF5 chunk cache) between reads.
const OPEN_DATASETS: usize = 16;

/// How many datasets read lately keep their description ([`Object::Dataset`]).
const DESCRIBED_DATASETS: usize = 256;

/// What a key names. A listed dataset keeps only its path: a file of a million datasets
/// would otherwise hold a million descriptions. It is described again when it is read.
enum Object {
    Group(Box<str>),
    /// A dataset of this very file.
    Dataset(Box<str>),
    /// A contiguous dataset of this file whose bytes are numpy's: all reading it needs is
    /// where they start.
    Contiguous(u64),
    /// A dataset in another file (reached by an external link): read through libhdf5.
    ForeignDataset(Box<str>),
    /// A dataset whose description read its values ([`DatasetInfo::sized_by_reading`]):
    /// kept, as describing it again would read them all again.
    Described(Arc<DatasetInfo>),
}

pub struct Hdf5Source {
    file: hdf5::File,
    source: Arc<SourceFile>,
    /// Key -> object; a key is an index into this list, [`ROOT`] is `/`.
    objects: RwLock<Vec<Object>>,
    /// Descriptions of the datasets read lately.
    described: quick_cache::sync::Cache<Key, Arc<DatasetInfo>>,
    /// Datasets read lately, kept open (with their libhdf5 chunk caches).
    open: quick_cache::sync::Cache<Key, Arc<OpenDataset>>,
    chunk_cache_bytes: usize,
    attrs_json: bool,
    direct: DirectReader,
    /// `ARRFS_HDF5_FALLBACK=1`: every chunked dataset is read through libhdf5.
    fallback_forced: bool,
    /// Where external links and external raw data may lead.
    external: external::ExternalRoot,
    /// The file's absolute name, as libhdf5 opened it.
    absolute: std::path::PathBuf,
    /// Reads made through arrfs's driver, if libhdf5 reads the file through it.
    driver_reads: Option<Arc<vfd::DriverReads>>,
}

/// What reading a dataset needs ([`Hdf5Source::dataset_info`]).
enum Reading {
    /// Where a contiguous dataset's bytes start.
    At(u64),
    Info(Arc<DatasetInfo>),
}

/// How libhdf5 reaches an HDF5 file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hdf5Access {
    /// By its path, with libhdf5's own `sec2` driver: the fastest for a local file, and the
    /// only way to external links and external raw data files, which libhdf5 finds by path.
    Path,
    /// Through arrfs's driver over the [`SourceFile`] ([`vfd`]): for files with no local
    /// path; external links and external raw data are then left out.
    Driver,
}

impl Hdf5Source {
    /// Opens a local file by path ([`Self::open`]), a remote object through arrfs's driver.
    pub fn open_location(location: &Location, options: &SourceOptions) -> Result<Hdf5Source> {
        if let Some(path) = location.local_path() {
            return Hdf5Source::open(path, options);
        }
        let name = location.display();
        let source = Arc::new(SourceFile::open(location)?);
        // libhdf5 reads the superblock, the root group and the first B-tree nodes in many
        // small reads near the start: one large fetch first saves their round trips.
        source.prefetch(0, REMOTE_HEAD_PREFETCH);
        Hdf5Source::open_source(source, &name, Hdf5Access::Driver, options)
    }

    /// Opens the local file `path`: by path, or through arrfs's driver if
    /// `ARRFS_HDF5_VFD=1` ([`vfd::FORCE_DRIVER_ENV`]).
    pub fn open(path: &Path, options: &SourceOptions) -> Result<Hdf5Source> {
        let source = Arc::new(SourceFile::open(&Location::local(path))?);
        // By its absolute name: HDF5 resolves external links and raw data files relative to
        // it, and must never fall back on the daemon's working directory.
        let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
        let access = if vfd::driver_forced() {
            log::info!(
                "{} is set: {} is read through arrfs's HDF5 driver",
                vfd::FORCE_DRIVER_ENV,
                path.display()
            );
            Hdf5Access::Driver
        } else {
            Hdf5Access::Path
        };
        Hdf5Source::open_source(source, &absolute, access, options)
    }

    /// Opens `source`, which libhdf5 knows as `name` (an absolute path for [`Hdf5Access::Path`];
    /// any label, e.g. a URL, for [`Hdf5Access::Driver`]).
    pub fn open_source(
        source: Arc<SourceFile>,
        name: &Path,
        access: Hdf5Access,
        options: &SourceOptions,
    ) -> Result<Hdf5Source> {
        codecs::register::register_all();
        let path = source.path();
        let opened = match access {
            Hdf5Access::Path => hdf5::File::open(name).map(|file| (file, None)),
            Hdf5Access::Driver => vfd::open(source.clone(), name).map(|(f, r)| (f, Some(r))),
        };
        let (file, driver_reads) = opened.map_err(|e| Hdf5Error::from(e).opening(path))?;
        let external = external::ExternalRoot::new(
            name,
            options.root.as_deref(),
            options.external_links_any,
            access == Hdf5Access::Path,
        );
        // Opening the root group and reading its links reads the superblock, the root
        // object header and its link index: a truncated or corrupt file fails here, at
        // mount, rather than on first `ls`.
        if !options.root_listed_at_open {
            root_readable(&file, &source).map_err(|e| Hdf5Error::from(e).opening(path))?;
        }
        let per_dataset = (options.cache_size as usize / OPEN_DATASETS).clamp(1 << 20, 64 << 20);
        let fallback_forced = direct::fallback_forced();
        if fallback_forced {
            log::info!(
                "{} is set: chunked data is read through libhdf5",
                direct::FORCE_FALLBACK_ENV
            );
        }
        let direct = DirectReader::new(
            source.clone(),
            chunks::chunk_address_base(&file),
            options.cache_size as usize,
            options.cache_size as usize,
        );
        Ok(Hdf5Source {
            file,
            direct,
            source,
            objects: RwLock::new(vec![Object::Group("/".into())]),
            described: quick_cache::sync::Cache::new(DESCRIBED_DATASETS),
            open: quick_cache::sync::Cache::new(OPEN_DATASETS),
            chunk_cache_bytes: per_dataset,
            attrs_json: options.attrs_json,
            fallback_forced,
            external,
            absolute: name.to_path_buf(),
            driver_reads,
        })
    }

    fn path(&self) -> &Path {
        self.source.path()
    }

    /// The reads libhdf5 made through arrfs's driver so far (None: it reads by path).
    pub fn driver_reads(&self) -> Option<&vfd::DriverReads> {
        self.driver_reads.as_deref()
    }

    /// Registers the objects of one listing at once; returns the key of the first. A listing
    /// that fails registers none, so keys stay those of the successful listings (which a
    /// reopened container replays to get the same keys back).
    fn register_all(&self, new: Vec<Object>) -> Key {
        let mut objects = self.objects.write().unwrap();
        let first = objects.len() as Key;
        objects.extend(new);
        first
    }

    fn group_path(&self, key: Key) -> Result<String> {
        match self.objects.read().unwrap().get(key as usize) {
            Some(Object::Group(path)) => Ok(path.to_string()),
            Some(_) => Err(Error::NotDir),
            None => Err(Error::NotFound),
        }
    }

    /// What reading dataset `key` needs: where its bytes start if it is contiguous, else its
    /// description (described again unless kept or read lately).
    fn dataset_info(&self, key: Key) -> Result<Reading> {
        let (path, ours) = match self.objects.read().unwrap().get(key as usize) {
            Some(Object::Contiguous(at)) => return Ok(Reading::At(*at)),
            Some(Object::Described(info)) => return Ok(Reading::Info(info.clone())),
            Some(Object::Dataset(path)) => (path.clone(), true),
            Some(Object::ForeignDataset(path)) => (path.clone(), false),
            Some(Object::Group(_)) => return Err(Error::IsDir),
            None => return Err(Error::NotFound),
        };
        let info = self.described.get_or_insert_with(&key, || {
            // The description must be the one listed: from the file as it was then.
            self.source.check_unchanged()?;
            self.describe_again(&path, ours)
                .map(Arc::new)
                .map_err(|e| e.at(self.path(), &path))
        })?;
        Ok(Reading::Info(info))
    }

    fn describe_again(&self, path: &str, ours: bool) -> Result<DatasetInfo, Hdf5Error> {
        let ds = self.file.dataset(path)?;
        self.external.check_raw_data(&ds)?;
        self.external.check_virtual_sources(&ds)?;
        self.describe(&ds, path, ours)
    }

    /// Dataset `ds` at `path`; `ours`: it lies in this very file ([`Self::holds`]).
    fn describe(
        &self,
        ds: &hdf5::Dataset,
        path: &str,
        ours: bool,
    ) -> Result<DatasetInfo, Hdf5Error> {
        let read_at = |offset, buf: &mut [u8]| self.source.read_at(offset, buf);
        let read_at: Option<heap::ReadAt> = ours.then_some(&read_at);
        let mut info = DatasetInfo::describe(ds, path, read_at)?;
        if !ours {
            // Its offsets are in another file (reached by an external link, maybe
            // through a group): read it through HDF5.
            info.read_path = info.read_path.library();
        }
        self.choose_chunk_path(&mut info);
        Ok(info)
    }

    /// The open dataset, once the source is known unchanged: cached chunks and libhdf5's
    /// reads do not pass through `read_at`'s check.
    fn open_unchanged(&self, key: Key, info: &DatasetInfo) -> Result<Arc<OpenDataset>> {
        self.source.check_unchanged()?;
        self.open_dataset(key, info)
    }

    fn read_through_library(
        &self,
        info: &DatasetInfo,
        handle: &OpenDataset,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        info.read(handle, offset, buf)
            .map_err(|e| Hdf5Error::from(e).at(self.path(), &info.path))
    }

    fn open_dataset(&self, key: Key, info: &DatasetInfo) -> Result<Arc<OpenDataset>> {
        self.open.get_or_insert_with(&key, || {
            OpenDataset::open(&self.file, &info.path, self.chunk_cache_bytes)
                .map(Arc::new)
                .map_err(|e| Hdf5Error::from(e).at(self.path(), &info.path))
        })
    }

    /// One link of group `gpath`: an entry and the object its key is to name (its key is
    /// then the object's index among those of the listing), or the reason it is left out.
    fn entry_of(
        &self,
        group: &hdf5::Group,
        gpath: &str,
        name: &str,
        link: LinkType,
        new: &mut Vec<Object>,
    ) -> Result<Entry, Hdf5Error> {
        let path = join(gpath, name);
        if link == LinkType::Soft {
            return self.soft_link_entry(group, gpath, name);
        }
        if link == LinkType::External {
            // Before libhdf5 follows it (to tell a group from a dataset).
            self.external.may_open_files()?;
        }
        let info = group
            .loc_info_by_name(name)
            .map_err(|e| match (link, e.into()) {
                (LinkType::External, Hdf5Error::Library(why)) => {
                    Hdf5Error::Library(format!("external link cannot be opened: {why}"))
                }
                (_, e) => e,
            })?;
        if link == LinkType::External {
            let dataset = info.loc_type == LocationType::Dataset;
            self.external.check_link(group, name, dataset)?;
        }
        let identity = (link == LinkType::Hard && info.num_links > 1)
            .then(|| stable_hash(&[format!("{:?}", info.token).as_bytes()]));
        let mut entry = match info.loc_type {
            LocationType::Group => {
                new.push(Object::Group(path.into()));
                Entry::new(name.to_string(), (new.len() - 1) as Key, EntryKind::Dir)
            }
            LocationType::Dataset => {
                let ds = group.dataset(name)?;
                self.external.check_raw_data(&ds)?;
                self.external.check_virtual_sources(&ds)?;
                let ours = link != LinkType::External && self.holds(&ds);
                let info = self.describe(&ds, &path, ours)?;
                self.log_chunk_path(&info);
                let read_at = |offset, buf: &mut [u8]| self.source.read_at(offset, buf);
                let read_at: Option<heap::ReadAt> = ours.then_some(&read_at);
                let xattrs = info.xattrs(&ds, read_at);
                let header = info.npy_header();
                new.push(match (ours, &info.read_path) {
                    _ if info.sized_by_reading() => Object::Described(Arc::new(info)),
                    (true, ReadPath::Contiguous { offset }) => Object::Contiguous(*offset),
                    (true, _) => Object::Dataset(path.into()),
                    (false, _) => Object::ForeignDataset(path.into()),
                });
                let key = (new.len() - 1) as Key;
                let mut entry = Entry::new(format!("{name}.npy"), key, EntryKind::Array(header));
                entry.xattrs = xattrs.into();
                entry
            }
            _ => {
                return Err(Hdf5Error::Unsupported(
                    "named datatype (not an array)".into(),
                ))
            }
        };
        entry.identity = identity;
        entry.nlink = info.num_links.max(1) as u32;
        Ok(entry)
    }

    /// Whether object `loc` lies in this very file (not in one an external link leads to).
    fn holds(&self, loc: &hdf5::Location) -> bool {
        ffi::file_name(loc.id()).is_ok_and(|name| name == self.absolute)
    }

    /// Drops the direct chunk path where it is switched off.
    fn choose_chunk_path(&self, info: &mut DatasetInfo) {
        if self.fallback_forced && matches!(info.read_path, ReadPath::DirectChunks(_)) {
            info.read_path = ReadPath::Library {
                why: Some(NotDirect::Forced),
            };
        }
    }

    /// Logs why a chunked dataset is read through libhdf5 (once, when it is listed).
    fn log_chunk_path(&self, info: &DatasetInfo) {
        if let ReadPath::Library { why: Some(why) } = &info.read_path {
            log::debug!(
                "{}: {}: chunks read through libhdf5: {why}",
                self.path().display(),
                info.path
            );
        }
    }

    /// A soft link becomes a relative symlink to the target's virtual path; one to a dataset
    /// is named `NAME.npy`, like its target, so that `*.npy` globs find it. A link to a group
    /// and a dangling one keep their name (and a dangling one stays dangling).
    fn soft_link_entry(
        &self,
        group: &hdf5::Group,
        gpath: &str,
        name: &str,
    ) -> Result<Entry, Hdf5Error> {
        let target = ffi::soft_link_target(group.id(), name)?;
        let absolute = if target.starts_with('/') {
            target.clone()
        } else {
            join(gpath, &target)
        };
        let suffix = match group.loc_type_by_name(name) {
            Ok(LocationType::Dataset) => ".npy",
            _ => "",
        };
        let relative = relative_link(gpath, &absolute) + suffix;
        Ok(Entry::new(
            format!("{name}{suffix}"),
            0,
            EntryKind::Symlink(relative),
        ))
    }
}

impl Hdf5Source {
    /// With `--attrs-json`, `NAME.attrs.json` beside the dataset `NAME.npy` (not beside
    /// symlinks: their target has its own).
    fn dataset_sidecar(&self, group: &hdf5::Group, name: &str, entry: &Entry) -> Option<Entry> {
        if !self.attrs_json || !matches!(entry.kind, EntryKind::Array(_)) {
            return None;
        }
        let ds = group.dataset(name).ok()?;
        let read_at = |offset, buf: &mut [u8]| self.source.read_at(offset, buf);
        let read_at: Option<heap::ReadAt> = self.holds(&ds).then_some(&read_at);
        attrs::sidecar(format!("{name}.attrs.json"), &ds, true, read_at)
    }
}

impl Hdf5Source {
    /// The listing of group `dir`. `plain`: datasets whose object header we read ourselves
    /// are described from it ([`plain`]); the others, and all with `plain` false, by
    /// libhdf5.
    fn list_objects(&self, dir: Key, plain: bool) -> Result<GroupListing> {
        let gpath = self.group_path(dir)?;
        let group = self
            .file
            .group(&gpath)
            .map_err(|e| Hdf5Error::from(e).at(self.path(), &gpath))?;
        let read_at = |offset, buf: &mut [u8]| self.source.read_at(offset, buf);
        let holds = self.holds(&group);
        let group_read_at: Option<heap::ReadAt> = holds.then_some(&read_at);
        let mut listing = Listing {
            xattrs: attrs::xattrs_of(&group, group_read_at),
            ..Listing::default()
        };
        if self.attrs_json {
            listing.entries.extend(attrs::sidecar(
                ".attrs.json".into(),
                &group,
                false,
                group_read_at,
            ));
        }
        // Sidecars of datasets list their attributes through libhdf5.
        let plain_file = (plain && holds && !self.attrs_json)
            .then(|| self.plain_file(&group))
            .flatten();
        // Symbol nodes and object headers lie in different places: a window each.
        let nodes = ReadWindow::new(&read_at, self.source.len());
        let read_nodes = |offset, buf: &mut [u8]| nodes.read(offset, buf);
        let ours = plain_file.and_then(|file| self.symbol_table(&group, &read_nodes, file));
        let links_read_ourselves = ours.is_some();
        let links = match ours {
            Some(links) => links,
            None => {
                ffi::links(group.id()).map_err(|e| Hdf5Error::from(e).at(self.path(), &gpath))?
            }
        };
        let mut described = match plain_file {
            Some(file) => self.describe_all(&links, file),
            None => Vec::new(),
        }
        .into_iter();
        listing.entries.reserve(links.len());
        let mut new = Vec::with_capacity(links.len());
        // Indices of the entries whose key is an index into `new`.
        let mut owners = Vec::with_capacity(links.len());
        let mut described_plain = 0;
        for link in links {
            let objects = new.len();
            let plain_entry = described
                .next()
                .flatten()
                .map(|found| self.plain_entry(&link.name, found, &mut new));
            let entry = match plain_entry {
                Some(entry) => {
                    described_plain += 1;
                    Ok(entry)
                }
                None => self.entry_of(&group, &gpath, &link.name, link.kind, &mut new),
            };
            match entry {
                Ok(entry) => {
                    if new.len() > objects {
                        owners.push(listing.entries.len());
                    }
                    let sidecar = self.dataset_sidecar(&group, &link.name, &entry);
                    listing.entries.push(entry);
                    listing.entries.extend(sidecar);
                }
                Err(e) => {
                    let what = join(&gpath, &link.name);
                    let why = e.skip_reason(self.path(), &what)?;
                    log::debug!("{}: {what} left out: {why}", self.path().display());
                    listing.skipped.push(Skipped::new(link.name, why));
                }
            }
        }
        Ok(GroupListing {
            listing,
            new,
            owners,
            described_plain,
            links_read_ourselves,
        })
    }

    /// The plain datasets among `links`, in their order (None: libhdf5 describes that
    /// one). Reading object headers is most of the cost of listing a large group, and each
    /// stands alone: a large group's are read on every CPU at once, each thread with a
    /// window of its own.
    fn describe_all(
        &self,
        links: &[ffi::Link],
        file: plain::PlainFile,
    ) -> Vec<Option<plain::PlainDataset>> {
        let describe_part = |part: &[ffi::Link]| -> Vec<_> {
            let read_at = |offset, buf: &mut [u8]| self.source.read_at(offset, buf);
            let window = ReadWindow::new(&read_at, self.source.len());
            let read_window = |offset, buf: &mut [u8]| window.read(offset, buf);
            part.iter()
                .map(|link| plain::describe(&read_window, link.address?, file))
                .collect()
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        if threads == 1 || links.len() < DESCRIBED_IN_PARALLEL_FROM {
            return describe_part(links);
        }
        std::thread::scope(|scope| {
            let parts: Vec<_> = links
                .chunks(links.len().div_ceil(threads))
                .map(|part| scope.spawn(move || describe_part(part)))
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// The links of old-style group `group`, read from its symbol table ourselves
    /// ([`stab`]), or None: then libhdf5 lists them.
    fn symbol_table(
        &self,
        group: &hdf5::Group,
        read_at: heap::ReadAt,
        file: plain::PlainFile,
    ) -> Option<Vec<ffi::Link>> {
        let addr = ffi::header_address(group.id())?;
        let k = ffi::symbol_k(group.id())?;
        stab::links(read_at, addr, file.layout, k)
    }

    /// What describing the object headers of `group`'s file ourselves needs, if it can be
    /// had.
    fn plain_file(&self, group: &hdf5::Group) -> Option<plain::PlainFile> {
        let layout = ffi::file_layout(group.id())?;
        let eoa = ffi::relative_eoa(group.id(), layout.base)?;
        Some(plain::PlainFile { layout, eoa })
    }

    /// The entry of dataset `name`, described from its object header.
    fn plain_entry(&self, name: &str, found: plain::PlainDataset, new: &mut Vec<Object>) -> Entry {
        let info = DatasetInfo::plain(found);
        let ReadPath::Contiguous { offset } = info.read_path else {
            unreachable!("a plain dataset is contiguous");
        };
        new.push(Object::Contiguous(offset));
        let key = (new.len() - 1) as Key;
        // Not `format!`: this runs once per dataset of a listing, and concatenation is
        // a tenth of its cost.
        let mut entry = Entry::new(
            [name, ".npy"].concat(),
            key,
            EntryKind::Array(info.npy_header()),
        );
        // Every plain dataset has the same layout (contiguous, no filters): one shared copy.
        static PLAIN_LAYOUT: std::sync::OnceLock<Xattrs> = std::sync::OnceLock::new();
        let layout = PLAIN_LAYOUT.get_or_init(|| info.layout_xattrs().into());
        debug_assert_eq!(**layout, *info.layout_xattrs());
        entry.xattrs = layout.clone();
        entry
    }

    /// Lists every group both ways (links read from symbol tables and datasets described
    /// from their object header where we can, and all by libhdf5) and returns how many
    /// plain datasets and symbol tables were compared and every difference found: entries
    /// (names, headers, xattrs, links, identities), objects (offsets) and skipped children
    /// must be the same. For tests.
    pub fn compare_plain_listings(&self) -> Result<PlainComparison> {
        let mut dirs = vec![ROOT];
        let mut entered = std::collections::HashSet::new();
        let mut found = PlainComparison::default();
        while let Some(dir) = dirs.pop() {
            let gpath = self.group_path(dir)?;
            let (Ok(fast), Ok(slow)) =
                (self.list_objects(dir, true), self.list_objects(dir, false))
            else {
                continue;
            };
            found.datasets += fast.described_plain;
            found.symbol_tables += usize::from(fast.links_read_ourselves);
            let label = |l: &GroupListing| {
                let objects: Vec<String> = l.new.iter().map(Object::label).collect();
                format!("{:?}\n{objects:?}\n{:?}", l.listing, l.owners)
            };
            let (a, b) = (label(&fast), label(&slow));
            if a != b {
                found
                    .differences
                    .push(format!("{gpath}:\n  plain:   {a}\n  libhdf5: {b}"));
            }
            let GroupListing {
                listing,
                new,
                owners,
                ..
            } = slow;
            let first = self.register_all(new);
            for i in owners {
                let entry = &listing.entries[i];
                let fresh = entry.identity.is_none_or(|id| entered.insert(id));
                if matches!(entry.kind, EntryKind::Dir) && fresh {
                    dirs.push(entry.key + first);
                }
            }
        }
        Ok(found)
    }
}

/// What [`Hdf5Source::compare_plain_listings`] compared, and the differences it found.
#[derive(Debug, Default)]
pub struct PlainComparison {
    /// Datasets described from their object header.
    pub datasets: usize,
    /// Groups whose links were read from their symbol table.
    pub symbol_tables: usize,
    pub differences: Vec<String>,
}

/// One group's listing before its objects are registered.
struct GroupListing {
    listing: Listing,
    /// The objects the entries' keys are to name: a key is an index into them until they
    /// are registered.
    new: Vec<Object>,
    /// The indices of the entries whose key is such an index.
    owners: Vec<usize>,
    /// How many datasets were described from their object header.
    described_plain: usize,
    /// Whether the group's links were read from its symbol table ([`stab`]).
    links_read_ourselves: bool,
}

impl Object {
    /// What the object is, for [`Hdf5Source::compare_plain_listings`].
    fn label(&self) -> String {
        match self {
            Object::Group(path) => format!("group {path}"),
            Object::Dataset(path) => format!("dataset {path}"),
            Object::Contiguous(at) => format!("contiguous at {at}"),
            Object::ForeignDataset(path) => format!("foreign dataset {path}"),
            Object::Described(info) => format!("described {info:?}"),
        }
    }
}

impl Drop for Hdf5Source {
    fn drop(&mut self) {
        if let Some(reads) = self.driver_reads() {
            log::debug!(
                "{}: libhdf5 made {} reads ({} bytes) through arrfs's driver",
                self.path().display(),
                reads.calls(),
                reads.bytes()
            );
        }
    }
}

impl Source for Hdf5Source {
    fn list(&self, dir: Key) -> Result<Listing> {
        let GroupListing {
            mut listing,
            new,
            owners,
            ..
        } = self.list_objects(dir, true)?;
        let first = self.register_all(new);
        for i in owners {
            listing.entries[i].key += first;
        }
        Ok(listing)
    }

    /// The object's path in the file (None for a contiguous dataset, kept by address only).
    fn name_of(&self, key: Key) -> Option<String> {
        Some(match self.objects.read().unwrap().get(key as usize)? {
            Object::Group(path) | Object::Dataset(path) | Object::ForeignDataset(path) => {
                path.to_string()
            }
            Object::Described(info) => info.path.clone(),
            Object::Contiguous(_) => return None,
        })
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        let info = match self.dataset_info(file)? {
            Reading::At(at) => return self.source.read_at(at + offset, buf),
            Reading::Info(info) => info,
        };
        match &info.read_path {
            ReadPath::Contiguous { offset: at } => self.source.read_at(at + offset, buf),
            ReadPath::DirectChunks(chunks) => {
                let ds = DatasetRead {
                    key: file,
                    info: info.clone(),
                    chunks: chunks.clone(),
                    handle: self.open_unchanged(file, &info)?,
                };
                if self.direct.can_read(&ds)? {
                    self.direct.read(&ds, offset, buf)
                } else {
                    self.read_through_library(&info, &ds.handle, offset, buf)
                }
            }
            ReadPath::Library { .. } => {
                let handle = self.open_unchanged(file, &info)?;
                self.read_through_library(&info, &handle, offset, buf)
            }
        }
    }
}

/// Whether the root group of `file` (read from `source`) opens and its links can be read:
/// by [`stab`] if it is an old-style group (a group of 100,000 links costs libhdf5 some
/// 60 ms to iterate, and the mount would pay it again in the crash-check child), else by
/// libhdf5.
fn root_readable(file: &hdf5::File, source: &SourceFile) -> hdf5::Result<()> {
    let root = file.group("/")?;
    let id = root.id();
    if let (Some(addr), Some(layout), Some(k)) = (
        ffi::header_address(id),
        ffi::file_layout(id),
        ffi::symbol_k(id),
    ) {
        let read_at = |offset, buf: &mut [u8]| source.read_at(offset, buf);
        let nodes = ReadWindow::new(&read_at, source.len());
        if stab::links(&|offset, buf| nodes.read(offset, buf), addr, layout, k).is_some() {
            return Ok(());
        }
    }
    root.links(IndexType::Name, IterationOrder::Increasing)
        .map(drop)
}

/// Groups with fewer links than this are described on one thread: starting threads would
/// cost more than it saves.
const DESCRIBED_IN_PARALLEL_FROM: usize = 4096;

fn join(group: &str, name: &str) -> String {
    match group {
        "/" => format!("/{name}"),
        _ => format!("{group}/{name}"),
    }
}

/// The path from directory `from` to `to` (both absolute HDF5 paths) that stays inside the
/// mount: `..` and `.` in `to` are dropped, never followed upward past the root.
fn relative_link(from: &str, to: &str) -> String {
    let depth = from.split('/').filter(|p| !p.is_empty()).count();
    let mut parts = vec![".."; depth];
    parts.extend(
        to.split('/')
            .filter(|p| !p.is_empty() && *p != "." && *p != ".."),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_inside_the_mount() {
        assert_eq!(relative_link("/", "/a/b"), "a/b");
        assert_eq!(relative_link("/g/h", "/a"), "../../a");
        assert_eq!(relative_link("/g", "/../../etc/passwd"), "../etc/passwd");
    }
}
