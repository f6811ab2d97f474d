//! Directory listings: pages, offsets to resume at, `.` and `..`, and the names a source's
//! entries are shown under (escaped, and made unique within their directory).

use super::*;

#[test]
fn listing_in_pages_gives_every_entry_once_in_order() {
    let fs = fs_over(MemSource::flat(1000));
    let paged = list_in_pages(&fs, ROOT_INO, 37);
    let names: Vec<_> = paged.iter().map(|(n, _)| n.to_string_lossy()).collect();
    let mut expected = vec![".".to_string(), "..".to_string()];
    expected.extend((0..1000).map(|i| format!("a{i}.npy")));
    expected.push("d".into());
    assert_eq!(names, expected);
    let whole: Vec<_> = fs.entries(ROOT_INO).unwrap();
    assert_eq!(whole.len(), 1001);
    assert!(whole
        .iter()
        .zip(&paged[2..])
        .all(|(e, (_, ino))| e.ino == *ino));
}

#[test]
fn listing_4n_entries_in_pages_costs_about_4_times_n() {
    let visits = |n| {
        let fs = fs_over(MemSource::flat(n));
        list_in_pages(&fs, ROOT_INO, 100);
        fs.readdir_visits()
    };
    let (small, large) = (visits(5_000), visits(20_000));
    assert!(small >= 5_000, "{small}");
    let ratio = large as f64 / small as f64;
    assert!(
        ratio <= 4.5,
        "{small} visits for 5,000 entries, {large} for 20,000"
    );
}

/// The whole listing of `ino` from `offset` on: (name, inode, offset handed with it).
fn listing_from(fs: &Fs, ino: Ino, offset: u64) -> Vec<(OsString, Ino, u64)> {
    let mut out = Vec::new();
    fs.readdir(ino, offset, |name, attr, next| {
        out.push((name.to_owned(), attr.ino, next));
        false
    })
    .unwrap();
    out
}

#[test]
fn resuming_at_any_offset_gives_the_rest_of_the_listing() {
    let fs = fs_over(MemSource::flat(20));
    let whole = listing_from(&fs, ROOT_INO, 0);
    assert_eq!(whole.len(), 2 + 21);
    for (i, (name, _, next)) in whole.iter().enumerate() {
        let rest = listing_from(&fs, ROOT_INO, *next);
        assert_eq!(rest, whole[i + 1..], "resuming after {name:?} at {next}");
    }
    for offset in 0..=whole.len() as u64 + 3 {
        let rest = listing_from(&fs, ROOT_INO, offset);
        let skipped = (offset as usize).min(whole.len());
        assert_eq!(rest, whole[skipped..], "resuming at {offset}");
    }
    assert!(listing_from(&fs, ROOT_INO, u64::MAX).is_empty());
}

#[test]
fn dot_is_the_directory_and_dot_dot_its_parent() {
    let fs = fs_over(MemSource::flat(2));
    let d = ino_of(&fs, "d");
    assert_ne!(d, ROOT_INO);
    let dots = |ino| {
        let listing = listing_from(&fs, ino, 0);
        let names: Vec<_> = listing[..2].iter().map(|(n, _, _)| n.clone()).collect();
        assert_eq!(names, [".", ".."]);
        (listing[0].1, listing[1].1)
    };
    assert_eq!(dots(d), (d, ROOT_INO));
    assert_eq!(
        dots(ROOT_INO),
        (ROOT_INO, ROOT_INO),
        "the root is its own parent"
    );
    let mut kinds = Vec::new();
    fs.readdir(d, 0, |_, attr, _| {
        kinds.push(attr.kind);
        false
    })
    .unwrap();
    assert_eq!(kinds, [Kind::Dir, Kind::Dir, Kind::File]);
    assert_eq!(ino_of(&fs, "d/.."), ROOT_INO);
    assert_eq!(ino_of(&fs, "d/./b.npy"), ino_of(&fs, "d/b.npy"));
}

#[test]
fn names_a_path_cannot_hold_are_escaped_and_clashes_get_a_suffix() {
    // Blobs of one byte: that byte is the key, so a read tells which entry a name reached.
    let raw = [
        "a/b", "a%2Fb", "", ".", "..", "nul\0x", "same", "same", "same", "same~2", "plain",
    ];
    let entries = raw
        .iter()
        .zip(1..)
        .map(|(name, key)| blob(name, key, 1))
        .collect();
    let fs = fs_over(MemSource::default().with_dir(ROOT, entries));
    let shown = [
        "a%2Fb", "a%2Fb~2", "%", "%2E", "%2E%2E", "nul%00x", "same", "same~2", "same~3",
        "same~2~2", "plain",
    ];
    let names: Vec<_> = fs
        .entries(ROOT_INO)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, shown);
    for (name, key) in shown.iter().zip(1u8..) {
        let ino = fs.lookup(ROOT_INO, OsStr::new(name)).unwrap().ino;
        assert_eq!(
            fs.read(ino, 0, 1).unwrap(),
            [key],
            "{name} reached the wrong entry"
        );
    }
    for raw_name in ["a/b", "nul\0x"] {
        let err = fs.lookup(ROOT_INO, OsStr::new(raw_name)).unwrap_err();
        assert_eq!(err.errno(), libc::ENOENT, "{raw_name:?}");
    }
}

#[test]
fn a_long_name_is_shortened_and_found_under_its_short_name() {
    let long = format!("{}.npy", "x".repeat(300));
    let fs = fs_over(MemSource::default().with_dir(ROOT, vec![array(&long, 5, &[3])]));
    let shown = fs.entries(ROOT_INO).unwrap().remove(0).name;
    let shown = shown.to_str().unwrap();
    assert!(shown.len() <= names::NAME_MAX, "{} bytes", shown.len());
    assert!(
        shown.starts_with("xxx") && shown.ends_with(".npy"),
        "{shown}"
    );
    assert_eq!(
        fs.lookup(ROOT_INO, OsStr::new(shown)).unwrap().size,
        128 + 6
    );
}
