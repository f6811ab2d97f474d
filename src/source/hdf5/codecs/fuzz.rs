//! Garbage and mutated chunks through every codec: each decode ends with bytes within its
//! limit or an error, never a panic, a hang or an allocation of what a header claims.

use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;

const LIMIT: usize = 64 << 10;

/// Valid encodings (by the codecs' own encoders, where we have them) to mutate.
static SEEDS: LazyLock<Vec<(Codec, Vec<u8>)>> = LazyLock::new(|| {
    let data: Vec<u8> = (0..4000u32)
        .flat_map(|i| ((i / 7) as u16).to_le_bytes())
        .collect();
    let mut lz4 = (data.len() as u64).to_be_bytes().to_vec();
    lz4.extend_from_slice(&1024u32.to_be_bytes());
    for piece in data.chunks(1024) {
        let packed = lz4_flex::block::compress(piece);
        lz4.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        lz4.extend_from_slice(&packed);
    }
    let mut bz = Vec::new();
    std::io::Read::read_to_end(
        &mut bzip2::read::BzEncoder::new(&data[..], bzip2::Compression::fast()),
        &mut bz,
    )
    .unwrap();
    let mut blosc = vec![0u8; data.len() + 64];
    // SAFETY: buffers valid for their lengths; one thread.
    let n = unsafe {
        blosc_src::blosc_compress_ctx(
            5,
            2,
            2,
            data.len(),
            data.as_ptr().cast(),
            blosc.as_mut_ptr().cast(),
            blosc.len(),
            c"lz4".as_ptr(),
            0,
            1,
        )
    };
    blosc.truncate(n.max(0) as usize);
    let mut bitshuffle = (data.len() as u64).to_be_bytes().to_vec();
    bitshuffle.extend_from_slice(&1024u32.to_be_bytes());
    for piece in data.chunks(1024) {
        let packed = zstd::bulk::compress(piece, 1).unwrap();
        bitshuffle.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        bitshuffle.extend_from_slice(&packed);
    }
    let mut scaled = 9u32.to_le_bytes().to_vec();
    scaled.push(8);
    scaled.resize(21, 0);
    scaled.extend((0..900).map(|i| (i * 13) as u8));
    let nbit = [8, 0, 500, 1, 4, 0, 20, 3];
    let mut scale_parms = vec![2, 0, 800, 0, 2, 1, 0, 1, 7];
    scale_parms.resize(20, 0);
    vec![
        (Codec::Zstd, zstd::bulk::compress(&data, 3).unwrap()),
        (Codec::Lz4, lz4),
        (Codec::Bzip2, bz),
        (
            Codec::Lzf {
                chunk_bytes: data.len(),
            },
            lzf::compress(&data).unwrap(),
        ),
        (Codec::Blosc, blosc),
        (
            Codec::of_filter(BITSHUFFLE, &[0, 0, 2, 0, 3])
                .unwrap()
                .unwrap(),
            bitshuffle,
        ),
        (
            Codec::of_filter(NBIT, &nbit).unwrap().unwrap(),
            data[..1300].to_vec(),
        ),
        (
            Codec::of_filter(SCALEOFFSET, &scale_parms)
                .unwrap()
                .unwrap(),
            scaled,
        ),
        (
            Codec::of_filter(SZIP, &[141, 32, 16, 512])
                .unwrap()
                .unwrap(),
            [&(data.len() as u32).to_le_bytes()[..], &data[..2000]].concat(),
        ),
        (
            Codec::Blosc2 { chunk_bytes: 0 },
            blosc2::encode::flat(&data, 2, blosc2_sys::BLOSC_LZ4 as u8, 1),
        ),
        (
            Codec::of_filter(BLOSC2, &[2, 0, 2, 8000, 5, 1, 5, 2, 40, 100])
                .unwrap()
                .unwrap(),
            blosc2::encode::nd(
                &data,
                2,
                &[40, 100],
                &[16, 32],
                blosc2_sys::BLOSC_ZSTD as u8,
            ),
        ),
    ]
});

/// How many seeds there are (proptest strategies need it as a constant).
const SEED_COUNT: usize = 11;

fn check(codec: &Codec, bytes: &[u8]) {
    if let Ok(out) = codec.decode(bytes, LIMIT) {
        assert!(
            out.len() <= LIMIT,
            "{} gave {} bytes",
            codec.name(),
            out.len()
        );
    }
}

#[test]
fn the_seeds_decode() {
    assert_eq!(SEEDS.len(), SEED_COUNT);
    for (codec, bytes) in SEEDS.iter().take(6).chain(&SEEDS[9..]) {
        let out = codec.decode(bytes, LIMIT).unwrap();
        assert_eq!(out.len(), 8000, "{}", codec.name());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(400)))]

    #[test]
    fn mutated_chunks_never_panic(
        which in 0usize..SEED_COUNT,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::weighted(0.3, any::<prop::sample::Index>()),
    ) {
        let (codec, seed) = &SEEDS[which];
        let mut bytes = seed.clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        check(codec, &bytes);
    }

    #[test]
    fn random_bytes_never_panic(which in 0usize..SEED_COUNT, bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check(&SEEDS[which].0, &bytes);
    }

    #[test]
    fn random_parameters_never_panic(
        id in prop::sample::select(vec![NBIT, SCALEOFFSET, BITSHUFFLE, SZIP, BLOSC2]),
        values in prop::collection::vec(0u32..40, 0..24),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut values = values;
        if id == NBIT && !values.is_empty() {
            values[0] = values.len() as u32;
        }
        if let Some(Ok(codec)) = Codec::of_filter(id, &values) {
            check(&codec, &bytes);
        }
    }
}
