//! What the daemon and a worker say to each other over a connection: length-prefixed frames
//! (`u32` length, little-endian, then postcard), each a request or its answer (one request
//! at a time on a connection, so an answer needs no id). Payload bytes of reads do not cross here: the worker
//! writes them into a shared slot ([`super::slots`]).

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::source::{Key, Listing};

/// The largest frame either side accepts: a listing of a few million entries.
const MAX_FRAME: usize = 1 << 30;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    List {
        dir: Key,
    },
    /// Read `len` bytes of `file` from `offset` into shared slot `slot`.
    Read {
        file: Key,
        offset: u64,
        len: u32,
        slot: u32,
    },
    /// The source's name for `key`, for log lines.
    Name {
        key: Key,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// The source is open (the worker's first frame, on its first connection).
    Ready,
    Listing(#[serde(with = "shared_xattrs")] Listing),
    /// The read's bytes are in its slot.
    Read,
    Name(Option<String>),
    Failed(WireError),
}

/// A listing crosses with each distinct set of entry xattrs once and every entry naming
/// its set by number: most entries of a large group share one set, and decoding a copy per
/// entry was most of the cost of a listing's crossing (five allocations per entry).
mod shared_xattrs {
    use std::collections::HashMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::source::{Entry, EntryKind, Key, Listing, Skipped, Xattr, Xattrs};

    #[derive(Serialize)]
    struct ListingOut<'a> {
        xattr_sets: Vec<&'a [Xattr]>,
        entries: Vec<EntryOut<'a>>,
        xattrs: &'a [Xattr],
        skipped: &'a [Skipped],
    }

    #[derive(Serialize)]
    struct EntryOut<'a> {
        name: &'a str,
        key: Key,
        kind: &'a EntryKind,
        xattr_set: u32,
        identity: Option<u64>,
        nlink: u32,
    }

    #[derive(Deserialize)]
    struct ListingIn {
        xattr_sets: Vec<Vec<Xattr>>,
        entries: Vec<EntryIn>,
        xattrs: Vec<Xattr>,
        skipped: Vec<Skipped>,
    }

    #[derive(Deserialize)]
    struct EntryIn {
        name: String,
        key: Key,
        kind: EntryKind,
        xattr_set: u32,
        identity: Option<u64>,
        nlink: u32,
    }

    pub fn serialize<S: Serializer>(listing: &Listing, out: S) -> Result<S::Ok, S::Error> {
        // Sets are told apart by their shared copy; all empty ones are one set.
        let mut numbers: HashMap<*const Xattr, u32> = HashMap::new();
        let mut xattr_sets: Vec<&[Xattr]> = vec![&[]];
        let mut entries = Vec::with_capacity(listing.entries.len());
        for e in &listing.entries {
            let xattr_set = match e.xattrs.is_empty() {
                true => 0,
                false => *numbers.entry(e.xattrs.as_ptr()).or_insert_with(|| {
                    xattr_sets.push(&e.xattrs);
                    (xattr_sets.len() - 1) as u32
                }),
            };
            entries.push(EntryOut {
                name: &e.name,
                key: e.key,
                kind: &e.kind,
                xattr_set,
                identity: e.identity,
                nlink: e.nlink,
            });
        }
        ListingOut {
            xattr_sets,
            entries,
            xattrs: &listing.xattrs,
            skipped: &listing.skipped,
        }
        .serialize(out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Listing, D::Error> {
        let listing = ListingIn::deserialize(input)?;
        let sets: Vec<Xattrs> = listing.xattr_sets.into_iter().map(Xattrs::from).collect();
        let entries = listing
            .entries
            .into_iter()
            .map(|e| {
                let xattrs = sets.get(e.xattr_set as usize).ok_or_else(|| {
                    D::Error::custom(format!("xattr set {} of {}", e.xattr_set, sets.len()))
                })?;
                Ok(Entry {
                    name: e.name,
                    key: e.key,
                    kind: e.kind,
                    xattrs: xattrs.clone(),
                    identity: e.identity,
                    nlink: e.nlink,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Listing {
            entries,
            xattrs: listing.xattrs,
            skipped: listing.skipped,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::source::worker::wire::Answer;

        #[test]
        fn an_entry_naming_a_set_not_sent_is_refused() {
            let kind = EntryKind::Blob { size: 1 };
            let frame_naming = |xattr_set| {
                let listing = ListingOut {
                    xattr_sets: vec![&[]],
                    entries: vec![EntryOut {
                        name: "x",
                        key: 1,
                        kind: &kind,
                        xattr_set,
                        identity: None,
                        nlink: 1,
                    }],
                    xattrs: &[],
                    skipped: &[],
                };
                // `Answer::Listing` is variant 1.
                let mut body = vec![1];
                body.extend(postcard::to_stdvec(&listing).unwrap());
                body
            };
            assert!(postcard::from_bytes::<Answer>(&frame_naming(0)).is_ok());
            // postcard keeps no message: that the same frame with set 0 decodes shows
            // which check refused it.
            assert!(postcard::from_bytes::<Answer>(&frame_naming(1)).is_err());
        }
    }
}

/// [`Error`] as it crosses the boundary: an I/O error keeps its OS error number (so a
/// resource shortage stays one), the rest keep their variant and text.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireError {
    NotFound,
    NotDir,
    IsDir,
    Io {
        path: PathBuf,
        errno: Option<i32>,
        message: String,
    },
    Format {
        path: PathBuf,
        cause: String,
    },
    Read {
        path: PathBuf,
        what: String,
        cause: String,
    },
    SourceChanged {
        path: PathBuf,
    },
    Remote {
        url: String,
        cause: String,
    },
    Unavailable {
        url: String,
        cause: String,
    },
    Other(String),
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::NotFound => WireError::NotFound,
            Error::NotDir => WireError::NotDir,
            Error::IsDir => WireError::IsDir,
            Error::Io { path, source } => WireError::Io {
                path: path.clone(),
                errno: source.raw_os_error(),
                message: source.to_string(),
            },
            Error::Format { path, cause } => WireError::Format {
                path: path.clone(),
                cause: cause.clone(),
            },
            Error::Read { path, what, cause } => WireError::Read {
                path: path.clone(),
                what: what.clone(),
                cause: cause.clone(),
            },
            Error::SourceChanged { path } => WireError::SourceChanged { path: path.clone() },
            Error::Remote { url, cause } => WireError::Remote {
                url: url.clone(),
                cause: cause.clone(),
            },
            Error::Unavailable { url, cause } => WireError::Unavailable {
                url: url.clone(),
                cause: cause.clone(),
            },
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotFound => Error::NotFound,
            WireError::NotDir => Error::NotDir,
            WireError::IsDir => Error::IsDir,
            WireError::Io {
                path,
                errno,
                message,
            } => {
                let source = match errno {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::other(message),
                };
                Error::Io { path, source }
            }
            WireError::Format { path, cause } => Error::Format { path, cause },
            WireError::Read { path, what, cause } => Error::Read { path, what, cause },
            WireError::SourceChanged { path } => Error::SourceChanged { path },
            WireError::Remote { url, cause } => Error::Remote { url, cause },
            WireError::Unavailable { url, cause } => Error::Unavailable { url, cause },
            WireError::Other(message) => Error::Internal(message),
        }
    }
}

/// Writes one frame: `message`.
pub fn send<T: Serialize>(out: &mut impl Write, message: &T) -> std::io::Result<()> {
    let body = postcard::to_stdvec(message).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    out.write_all(&frame)
}

/// Reads one frame; None at a clean end of the stream.
pub fn receive<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> std::io::Result<Option<T>> {
    let mut len = [0; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0; len];
    input.read_exact(&mut body)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::{ByteOrder, Dtype, NpyHeader};
    use crate::source::{Entry, EntryKind, SkipReason, Skipped, Xattrs};
    use std::sync::Arc;

    #[test]
    fn a_listing_crosses_unchanged() {
        let mut entry = Entry::new(
            "x.npy".into(),
            7,
            EntryKind::Array(NpyHeader::new(
                Dtype::plain('f', ByteOrder::Little, 4),
                vec![3, 4],
            )),
        );
        entry.xattrs = [("user.h5.units".into(), b"m".to_vec())].into();
        entry.identity = Some(99);
        entry.nlink = 2;
        let shared: Xattrs = [("user.arrfs.chunks".into(), b"none".to_vec())].into();
        let mut one = Entry::new("one".into(), 10, EntryKind::Blob { size: 1 });
        one.xattrs = shared.clone();
        let mut two = Entry::new("two".into(), 11, EntryKind::Blob { size: 2 });
        two.xattrs = shared;
        // The same values in another copy: crosses as a set of its own, still equal.
        let mut three = Entry::new("three".into(), 12, EntryKind::Blob { size: 3 });
        three.xattrs = [("user.arrfs.chunks".into(), b"none".to_vec())].into();
        let listing = Listing {
            entries: vec![
                entry,
                one,
                Entry::new("s".into(), 8, EntryKind::Symlink("../x.npy".into())),
                two,
                Entry::new("b".into(), 9, EntryKind::Bytes(b"{}".as_slice().into())),
                three,
            ],
            xattrs: vec![("user.a".into(), vec![1, 2])],
            skipped: vec![Skipped::new("y", SkipReason::Broken("bad".into()))],
        };
        let mut frame = Vec::new();
        send(&mut frame, &Answer::Listing(listing.clone())).unwrap();
        let answer: Answer = receive(&mut frame.as_slice()).unwrap().unwrap();
        let Answer::Listing(back) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(format!("{back:?}"), format!("{listing:?}"));
        // One copy per set after the crossing too.
        assert!(Arc::ptr_eq(
            &back.entries[1].xattrs,
            &back.entries[3].xattrs
        ));
    }

    #[test]
    fn errors_keep_their_errno() {
        let errors = [
            Error::NotFound,
            Error::io("f", std::io::Error::from_raw_os_error(libc::EMFILE)),
            Error::format("f", "bad"),
            Error::read("f", "/x", "worse"),
            Error::Unavailable {
                url: "s3://b/k".into(),
                cause: "timeout".into(),
            },
        ];
        for e in errors {
            let back = Error::from(WireError::from(&e));
            assert_eq!(back.errno(), e.errno(), "{e}");
            assert_eq!(back.passes(), e.passes(), "{e}");
            assert_eq!(back.to_string(), e.to_string());
        }
    }

    #[test]
    fn a_cut_stream_is_an_error_and_an_empty_one_the_end() {
        let mut frame = Vec::new();
        send(&mut frame, &Request::List { dir: 0 }).unwrap();
        let cut = &frame[..frame.len() - 1];
        assert!(receive::<Request>(&mut &cut[..]).is_err());
        assert!(receive::<Request>(&mut &[][..]).unwrap().is_none());
    }
}
