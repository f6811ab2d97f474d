//! Test servers on 127.0.0.1, started and stopped by the tests: a real S3 server (moto),
//! a plain HTTP server with Range support, and a proxy that adds latency, counts requests
//! and stalls, drops or fails them on demand. Each is a script in tests/py run by the
//! project's Python; each binds a free port and says which on its first line of stdout.
//! A server that does not start fails the test (never a skip). Dropping one stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{python, script, TempDir};

/// How long a server may take to say its port (moto imports a lot).
const START_LIMIT: Duration = Duration::from_secs(60);

/// One server process; stopped (stdin closed, then killed) when dropped.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    /// The JSON line the server printed first.
    pub hello: serde_json::Value,
    pub port: u16,
}

impl Server {
    /// Runs `tests/py/<name> ARGS`, waits for its first stdout line and reads the port.
    pub fn start(name: &str, args: &[String]) -> Server {
        let log = std::env::temp_dir().join(format!(
            "arrfs-server-{}-{name}-{}.log",
            std::process::id(),
            unique()
        ));
        let mut child = Command::new(python())
            .arg(script(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_LIMIT).unwrap_or_default();
        let hello: serde_json::Value = match serde_json::from_str(&line) {
            Ok(hello) => hello,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("test server {name} {args:?} did not start (run scripts/setup):\n{text}");
            }
        };
        let port = hello["port"].as_u64().expect("a port") as u16;
        Server {
            stdin: child.stdin.take(),
            child,
            log,
            hello,
            port,
        }
    }

    /// What the server wrote on stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// moto's S3 server. Without auth it takes any credentials (sign with `key_id`/`secret`
/// anyway: without credentials the S3 client would ask the instance metadata service);
/// with auth only `key_id`/`secret`, as AWS.
pub struct S3Server {
    server: Option<Server>,
    pub port: u16,
    pub key_id: String,
    pub secret: String,
    auth: bool,
}

impl S3Server {
    pub fn start() -> S3Server {
        S3Server::launch(0, false)
    }

    /// A server that checks signatures: other keys or secrets are refused.
    pub fn start_with_auth() -> S3Server {
        S3Server::launch(0, true)
    }

    fn launch(port: u16, auth: bool) -> S3Server {
        let mut args = vec!["--port".to_string(), port.to_string()];
        if auth {
            args.push("--auth".into());
        }
        let server = Server::start("s3_server.py", &args);
        S3Server {
            port: server.port,
            key_id: server.hello["access_key_id"].as_str().unwrap().to_string(),
            secret: server.hello["secret_access_key"]
                .as_str()
                .unwrap()
                .to_string(),
            server: Some(server),
            auth,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its buckets are gone with it).
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// A new server on the same port, empty (upload again). With auth the keys change.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        for _ in 0..50 {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        *self = S3Server::launch(port, self.auth);
    }

    /// Creates `bucket` if needed and uploads `files` (key, local path) with boto3; returns
    /// the ETag of each.
    pub fn upload(&self, bucket: &str, files: &[(&str, &Path)]) -> Vec<String> {
        let mut args = vec![
            self.endpoint(),
            self.key_id.clone(),
            self.secret.clone(),
            bucket.to_string(),
        ];
        args.extend(
            files
                .iter()
                .map(|(key, path)| format!("{key}={}", path.display())),
        );
        let out = super::run_py("s3_upload.py", &args);
        out.lines()
            .map(|line| line.split_once(' ').unwrap().1.to_string())
            .collect()
    }

    /// Environment for an `arrfs` process (or any AWS client) to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The same as object_store config pairs (for `RemoteOptions::config`), without
    /// touching the process environment (tests run in parallel).
    pub fn config(&self) -> Vec<(String, String)> {
        vec![
            ("aws_access_key_id".into(), self.key_id.clone()),
            ("aws_secret_access_key".into(), self.secret.clone()),
            ("aws_region".into(), "us-east-1".into()),
        ]
    }

    pub fn log_text(&self) -> String {
        self.server
            .as_ref()
            .map(Server::log_text)
            .unwrap_or_default()
    }
}

/// A plain HTTP server with Range, ETag and If-Match, serving a directory.
pub struct RangeServer {
    server: Option<Server>,
    pub port: u16,
    pub dir: PathBuf,
}

impl RangeServer {
    pub fn start(dir: &Path) -> RangeServer {
        RangeServer::launch(dir, 0)
    }

    fn launch(dir: &Path, port: u16) -> RangeServer {
        let args = [dir.display().to_string(), "--port".into(), port.to_string()];
        let server = Server::start("range_server.py", &args);
        RangeServer {
            port: server.port,
            server: Some(server),
            dir: dir.to_path_buf(),
        }
    }

    /// `http://127.0.0.1:PORT/<name>`
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    pub fn stop(&mut self) {
        self.server = None;
    }

    pub fn restart(&mut self) {
        self.stop();
        *self = RangeServer::launch(&self.dir.clone(), self.port);
    }
}

/// Requests counted by the proxy.
#[derive(Clone, Debug, Default)]
pub struct ProxyStats {
    pub gets: u64,
    pub heads: u64,
    /// Body bytes of the GET answers.
    pub get_bytes: u64,
    /// GET answers cut mid-body (`cut_after`).
    pub cuts: u64,
    /// The `Range` header of each GET.
    pub ranges: Vec<String>,
}

/// The proxy of tests/py/proxy.py in front of a server on `upstream`.
pub struct Proxy {
    _server: Server,
    pub port: u16,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let server = Server::start("proxy.py", &[upstream.to_string()]);
        Proxy {
            port: server.port,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`: use it as the endpoint (S3) or the host (HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Latency added before each request is forwarded.
    pub fn set_delay_ms(&self, ms: u64) {
        self.control(&format!("set?delay_ms={ms}"));
    }

    /// `ok`, `stall` (hold requests unanswered), `drop` (close connections unanswered) or
    /// `error` (answer 503).
    pub fn set_mode(&self, mode: &str) {
        self.control(&format!("set?mode={mode}"));
    }

    /// The `n`th HEAD from now on, and every request after it, stalls (until `set_mode`).
    pub fn stall_from_head(&self, n: u32) {
        self.control(&format!("set?stall_from_head={n}"));
    }

    /// The next GET answer longer than `n` bytes is cut after `n` bytes of body (the
    /// connection closed mid-body), once.
    pub fn cut_after(&self, n: u64) {
        self.control(&format!("set?cut_after={n}"));
    }

    pub fn reset(&self) {
        self.control("reset");
    }

    pub fn stats(&self) -> ProxyStats {
        let stats: serde_json::Value = serde_json::from_str(&self.control("stats")).unwrap();
        let count = |key: &str| stats[key].as_u64().unwrap_or(0);
        ProxyStats {
            gets: count("GET"),
            heads: count("HEAD"),
            get_bytes: count("get_bytes"),
            cuts: count("cuts"),
            ranges: stats["ranges"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| r.as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// One control request by hand (HTTP/1.0 over a socket: no client crate needed).
    fn control(&self, what: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("proxy answers");
        write!(
            stream,
            "GET /__proxy__/{what} HTTP/1.0\r\nHost: proxy\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.contains(" 200 "), "proxy control {what}: {head}");
        body.to_string()
    }
}

/// A directory for the files an HTTP server serves, removed with the test.
pub fn served_dir(name: &str) -> TempDir {
    TempDir::new(&format!("served-{name}"))
}
