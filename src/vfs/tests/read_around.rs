//! Which small files are pushed into the page cache after a read (`read_around.rs`).

use super::*;

/// Root: `f000.npy`..`f199.npy` (u16 arrays of 10 elements, 148 bytes each) with a big
/// array at position 5 and a directory at position 7.
fn many_small() -> Fs {
    let root: Vec<_> = (0..200u64)
        .map(|i| match i {
            5 => array("f005.npy", 1000 + i, &[1 << 20]),
            7 => dir("f007", 1),
            _ => array(&format!("f{i:03}.npy"), 1000 + i, &[10]),
        })
        .collect();
    fs_over(
        MemSource::default()
            .with_dir(ROOT, root)
            .with_dir(1, vec![]),
    )
}

fn names(fs: &Fs, pushed: &[(Ino, u64)]) -> Vec<String> {
    let by_ino: HashMap<Ino, String> = walk(fs).into_iter().map(|(n, i)| (i, n)).collect();
    pushed.iter().map(|(ino, _)| by_ino[ino].clone()).collect()
}

fn expected(range: std::ops::Range<u64>) -> Vec<String> {
    range
        .filter(|i| *i != 5 && *i != 7)
        .map(|i| format!("f{i:03}.npy"))
        .collect()
}

#[test]
fn a_read_pushes_the_small_files_that_follow_passing_over_big_ones_and_directories() {
    let fs = many_small();
    let pushed = fs.read_around(ino_of(&fs, "f000.npy"));
    assert_eq!(names(&fs, &pushed), expected(1..67));
    assert!(pushed.iter().all(|(_, size)| *size == 148));
}

#[test]
fn a_reader_going_on_gets_the_next_window_and_nothing_twice() {
    let fs = many_small();
    fs.read_around(ino_of(&fs, "f000.npy"));
    // Pushed files reach the daemon no more: the next read is the first one not pushed.
    let next = fs.read_around(ino_of(&fs, "f067.npy"));
    assert_eq!(names(&fs, &next), expected(68..132));
    // A pushed file the kernel dropped and reads again: nothing pushed a second time.
    assert!(fs.read_around(ino_of(&fs, "f003.npy")).is_empty());
    let last = fs.read_around(ino_of(&fs, "f132.npy"));
    assert_eq!(names(&fs, &last), expected(133..197));
    assert_eq!(
        names(&fs, &fs.read_around(ino_of(&fs, "f197.npy"))),
        expected(198..200)
    );
    assert!(fs.read_around(ino_of(&fs, "f199.npy")).is_empty());
}

#[test]
fn a_reader_far_from_where_reading_goes_on_gets_nothing_pushed() {
    let fs = many_small();
    assert!(fs.read_around(ino_of(&fs, "f190.npy")).is_empty());
    // Nor does a big file's read push anything.
    assert!(fs.read_around(ino_of(&fs, "f005.npy")).is_empty());
}

#[test]
fn a_window_holds_one_mib_at_most() {
    // 40 KiB files: 25 fit in a MiB.
    let root: Vec<_> = (0..100u64)
        .map(|i| array(&format!("g{i:03}.npy"), 10 + i, &[20 << 10]))
        .collect();
    let fs = fs_over(MemSource::default().with_dir(ROOT, root));
    let pushed = fs.read_around(ino_of(&fs, "g000.npy"));
    assert_eq!(pushed.len(), 25);
    assert!(pushed.iter().map(|(_, size)| size).sum::<u64>() <= 1 << 20);
}
