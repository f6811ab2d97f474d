//! Inode numbers: the same for a path whatever order the tree is explored in and on every
//! mount of an equal source, distinct for distinct paths, and shared by hard links.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

#[test]
fn inode_numbers_do_not_depend_on_the_order_of_exploration() {
    let first = fs_over(MemSource::flat(10));
    let second = fs_over(MemSource::flat(10));
    let d1 = first.lookup(ROOT_INO, OsStr::new("d")).unwrap().ino;
    let b1 = first.lookup(d1, OsStr::new("b.npy")).unwrap().ino;
    // The second tree meets `d` through a readdir, not a lookup, and lists it page by page.
    let d2 = list_in_pages(&second, ROOT_INO, 3)
        .into_iter()
        .find(|(n, _)| n == "d")
        .unwrap()
        .1;
    let b2 = list_in_pages(&second, d2, 1)[2].1;
    assert_eq!((d1, b1), (d2, b2));
    assert_eq!(first.resolve("d/b.npy").unwrap(), b1);
}

/// Three levels, names that clash and need escaping, every kind of entry.
fn nested() -> MemSource {
    MemSource::default()
        .with_dir(
            ROOT,
            vec![
                dir("g", 1),
                dir("g", 2),
                array("x.npy", 10, &[4]),
                symlink("s", "g/y.npy"),
            ],
        )
        .with_dir(1, vec![array("y.npy", 11, &[2, 3]), dir("h/i", 3)])
        .with_dir(2, vec![array("y.npy", 12, &[1])])
        .with_dir(
            3,
            vec![blob("z.bin", 13, 9), bytes("z.attrs.json", 14, b"{}")],
        )
}

#[test]
fn a_remount_of_an_equal_source_gives_every_path_its_inode_again() {
    let first = walk(&fs_over(nested()));
    let paths: Vec<_> = first.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "g",
            "g/h%2Fi",
            "g/h%2Fi/z.attrs.json",
            "g/h%2Fi/z.bin",
            "g/y.npy",
            "g~2",
            "g~2/y.npy",
            "s",
            "x.npy"
        ]
    );
    let distinct: HashSet<_> = first.values().collect();
    assert_eq!(
        distinct.len(),
        first.len(),
        "two paths share an inode: {first:?}"
    );
    assert!(!distinct.contains(&ROOT_INO));
    // The remount resolves each path by lookups alone, `g` before `g~2` (the walk, a stack,
    // listed `g~2` first).
    let again = fs_over(nested());
    for (path, ino) in &first {
        assert_eq!(ino_of(&again, path), *ino, "{path}");
    }
}

#[test]
fn hard_links_share_one_inode_and_report_their_links() {
    let source = || {
        MemSource::default()
            .with_dir(
                ROOT,
                vec![
                    linked(array("x.npy", 10, &[4]), 77, 2),
                    array("plain.npy", 11, &[4]),
                    dir("d", 1),
                ],
            )
            .with_dir(
                1,
                vec![
                    linked(array("also-x.npy", 10, &[4]), 77, 2),
                    array("plain.npy", 11, &[4]),
                ],
            )
    };
    let fs = fs_over(source());
    let x = fs.getattr(ino_of(&fs, "x.npy")).unwrap();
    let also_x = fs.getattr(ino_of(&fs, "d/also-x.npy")).unwrap();
    assert_eq!(x.ino, also_x.ino);
    assert_eq!((x.nlink, also_x.nlink), (2, 2));
    // Entries without an identity are separate files, even with the same name and key.
    let plain = fs.getattr(ino_of(&fs, "plain.npy")).unwrap();
    assert_ne!(plain.ino, ino_of(&fs, "d/plain.npy"));
    assert_eq!(plain.nlink, 1);
    // A second mount that reaches the object through `d` first gives it the same number.
    let other = fs_over(source());
    assert_eq!(ino_of(&other, "d/also-x.npy"), x.ino);
    assert_eq!(ino_of(&other, "x.npy"), x.ino);
}

#[test]
fn a_directory_reachable_twice_is_one_inode_listed_once() {
    let source = Arc::new(
        MemSource::default()
            .with_dir(ROOT, vec![linked(dir("g", 1), 9, 2), dir("d", 2)])
            .with_dir(1, vec![array("y.npy", 11, &[3])])
            .with_dir(2, vec![linked(dir("g-again", 1), 9, 2)]),
    );
    let fs = Fs::new(source.clone(), SystemTime::UNIX_EPOCH);
    let g = ino_of(&fs, "g");
    assert_eq!(ino_of(&fs, "d/g-again"), g);
    assert_eq!(ino_of(&fs, "d/g-again/y.npy"), ino_of(&fs, "g/y.npy"));
    assert_eq!(fs.getattr(g).unwrap().kind, Kind::Dir);
    // Root, `g` and `d`: `g`'s listing is shared by both paths.
    assert_eq!(source.lists.load(Ordering::Relaxed), 3);
}

/// A small tree for the property test: names drawn from a few that clash or need escaping.
#[derive(Clone, Debug)]
enum TreeNode {
    File(&'static str),
    Dir(&'static str, Vec<TreeNode>),
}

const TREE_NAMES: [&str; 8] = ["a", "a", "b.npy", "", ".", "..", "x/y", "a~2"];
/// What a lookup may ask for: the names above as shown, and some that no entry has.
const LOOKUP_NAMES: [&str; 11] = [
    "a", "a~2", "a~3", "a~2~2", "b.npy", "%", "%2E", "%2E%2E", "x%2Fy", "x/y", "none",
];

fn tree() -> impl Strategy<Value = Vec<TreeNode>> {
    let name = prop::sample::select(&TREE_NAMES[..]);
    let file = name.clone().prop_map(TreeNode::File);
    let node = file.prop_recursive(3, 40, 5, move |inner| {
        (name.clone(), prop::collection::vec(inner, 0..5))
            .prop_map(|(name, children)| TreeNode::Dir(name, children))
    });
    prop::collection::vec(node, 0..6)
}

/// The source of `nodes` as the root's children; keys are numbered depth first.
fn source_of(nodes: &[TreeNode]) -> MemSource {
    fn add(source: MemSource, key: Key, nodes: &[TreeNode], next: &mut Key) -> MemSource {
        let mut entries = Vec::new();
        let mut subdirs = Vec::new();
        for node in nodes {
            *next += 1;
            match node {
                TreeNode::File(name) => entries.push(array(name, *next, &[2])),
                TreeNode::Dir(name, children) => {
                    entries.push(dir(name, *next));
                    subdirs.push((*next, children));
                }
            }
        }
        let mut source = source.with_dir(key, entries);
        for (key, children) in subdirs {
            source = add(source, key, children, next);
        }
        source
    }
    add(MemSource::default(), ROOT, nodes, &mut 0)
}

/// One step of exploring a tree: a readdir of a known directory from `offset`, taking up to
/// `page` entries, or a lookup of one of [`LOOKUP_NAMES`] in it.
#[derive(Clone, Debug)]
enum Step {
    Readdir {
        dir: Index,
        offset: u64,
        page: usize,
    },
    Lookup {
        dir: Index,
        name: Index,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<Index>(), 0u64..8, 1usize..4).prop_map(|(dir, offset, page)| Step::Readdir {
            dir,
            offset,
            page
        }),
        (any::<Index>(), any::<Index>()).prop_map(|(dir, name)| Step::Lookup { dir, name }),
    ]
}

/// Runs `steps` on `fs`; returns every path met (components) with its inode.
fn explore(fs: &Fs, steps: &[Step]) -> Vec<(Vec<OsString>, Ino)> {
    let mut dirs = vec![(Vec::new(), ROOT_INO)];
    let mut met = Vec::new();
    for step in steps {
        let mut found = Vec::new();
        match step {
            Step::Readdir { dir, offset, page } => {
                let (path, ino) = &dirs[dir.index(dirs.len())];
                fs.readdir(*ino, *offset, |name, attr, _| {
                    if name != "." && name != ".." {
                        found.push((path.clone(), name.to_owned(), attr.ino, attr.kind));
                    }
                    found.len() == *page
                })
                .unwrap();
            }
            Step::Lookup { dir, name } => {
                let (path, ino) = &dirs[dir.index(dirs.len())];
                let name = OsString::from(LOOKUP_NAMES[name.index(LOOKUP_NAMES.len())]);
                if let Ok(attr) = fs.lookup(*ino, &name) {
                    found.push((path.clone(), name, attr.ino, attr.kind));
                }
            }
        }
        for (mut path, name, ino, kind) in found {
            path.push(name);
            if kind == Kind::Dir && !dirs.iter().any(|(known, _)| *known == path) {
                dirs.push((path.clone(), ino));
            }
            met.push((path, ino));
        }
    }
    met
}

fn lookup_path(fs: &Fs, path: &[OsString]) -> Ino {
    path.iter().fold(ROOT_INO, |ino, name| {
        fs.lookup(ino, name)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"))
            .ino
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(256)))]

    #[test]
    fn any_exploration_gives_each_path_the_inode_lookups_give(
        nodes in tree(),
        steps in prop::collection::vec(step(), 0..40),
    ) {
        let explored = fs_over(source_of(&nodes));
        let met = explore(&explored, &steps);
        let fresh = fs_over(source_of(&nodes));
        let mut path_of: HashMap<Ino, &[OsString]> = HashMap::new();
        for (path, ino) in &met {
            prop_assert_eq!(lookup_path(&fresh, path), *ino, "{:?}", path);
            let first = *path_of.entry(*ino).or_insert(path);
            prop_assert_eq!(first, &path[..], "two paths share inode {}", ino);
        }
    }
}
