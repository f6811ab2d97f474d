//! Unit tests of the pickle machine, most on hostile streams: each must end quickly with a
//! bounded result or a clear error, never a panic.

use proptest::prelude::*;

use super::tree::{Node, MAX_DEPTH, MAX_NODES};
use super::*;

fn run(bytes: &[u8]) -> Result<Vec<Node>, MachineError> {
    run_bytes(bytes, Limits::default())
}

fn root(nodes: &[Node]) -> &tree::DirNode {
    match nodes.first() {
        Some(Node::Dir(dir)) => dir,
        other => panic!("root is {other:?}"),
    }
}

fn names(nodes: &[Node]) -> Vec<String> {
    root(nodes)
        .children
        .iter()
        .map(|(n, _)| n.clone())
        .collect()
}

/// pickle.dumps({'a': 1, 2: [1.5, True]}, protocol=2)
const SMALL_DICT: &[u8] =
    b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01K\x02]q\x02(G?\xf8\x00\x00\x00\x00\x00\x00\x88eu.";

#[test]
fn dict_of_scalars_and_list() {
    let nodes = run(SMALL_DICT).unwrap();
    assert_eq!(names(&nodes), ["a.npy", "2"]);
    let Some(Node::Array(a)) = nodes.get(1) else {
        panic!()
    };
    assert_eq!(a.header.dtype.typestr(), "<i8");
}

#[test]
fn unknown_globals_are_opaque_and_nothing_runs() {
    // {'x': os.system('touch /tmp/pwned'), 'y': 1.0} as written by a __reduce__ exploit.
    let stream = b"\x80\x02}(X\x01\x00\x00\x00xcposix\nsystem\nX\x10\x00\x00\x00touch /tmp/pwned\x85RX\x01\x00\x00\x00yG?\xf0\x00\x00\x00\x00\x00\x00u.";
    let nodes = run(stream).unwrap();
    assert_eq!(names(&nodes), ["y.npy"]);
    let skipped = &root(&nodes).skipped;
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0].why.to_string().contains("posix.system"),
        "{skipped:?}"
    );
}

#[test]
fn deep_nesting_is_cut_at_the_depth_limit() {
    // 100,000 nested lists: EMPTY_LIST x N then APPEND x (N-1).
    let n = 100_000;
    let mut stream = b"\x80\x02".to_vec();
    stream.extend(std::iter::repeat_n(b']', n));
    stream.extend(std::iter::repeat_n(b'a', n - 1));
    stream.push(b'.');
    let nodes = run(&stream).unwrap();
    assert!(nodes.len() <= MAX_DEPTH + 2, "{} nodes", nodes.len());
}

#[test]
fn deep_marks_hit_the_mark_limit() {
    let mut stream = b"\x80\x02".to_vec();
    stream.extend(std::iter::repeat_n(b'(', 1 << 19));
    let err = run(&stream).unwrap_err();
    assert!(matches!(err, MachineError::Limit { .. }), "{err}");
}

#[test]
fn a_list_that_contains_itself_is_bounded() {
    // l = []; l.append(l); l.append(l)
    let nodes = run(b"\x80\x02]q\x00(h\x00h\x00e.").unwrap();
    assert!(nodes.len() <= MAX_NODES + 1);
}

#[test]
fn billion_laughs_is_capped_by_visited_nodes() {
    // a0 = [1]*10; a_{i+1} = [a_i]*10, 30 levels: 10^30 leaves if copied.
    let mut stream = b"\x80\x02(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01lq\x00".to_vec();
    for _ in 0..30 {
        stream.extend(b"(h\x00h\x00h\x00h\x00h\x00h\x00h\x00h\x00h\x00h\x00lq\x00");
    }
    stream.push(b'.');
    let nodes = run(&stream).unwrap();
    assert!(nodes.len() <= MAX_NODES + 1, "{} nodes", nodes.len());
}

#[test]
fn huge_declared_lengths_are_truncation_not_allocation() {
    for opcode in [0x8eu8, 0x96, 0x8d] {
        let mut stream = vec![0x80, 0x05, opcode];
        stream.extend((1u64 << 62).to_le_bytes());
        stream.extend(b"abc.");
        let err = run(&stream).unwrap_err();
        assert!(matches!(err, MachineError::Truncated { at: 11 }), "{err}");
    }
    let err = run(b"\x80\x02\x8b\xff\xff\xff\x7fabc.").unwrap_err();
    assert!(matches!(err, MachineError::Truncated { .. }), "{err}");
}

#[test]
fn memo_limit_is_enforced() {
    let limits = Limits {
        memo: 100,
        ..Limits::default()
    };
    let mut stream = b"\x80\x04N".to_vec();
    stream.extend(std::iter::repeat_n(0x94u8, 1000));
    stream.push(b'.');
    let err = run_bytes(&stream, limits).unwrap_err();
    assert!(err.to_string().contains("memo larger than 100"), "{err}");
}

#[test]
fn held_values_limit_is_enforced() {
    let limits = Limits {
        cells: 1000,
        ..Limits::default()
    };
    // One list, appended to through a memo reference 10,000 times.
    let mut stream = b"\x80\x02]q\x00".to_vec();
    for _ in 0..10_000 {
        stream.extend(b"h\x00a");
    }
    stream.push(b'.');
    let err = run_bytes(&stream, limits).unwrap_err();
    assert!(matches!(err, MachineError::Limit { .. }), "{err}");
}

#[test]
fn truncated_streams_fail_cleanly() {
    for cut in 0..SMALL_DICT.len() {
        assert!(run(&SMALL_DICT[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn stack_underflow_is_an_error() {
    assert!(run(b"\x80\x02R.").is_err());
    assert!(run(b"\x80\x02(t0.").is_err());
    assert!(run(b"\x80\x02e.").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(500)))]

    /// Random opcode soup, biased toward real opcodes: never a panic.
    #[test]
    fn random_streams_never_panic(body in proptest::collection::vec(
        prop_oneof![
            Just(b'('), Just(b']'), Just(b'}'), Just(b')'), Just(b'a'), Just(b'e'),
            Just(b's'), Just(b'u'), Just(b't'), Just(b'l'), Just(b'd'), Just(b'R'),
            Just(b'b'), Just(b'N'), Just(b'0'), Just(b'1'), Just(b'2'), Just(0x94u8),
            Just(b'h'), Just(b'q'), Just(b'K'), Just(0x85u8), Just(0x86u8), Just(0x87u8),
            Just(0x81u8), Just(0x93u8), Just(b'c'), Just(b'\n'), Just(b'X'), Just(0x8cu8),
            any::<u8>(),
        ],
        0..200,
    )) {
        let mut stream = vec![0x80, 0x04];
        stream.extend(body);
        stream.push(b'.');
        let _ = run(&stream);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = run(&bytes);
    }
}

/// Pickles numpy wrote (protocols 2 and 5, numpy 1.x), for mutation.
const FIXTURES: [&[u8]; 2] = [
    include_bytes!("../../../tests/fixtures/pickle/np1_p2.pkl"),
    include_bytes!("../../../tests/fixtures/pickle/np1_p5.pkl"),
];

#[test]
fn the_unmutated_fixtures_hold_arrays() {
    for bytes in FIXTURES {
        let nodes = run(bytes).unwrap();
        assert!(nodes.iter().any(|n| matches!(n, Node::Array(_))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(300)))]

    /// Real numpy pickles with a few bytes changed and maybe cut: never a panic.
    #[test]
    fn mutated_numpy_pickles_never_panic(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::weighted(0.2, any::<prop::sample::Index>()),
    ) {
        let mut bytes = FIXTURES[which].to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = run(&bytes);
    }
}
