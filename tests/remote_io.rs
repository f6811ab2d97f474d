//! The remote range reader (src/io/remote) against real servers on 127.0.0.1, no FUSE:
//! moto's S3 server, a plain HTTP server with Range support, and a proxy that adds latency,
//! counts requests and fails them. Fixtures are uploaded with boto3; the oracle for every
//! read is the local file that was uploaded.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrfs::io::remote::{Remote, RemoteObject, RemoteOptions};
use arrfs::Error;
use common::servers::{served_dir, Proxy, RangeServer, S3Server};
use common::TempDir;

/// Random bytes written to `path` (the content does not matter; the file is the oracle).
fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

/// Options for a test: small blocks (many of them in a small file), short timeouts.
fn options(s3: Option<&S3Server>, endpoint: Option<String>) -> RemoteOptions {
    RemoteOptions {
        endpoint,
        config: s3.map(S3Server::config).unwrap_or_default(),
        block_size: 256 << 10,
        read_ahead: 1 << 20,
        memory_cache: 64 << 20,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        retries: 2,
        retry_timeout: Duration::from_secs(4),
        ..RemoteOptions::default()
    }
}

fn read(object: &RemoteObject, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    object
        .read_at(offset, &mut buf)
        .unwrap_or_else(|e| panic!("read {len} at {offset}: {e}"));
    buf
}

/// 200 reads at random offsets and lengths, each byte-identical to the file.
fn random_reads_match(object: &RemoteObject, data: &[u8], seed: u64) {
    assert_eq!(object.len(), data.len() as u64);
    let mut state = seed | 1;
    let mut next = |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound.max(1)
    };
    for _ in 0..200 {
        let offset = next(data.len() as u64);
        let len = next(600 << 10).min(data.len() as u64 - offset) as usize;
        let at = offset as usize;
        assert!(
            read(object, offset, len) == data[at..at + len],
            "read {len} at {offset}"
        );
    }
    assert!(read(object, 0, data.len()) == data, "the whole object");
}

fn connect_err(url: &str, options: &RemoteOptions) -> String {
    match Remote::connect(url, options) {
        Ok(_) => panic!("{url}: connected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn s3_random_reads_are_byte_identical_and_prefixes_list() {
    let s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-reads");
    let data = random_file(&dir.join("data.bin"), 5 << 20, 1);
    random_file(&dir.join("small.bin"), 1000, 2);
    s3.upload(
        "bucket",
        &[
            ("run7/data.bin", &dir.join("data.bin")),
            ("run7/sub/small.bin", &dir.join("small.bin")),
            ("run7/sub/deeper/x.bin", &dir.join("small.bin")),
        ],
    );
    let options = options(Some(&s3), Some(s3.endpoint()));

    let remote = Remote::connect("s3://bucket/run7/data.bin", &options).unwrap();
    random_reads_match(&remote.root_object().unwrap(), &data, 11);

    let remote = Remote::connect("s3://bucket/run7/", &options).unwrap();
    assert!(remote.root_object().is_none());
    let top = remote.list("").unwrap();
    assert_eq!(top.dirs, vec!["sub".to_string()]);
    assert_eq!(top.objects, vec![("data.bin".to_string(), 5 << 20)]);
    let sub = remote.list("sub").unwrap();
    assert_eq!(sub.dirs, vec!["deeper".to_string()]);
    assert_eq!(sub.objects, vec![("small.bin".to_string(), 1000)]);
    let small = remote.open("sub/small.bin").unwrap();
    assert_eq!(small.url(), "s3://bucket/run7/sub/small.bin");
    assert!(read(&small, 0, 1000) == std::fs::read(dir.join("small.bin")).unwrap());

    let remote = Remote::connect("s3://bucket/run7", &options).unwrap();
    assert!(
        remote.root_object().is_none(),
        "a key that is only a prefix"
    );
    let stats = remote.stats();
    assert!(stats.lists >= 1 && stats.heads >= 1, "{stats:?}");
}

#[test]
fn s3_listing_reads_every_page() {
    let s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-pages");
    let file = dir.join("one.bin");
    random_file(&file, 10, 3);
    // S3 answers 1000 keys a page: 1003 objects need two.
    let keys: Vec<String> = (0..1003).map(|i| format!("many/k{i:04}")).collect();
    let files: Vec<(&str, &Path)> = keys.iter().map(|k| (k.as_str(), file.as_path())).collect();
    s3.upload("bucket", &files);
    let options = options(Some(&s3), Some(s3.endpoint()));
    let remote = Remote::connect("s3://bucket/many/", &options).unwrap();
    let listing = remote.list("").unwrap();
    assert_eq!(listing.objects.len(), 1003);
    assert_eq!(listing.objects[1002].0, "k1002");
}

#[test]
fn http_random_reads_are_byte_identical() {
    let dir = served_dir("http-reads");
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let data = random_file(&dir.join("files/w.bin"), 3 << 20, 4);
    let server = RangeServer::start(dir.path());
    let remote = Remote::connect(&server.url("files/w.bin"), &options(None, None)).unwrap();
    let object = remote.root_object().unwrap();
    assert_eq!(object.url(), server.url("files/w.bin"));
    random_reads_match(&object, &data, 12);
}

#[test]
fn bad_urls_credentials_buckets_and_keys_fail_at_connect_with_one_line() {
    let s3 = S3Server::start_with_auth();
    let dir = TempDir::new("remote-s3-bad");
    random_file(&dir.join("a.bin"), 100, 5);
    s3.upload("bucket", &[("a.bin", &dir.join("a.bin"))]);
    let good = options(Some(&s3), Some(s3.endpoint()));
    Remote::connect("s3://bucket/a.bin", &good).expect("the right keys work");

    let one_line_naming = |text: &str, url: &str, cause: &str| {
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains(url), "{url} not in: {text}");
        assert!(text.contains(cause), "{cause} not in: {text}");
        assert!(!text.contains(&s3.secret), "a secret in: {text}");
    };

    let mut wrong_secret = good.clone();
    wrong_secret.config[1].1 = "not-the-secret".into();
    let text = connect_err("s3://bucket/a.bin", &wrong_secret);
    one_line_naming(&text, "s3://bucket/a.bin", "SignatureDoesNotMatch");

    let mut unknown_key = good.clone();
    unknown_key.config[0].1 = "AKIANOBODYKNOWS00000".into();
    let text = connect_err("s3://bucket/a.bin", &unknown_key);
    one_line_naming(&text, "s3://bucket/a.bin", "InvalidAccessKeyId");

    let text = connect_err("s3://no-such-bucket/a.bin", &good);
    one_line_naming(&text, "s3://no-such-bucket/a.bin", "no such bucket");
    let text = connect_err("s3://no-such-bucket/", &good);
    one_line_naming(&text, "s3://no-such-bucket/", "no such bucket");

    let text = connect_err("s3://bucket/missing.bin", &good);
    one_line_naming(&text, "s3://bucket/missing.bin", "no such object");

    // Nothing listens on a port that was just free.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = options(Some(&s3), Some(format!("http://127.0.0.1:{port}")));
    let text = connect_err("s3://bucket/a.bin", &closed);
    one_line_naming(&text, "s3://bucket/a.bin", "connection refused");

    let dir = served_dir("http-bad");
    let server = RangeServer::start(dir.path());
    let text = connect_err(&server.url("nothing.bin"), &options(None, None));
    one_line_naming(&text, &server.url("nothing.bin"), "no such object");
}

#[test]
fn a_stopped_server_fails_reads_and_they_recover_after_a_restart() {
    let mut s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-restart");
    let data = random_file(&dir.join("d.bin"), 4 << 20, 6);
    let etag = s3.upload("bucket", &[("d.bin", &dir.join("d.bin"))]);
    let remote = Remote::connect(
        "s3://bucket/d.bin",
        &options(Some(&s3), Some(s3.endpoint())),
    )
    .unwrap();
    let object = remote.root_object().unwrap();
    assert!(read(&object, 0, 1000) == data[..1000]);

    s3.stop();
    let mut buf = vec![0; 1000];
    let err = object.read_at(3 << 20, &mut buf).unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("s3://bucket/d.bin"), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    assert!(
        read(&object, 0, 1000) == data[..1000],
        "cached blocks still read"
    );

    s3.restart();
    assert_eq!(
        s3.upload("bucket", &[("d.bin", &dir.join("d.bin"))]),
        etag,
        "the same object"
    );
    assert!(read(&object, 3 << 20, 1000) == data[3 << 20..(3 << 20) + 1000]);
    random_reads_match(&object, &data, 13);
}

#[test]
fn a_replaced_object_fails_reads_with_source_changed() {
    let s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-replaced");
    let data = random_file(&dir.join("v1.bin"), 2 << 20, 7);
    random_file(&dir.join("v2.bin"), 2 << 20, 8);
    s3.upload("bucket", &[("f.bin", &dir.join("v1.bin"))]);
    let remote = Remote::connect(
        "s3://bucket/f.bin",
        &options(Some(&s3), Some(s3.endpoint())),
    )
    .unwrap();
    let object = remote.root_object().unwrap();
    assert!(read(&object, 0, 100) == data[..100]);
    s3.upload("bucket", &[("f.bin", &dir.join("v2.bin"))]);
    let mut buf = vec![0; 100];
    let err = object.read_at(1 << 20, &mut buf).unwrap_err();
    assert!(matches!(err, Error::SourceChanged { .. }), "{err}");
    assert!(err.to_string().contains("remount"), "{err}");
    assert_eq!(err.errno(), libc::EIO);

    // The same over plain HTTP: the file rewritten under the server.
    let served = served_dir("http-replaced");
    std::fs::copy(dir.join("v1.bin"), served.join("f.bin")).unwrap();
    let server = RangeServer::start(served.path());
    let remote = Remote::connect(&server.url("f.bin"), &options(None, None)).unwrap();
    let object = remote.root_object().unwrap();
    assert!(read(&object, 0, 100) == data[..100]);
    std::thread::sleep(Duration::from_millis(20)); // a new mtime, hence a new ETag
    std::fs::copy(dir.join("v2.bin"), served.join("f.bin")).unwrap();
    let err = object.read_at(1 << 20, &mut buf).unwrap_err();
    assert!(matches!(err, Error::SourceChanged { .. }), "{err}");
}

#[test]
fn stalled_dropped_and_failing_requests_fail_the_read_and_then_recover() {
    let s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-faults");
    let data = random_file(&dir.join("d.bin"), 4 << 20, 9);
    s3.upload("bucket", &[("d.bin", &dir.join("d.bin"))]);
    let proxy = Proxy::start(s3.port);
    let options = quick_to_fail(&s3, &proxy);
    let remote = Remote::connect("s3://bucket/d.bin", &options).unwrap();
    let object = remote.root_object().unwrap();
    let block = 256 << 10;
    let mut buf = vec![0; 100];
    for (i, mode) in ["stall", "drop", "error"].iter().enumerate() {
        proxy.set_mode(mode);
        let at = (2 * i + 1) as u64 * block;
        let err = object.read_at(at, &mut buf).unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{mode}: {err}");
        proxy.set_mode("ok");
        assert!(
            read(&object, at, 100) == data[at as usize..at as usize + 100],
            "{mode}: recovery"
        );
    }
    assert!(remote.stats().get_failures >= 3);

    // Slow but answering: every request 50 ms late, the bytes still right.
    proxy.set_delay_ms(50);
    random_reads_match(&object, &data, 14);
}

#[test]
fn a_second_remote_with_the_same_disk_cache_sends_no_data_gets() {
    let s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-disk");
    let data = random_file(&dir.join("d.bin"), 3 << 20, 10);
    s3.upload("bucket", &[("d.bin", &dir.join("d.bin"))]);
    let proxy = Proxy::start(s3.port);
    let cache = TempDir::new("remote-s3-disk-cache");
    let options = RemoteOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..options(Some(&s3), Some(proxy.endpoint()))
    };
    let first = Remote::connect("s3://bucket/d.bin", &options).unwrap();
    random_reads_match(&first.root_object().unwrap(), &data, 15);
    let fetched = proxy.stats();
    assert!(
        fetched.gets > 0 && fetched.get_bytes >= data.len() as u64,
        "{fetched:?}"
    );
    drop(first);

    proxy.reset();
    let second: Arc<Remote> = Remote::connect("s3://bucket/d.bin", &options).unwrap();
    random_reads_match(&second.root_object().unwrap(), &data, 16);
    let counted = proxy.stats();
    assert_eq!(counted.gets, 0, "data GETs: {:?}", counted.ranges);
    assert_eq!(counted.heads, 1, "{counted:?}");
    assert_eq!(second.stats().gets, 0);
    assert!(second.stats().disk_hits > 0);
}

/// `object` read front to back in 64 KiB reads, as a sequential reader does; each read's
/// bytes, or its error.
fn read_sequentially(object: &RemoteObject) -> Vec<arrfs::Result<Vec<u8>>> {
    let piece = 64 << 10;
    (0..object.len())
        .step_by(piece)
        .map(|offset| {
            let mut buf = vec![0; piece.min((object.len() - offset) as usize)];
            object.read_at(offset, &mut buf).map(|()| buf)
        })
        .collect()
}

#[test]
fn a_sequential_reader_is_served_by_one_streaming_get_even_through_a_cut() {
    let s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-stream");
    let data = random_file(&dir.join("d.bin"), 8 << 20, 11);
    s3.upload("bucket", &[("d.bin", &dir.join("d.bin"))]);
    let proxy = Proxy::start(s3.port);
    let options = options(Some(&s3), Some(proxy.endpoint()));
    let remote = Remote::connect("s3://bucket/d.bin", &options).unwrap();
    proxy.reset();
    let got: Vec<u8> = read_sequentially(&remote.root_object().unwrap())
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    assert!(got == data);
    let counted = proxy.stats();
    assert_eq!(
        counted.ranges,
        ["bytes=0-262143", "bytes=262144-8388607"],
        "the first read's GET, then one stream"
    );

    // The stream's connection closed mid-body: its blocks come by range (or from the
    // client's resumed GET), every byte right.
    let remote = Remote::connect("s3://bucket/d.bin", &options).unwrap();
    proxy.reset();
    proxy.cut_after(3 << 20);
    let got: Vec<u8> = read_sequentially(&remote.root_object().unwrap())
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    assert!(got == data);
    let counted = proxy.stats();
    assert_eq!(counted.cuts, 1, "{counted:?}");
    assert!(counted.gets >= 3, "{counted:?}");
}

#[test]
fn a_stream_cut_while_the_server_is_down_fails_reads_and_they_recover() {
    let mut s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-stream-down");
    let data = random_file(&dir.join("d.bin"), 8 << 20, 12);
    s3.upload("bucket", &[("d.bin", &dir.join("d.bin"))]);
    let proxy = Proxy::start(s3.port);
    let options = quick_to_fail(&s3, &proxy);
    let remote = Remote::connect("s3://bucket/d.bin", &options).unwrap();
    let object = remote.root_object().unwrap();
    proxy.cut_after(3 << 20);
    let piece = 64 << 10;
    let mut offset = 0;
    // Up to the cut the stream serves (the proxy had the answer before the server went).
    while offset < 2 << 20 {
        assert!(read(&object, offset, piece) == data[offset as usize..offset as usize + piece]);
        offset += piece as u64;
    }
    s3.stop();
    let failed = (offset..object.len()).step_by(piece).find_map(|at| {
        object
            .read_at(at, &mut vec![0; piece])
            .err()
            .map(|e| (at, e))
    });
    let (at, err) = failed.expect("a read past the cut fails");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    s3.restart();
    s3.upload("bucket", &[("d.bin", &dir.join("d.bin"))]);
    assert!(read(&object, at, piece) == data[at as usize..at as usize + piece]);
    random_reads_match(&object, &data, 17);
}

#[test]
fn an_object_replaced_under_a_stream_fails_reads_with_source_changed() {
    let s3 = S3Server::start();
    let dir = TempDir::new("remote-s3-stream-replaced");
    let data = random_file(&dir.join("v1.bin"), 8 << 20, 13);
    random_file(&dir.join("v2.bin"), 8 << 20, 14);
    s3.upload("bucket", &[("f.bin", &dir.join("v1.bin"))]);
    let proxy = Proxy::start(s3.port);
    let remote = Remote::connect(
        "s3://bucket/f.bin",
        &options(Some(&s3), Some(proxy.endpoint())),
    )
    .unwrap();
    let object = remote.root_object().unwrap();
    proxy.cut_after(3 << 20);
    let piece = 64 << 10;
    let mut offset = 0;
    while offset < 1 << 20 {
        assert!(read(&object, offset, piece) == data[offset as usize..offset as usize + piece]);
        offset += piece as u64;
    }
    s3.upload("bucket", &[("f.bin", &dir.join("v2.bin"))]);
    // The stream goes on with the version it was sent for, up to the cut; the GETs after
    // it meet the new version: EIO, never a mix.
    let mut failure = None;
    while offset < object.len() {
        let mut buf = vec![0; piece];
        match object.read_at(offset, &mut buf) {
            Ok(()) => assert!(buf == data[offset as usize..offset as usize + piece]),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        offset += piece as u64;
    }
    let err = failure.expect("the replacement is noticed");
    assert!(matches!(err, Error::SourceChanged { .. }), "{err}");
    assert!(err.to_string().contains("remount"), "{err}");
    assert!(object.read_at(0, &mut [0; 10]).is_err(), "for good");
}

/// Options that give up on a store quickly (1 s per request, one retry), through `proxy`.
fn quick_to_fail(s3: &S3Server, proxy: &Proxy) -> RemoteOptions {
    RemoteOptions {
        timeout: Duration::from_secs(1),
        retries: 1,
        retry_timeout: Duration::from_secs(2),
        ..options(Some(s3), Some(proxy.endpoint()))
    }
}
