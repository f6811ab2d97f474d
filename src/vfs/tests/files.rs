//! What files hold and say about themselves: `.npy` header joined to the source's payload,
//! sidecars served by the tree, blobs served by the source, symbolic links, extended
//! attributes, and the errors of each.

use super::*;

/// Reads every (offset, size) pair up to a little past the end of `ino` and compares with
/// `whole`.
fn assert_reads_match(fs: &Fs, ino: Ino, whole: &[u8]) {
    assert_eq!(fs.getattr(ino).unwrap().size, whole.len() as u64);
    for offset in 0..=whole.len() + 2 {
        for size in 0..=whole.len() + 2 {
            let got = fs.read(ino, offset as u64, size as u32).unwrap();
            let from = offset.min(whole.len());
            let to = (offset + size).min(whole.len());
            assert_eq!(got, &whole[from..to], "read of {size} at {offset}");
        }
    }
}

#[test]
fn header_and_payload_join_at_every_boundary() {
    let fs = fs_over(MemSource::flat(3));
    let ino = ino_of(&fs, "a2.npy");
    let header = NpyHeader::new(u16_le(), vec![2]).encode();
    let mut whole = header.clone();
    whole.extend((0..4).map(|i| payload_byte(102, i)));
    assert_reads_match(&fs, ino, &whole);
}

#[test]
fn a_sidecar_is_served_by_the_tree_itself_at_every_offset() {
    let content = b"{\"units\": \"m\", \"scale\": 0.5}\n";
    // The source fails any read of key 7: every byte must come from the entry itself.
    let source = MemSource::default()
        .with_dir(ROOT, vec![bytes("x.attrs.json", 7, content)])
        .with_broken(7);
    let fs = fs_over(source);
    let ino = ino_of(&fs, "x.attrs.json");
    assert_eq!(fs.getattr(ino).unwrap().kind, Kind::File);
    assert_reads_match(&fs, ino, content);
}

#[test]
fn a_blob_is_served_by_the_source_at_every_offset() {
    let fs = fs_over(MemSource::default().with_dir(ROOT, vec![blob("m.npy", 9, 40)]));
    let whole: Vec<u8> = (0..40).map(|i| payload_byte(9, i)).collect();
    assert_reads_match(&fs, ino_of(&fs, "m.npy"), &whole);
}

#[test]
fn a_symlink_reads_as_its_target_and_not_as_a_file() {
    let source = MemSource::default()
        .with_dir(ROOT, vec![symlink("s", "d/b.npy"), dir("d", 1)])
        .with_dir(1, vec![array("b.npy", 2, &[1])]);
    let fs = fs_over(source);
    let link = fs.getattr(ino_of(&fs, "s")).unwrap();
    assert_eq!((link.kind, link.size), (Kind::Symlink, 7));
    assert_eq!(fs.readlink(link.ino).unwrap(), b"d/b.npy");
    assert!(
        fs.read(link.ino, 0, 10).is_err(),
        "a symlink read as a file"
    );
    let file = ino_of(&fs, "d/b.npy");
    let d = ino_of(&fs, "d");
    for not_link in [file, d, ROOT_INO] {
        let err = fs.readlink(not_link).unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL, "readlink of {not_link}");
    }
}

/// The errno of a call that must fail.
fn errno<T>(result: Result<T>) -> i32 {
    match result {
        Ok(_) => panic!("succeeded"),
        Err(e) => e.errno(),
    }
}

#[test]
fn directories_and_files_refuse_what_they_cannot_do() {
    let fs = fs_over(MemSource::flat(1));
    let (d, file) = (ino_of(&fs, "d"), ino_of(&fs, "a0.npy"));
    assert_eq!(errno(fs.read(d, 0, 10)), libc::EISDIR);
    assert_eq!(errno(fs.open(d, false)), libc::EISDIR);
    assert_eq!(errno(fs.open(file, true)), libc::EROFS);
    assert!(fs.open(file, false).is_ok());
    assert_eq!(errno(fs.lookup(file, OsStr::new("x"))), libc::ENOTDIR);
    assert_eq!(errno(fs.readdir(file, 0, |_, _, _| false)), libc::ENOTDIR);
    assert_eq!(errno(fs.lookup(d, OsStr::new("missing"))), libc::ENOENT);
    assert_eq!(errno(fs.getattr(999_999)), libc::ENOENT);
}

#[test]
fn a_failed_source_read_fails_the_read_with_eio() {
    let source = MemSource::default()
        .with_dir(
            ROOT,
            vec![array("bad.npy", 3, &[100]), blob("bad.bin", 4, 10)],
        )
        .with_broken(3)
        .with_broken(4);
    let fs = fs_over(source);
    let bad = ino_of(&fs, "bad.npy");
    // The header is the tree's own: it reads even though the payload cannot.
    let header = NpyHeader::new(u16_le(), vec![100]).encode();
    assert_eq!(fs.read(bad, 0, 10).unwrap(), header[..10]);
    for (ino, offset) in [
        (bad, 0),
        (bad, header.len() as u64 + 5),
        (ino_of(&fs, "bad.bin"), 0),
    ] {
        let err = fs.read(ino, offset, 200).unwrap_err();
        assert!(
            matches!(&err, Error::Read { cause, .. } if cause == "corrupt chunk"),
            "{err:?}"
        );
        assert_eq!(err.errno(), libc::EIO);
    }
}

#[test]
fn a_failed_listing_fails_with_eio_and_is_tried_again() {
    let source = Arc::new(
        MemSource::default()
            .with_dir(ROOT, vec![dir("d", 1)])
            .with_dir(1, vec![array("x.npy", 2, &[1])])
            .with_broken(1),
    );
    let fs = Fs::new(source.clone(), SystemTime::UNIX_EPOCH);
    let d = ino_of(&fs, "d");
    assert_eq!(errno(fs.lookup(d, OsStr::new("x.npy"))), libc::EIO);
    assert_eq!(errno(fs.entries(d)), libc::EIO);
    // Root once, then `d` at each attempt: a failure is not remembered as an empty directory.
    assert_eq!(source.lists.load(Ordering::Relaxed), 3);
}

/// `listxattr`'s NUL-separated names, split.
fn xattr_names(fs: &Fs, ino: Ino) -> Vec<String> {
    let list = fs.listxattr(ino).unwrap();
    assert!(list.is_empty() || list.ends_with(&[0]), "{list:?}");
    list.split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8(name.to_vec()).unwrap())
        .collect()
}

fn xattr(fs: &Fs, ino: Ino, name: &str) -> Result<Vec<u8>> {
    fs.getxattr(ino, OsStr::new(name))
}

#[test]
fn arrays_get_dtype_and_shape_xattrs_before_the_sources_own() {
    let entries = vec![
        with_xattr(array("x.npy", 5, &[2, 3]), "user.h5.units", b"m"),
        array("scalar.npy", 6, &[]),
        with_xattr(blob("m.npy", 7, 4), "user.zip.comment", b"hi"),
        blob("plain.bin", 8, 4),
    ];
    let fs = fs_over(MemSource::default().with_dir(ROOT, entries));
    let x = ino_of(&fs, "x.npy");
    assert_eq!(
        xattr_names(&fs, x),
        ["user.arrfs.dtype", "user.arrfs.shape", "user.h5.units"]
    );
    assert_eq!(
        xattr(&fs, x, "user.arrfs.dtype").unwrap(),
        b"'<u2'",
        "numpy's descr, as the header writes it"
    );
    assert_eq!(xattr(&fs, x, "user.arrfs.shape").unwrap(), b"[2, 3]");
    assert_eq!(xattr(&fs, x, "user.h5.units").unwrap(), b"m");
    let scalar = ino_of(&fs, "scalar.npy");
    assert_eq!(xattr(&fs, scalar, "user.arrfs.shape").unwrap(), b"[]");
    // Blobs carry only what the source gave them.
    assert_eq!(xattr_names(&fs, ino_of(&fs, "m.npy")), ["user.zip.comment"]);
    assert!(xattr_names(&fs, ino_of(&fs, "plain.bin")).is_empty());
    let err = xattr(&fs, x, "user.h5.missing").unwrap_err();
    assert!(matches!(err, Error::NoXattr), "{err:?}");
    assert_eq!(err.errno(), libc::ENODATA);
    // Only `user.` attributes exist: `ls -l` stops asking for labels and ACLs on EOPNOTSUPP.
    for name in ["security.selinux", "system.posix_acl_access", "trusted.x"] {
        let err = xattr(&fs, x, name).unwrap_err();
        assert_eq!(err.errno(), libc::EOPNOTSUPP, "{name}: {err:?}");
    }
}

#[test]
fn a_directory_shows_its_own_xattrs_and_what_was_skipped() {
    let sub = Listing {
        entries: vec![array("kept.npy", 11, &[1])],
        xattrs: vec![("user.h5.title".into(), b"run 4".to_vec())],
        skipped: vec![
            Skipped::new("ref", SkipReason::Unsupported("object reference".into())),
            Skipped::new("odd", SkipReason::Broken("unsupported type".into())),
        ],
    };
    let source = MemSource::default()
        .with_dir(ROOT, vec![dir("g", 1)])
        .with_listing(1, sub);
    let fs = fs_over(source);
    let g = ino_of(&fs, "g");
    assert_eq!(xattr_names(&fs, g), ["user.h5.title", "user.arrfs.skipped"]);
    assert_eq!(xattr(&fs, g, "user.h5.title").unwrap(), b"run 4");
    assert_eq!(
        xattr(&fs, g, "user.arrfs.skipped").unwrap(),
        b"ref: object reference\nodd: unsupported type\n"
    );
    let names: Vec<_> = fs.entries(g).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["kept.npy"], "a skipped entry is listed");
    // Nothing skipped, nothing to say.
    assert!(xattr_names(&fs, ROOT_INO).is_empty());
    let err = xattr(&fs, ROOT_INO, "user.arrfs.skipped").unwrap_err();
    assert_eq!(err.errno(), libc::ENODATA);
}
