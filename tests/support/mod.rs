//! Test harness: an in-process mock upstream that records what it received (plain or TLS with an
//! rcgen certificate), keyproxy started in-process on 127.0.0.1:0, an HTTP client, and the real
//! binary as a subprocess.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod tls;
pub use tls::tls_acceptor;

/// Every test's upper bound: a hung proxy fails the test instead of hanging CI.
pub const LIMIT: Duration = Duration::from_secs(30);

pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("test exceeded its time limit")
}

/// A key that looks real, long enough to have a middle that must never be printed.
pub const KEY_A: &str = "sk-or-v1-aaaaaaaaaaaaaaaaSECRETMIDDLEaaaaaaaaaa11111111";
pub const KEY_B: &str = "sk-or-v1-bbbbbbbbbbbbbbbbSECRETMIDDLEbbbbbbbbbb22222222";
pub const FP_A: &str = "sk-or-v1...11111111";
pub const FP_B: &str = "sk-or-v1...22222222";

/// What the mock upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub uri: http::Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A response body fed by a channel, so a test decides when each chunk leaves the upstream.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

pub type MockBody = Either<Full<Bytes>, ChannelBody>;
pub type Handler = Arc<dyn Fn(&Received) -> Response<MockBody> + Send + Sync>;

pub fn reply(status: u16, body: &str) -> Response<MockBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body.to_owned()))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A `text/event-stream` answer whose chunks are what `rx` receives.
pub fn event_stream(rx: mpsc::Receiver<Bytes>) -> Response<MockBody> {
    let mut r = Response::new(Either::Right(ChannelBody(rx)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// An upstream that answers its one request with an event stream; the test sends the events.
pub fn one_event_stream(capacity: usize) -> (mpsc::Sender<Bytes>, Handler) {
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let slot = Mutex::new(Some(rx));
    let handler: Handler =
        Arc::new(move |_| event_stream(slot.lock().unwrap().take().expect("one stream only")));
    (tx, handler)
}

pub fn ok_handler() -> Handler {
    Arc::new(|_| reply(200, r#"{"ok":true}"#))
}

/// Answers 200 and tells the client, in `x-seen-authorization`, which credential arrived.
pub fn echo_authorization() -> Handler {
    Arc::new(|r| {
        let mut resp = reply(200, "{}");
        resp.headers_mut()
            .insert("x-seen-authorization", r.headers["authorization"].clone());
        resp
    })
}

pub struct Mock {
    pub addr: SocketAddr,
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// How a TLS mock upstream speaks: the protocols it offers by ALPN, and the HTTP/2 streams it
/// allows per connection.
#[derive(Clone)]
pub struct TlsOptions {
    pub alpn: Vec<Vec<u8>>,
    pub max_streams: Option<u32>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            max_streams: None,
        }
    }
}

impl Mock {
    pub async fn start(handler: Handler) -> Self {
        Self::serve(handler, None, None).await
    }

    /// A TLS upstream with a certificate for 127.0.0.1 signed by a fresh CA; the CA's PEM is
    /// written to `ca_path`.
    pub async fn start_tls(handler: Handler, ca_path: &Path) -> Self {
        Self::start_tls_with(handler, ca_path, TlsOptions::default()).await
    }

    pub async fn start_tls_with(handler: Handler, ca_path: &Path, options: TlsOptions) -> Self {
        let acceptor = tls_acceptor(ca_path, options.alpn);
        Self::serve(handler, Some(acceptor), options.max_streams).await
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn serve(
        handler: Handler,
        tls: Option<tokio_rustls::TlsAcceptor>,
        max_streams: Option<u32>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = handler.clone();
                let rec = rec.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let rec = rec.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let r = Received {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            let resp = handler(&r);
                            rec.lock().unwrap().push(r);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(max_streams);
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            url: format!("{scheme}://{addr}"),
            received,
            connections,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// What a raw upstream does after it has read a request.
#[derive(Clone, Copy)]
pub enum Then {
    /// Keeps the connection open and says nothing more.
    Hold,
    /// Hangs up.
    Close,
}

/// An upstream below HTTP: reads a request, writes `answer` as it is (nothing when empty), then
/// holds or closes the connection. Returns its URL.
pub async fn raw_upstream(answer: &'static [u8], then: Then) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(answer).await;
                if let Then::Hold = then {
                    // Reads until the peer hangs up, answering nothing.
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    url
}

/// keyproxy running in-process from a config written into a temporary folder.
pub struct Proxy {
    pub running: keyproxy::Running,
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl Proxy {
    /// `config` is the TOML of keyproxy.toml; `files` are written beside it first.
    pub async fn start(config: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            write_private(&dir.path().join(name), text);
        }
        let path = dir.path().join("keyproxy.toml");
        // Usage goes to the test's folder, never to the user's state folder.
        let config = if config.contains("state_dir") {
            config.to_owned()
        } else {
            format!("state_dir = \"state\"\n{config}")
        };
        std::fs::write(&path, config).unwrap();
        let running = keyproxy::start(
            keyproxy::Origin::File(path),
            Some("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let url = format!("http://{}", running.local_addr);
        Self { running, dir, url }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fingerprints of a profile's keys in the current snapshot.
    pub fn keys_of(&self, profile: &str) -> Vec<String> {
        let snapshot = self.running.state.load();
        snapshot
            .keys
            .fingerprints(profile)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Waits, without polling, until a reload makes `cond` true of the snapshot.
    pub async fn wait_until(&self, mut cond: impl FnMut(&keyproxy::proxy::Snapshot) -> bool) {
        let mut reloads = self.running.state.reloads();
        while !cond(&self.running.state.load()) {
            reloads.changed().await.unwrap();
        }
    }

    /// Waits until `profile` holds exactly the key with fingerprint `fp`.
    pub async fn wait_for_key(&self, profile: &str, fp: &str) {
        self.wait_until(|s| s.keys.fingerprints(profile) == [fp])
            .await;
    }

    pub fn status(&self) -> keyproxy::proxy::ReloadLog {
        self.running.state.log()
    }
}

/// How the kubelet updates a secret volume: each version in a timestamped folder, `..data` a
/// symlink to the current one, and each key a symlink through `..data`. An update writes a new
/// folder, points `..data_tmp` at it, renames that over `..data` and removes the old folder.
pub fn kubernetes_secret_volume(dir: &Path, version: &str, keys: &str) {
    let data = dir.join(version);
    std::fs::create_dir_all(&data).unwrap();
    write_private(&data.join("keys.toml"), keys);
    std::os::unix::fs::symlink(version, dir.join("..data_tmp")).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if std::fs::symlink_metadata(dir.join("keys.toml")).is_err() {
        std::os::unix::fs::symlink("..data/keys.toml", dir.join("keys.toml")).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// Replaces `path` the way editors and `mv` do: write a sibling, then rename over.
pub fn rename_over(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    write_private(&tmp, text);
    std::fs::rename(&tmp, path).unwrap();
}

pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A config with one route `/` to `upstream` and `keys.toml` beside it.
pub fn simple_config(upstream: &str, profile: &str) -> String {
    format!(
        "state_dir = \"state\"\nkeys_files = [\"keys.toml\"]\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"{profile}\"\n"
    )
}

pub fn keys_toml(profile: &str, key: &str) -> String {
    format!("[profiles.\"{profile}\"]\nkey = \"{key}\"\n")
}

pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Reply {
    let resp = client.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(&client(), request("GET", url, headers, Bytes::new())).await
}

/// A chat completion naming `model`, POSTed to keyproxy at `url` on the OpenRouter path by the
/// client whose token is `token`.
pub async fn chat_as(url: &str, token: &str, model: &str) -> Reply {
    let auth = format!("Bearer {token}");
    let body = format!(r#"{{"model":"{model}"}}"#);
    let url = format!("{url}/api/v1/chat/completions");
    send(
        &client(),
        request("POST", &url, &[("authorization", &auth)], body),
    )
    .await
}

/// `GET url` + `path` with `token`, read as JSON.
pub async fn get_json_as(url: &str, path: &str, token: &str) -> serde_json::Value {
    let auth = format!("Bearer {token}");
    get(&format!("{url}{path}"), &[("authorization", &auth)])
        .await
        .json()
}

/// The real binary, with a private HOME and XDG_CONFIG_HOME so no user config leaks in.
pub struct Bin {
    pub home: tempfile::TempDir,
}

impl Bin {
    pub fn new() -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// The binary with this HOME. Commands that ask a running keyproxy (`check`, `status`,
    /// `reload`, `usage`, `health`, `service status`) ask an address where nothing listens
    /// (`KEYPROXY_LISTEN`), never the default 127.0.0.1:8787, where the user's own keyproxy
    /// may run; a spec that asks its own keyproxy passes `--listen`, which wins.
    pub fn command(&self) -> std::process::Command {
        let mut c = self.command_with_config_listen();
        c.env("KEYPROXY_LISTEN", nobody_listens().to_string());
        c
    }

    /// The binary with the config's own `listen`: for commands that only print or write the
    /// address (`openclaw connect|status`), or a spec whose config names its own keyproxy.
    pub fn command_with_config_listen(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_keyproxy"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("RUST_LOG", "info")
            .current_dir(self.home.path());
        c
    }

    /// A path under this HOME as keyproxy shows it to people: `~/...`.
    pub fn shown(&self, path: &Path) -> String {
        match path.strip_prefix(self.home.path()) {
            Ok(rest) => format!("~/{}", rest.display()),
            Err(_) => path.display().to_string(),
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        let d = self.home.path().join(".config").join("keyproxy");
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

/// A loopback address that nothing listens on: a port the kernel handed out and took back.
pub fn nobody_listens() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// Output of a finished subprocess, with both streams as text.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: std::process::Command) -> Output {
    finish(cmd, None)
}

/// [`run`] with `stdin` written to the command's standard input, which is then closed.
pub fn run_with_stdin(cmd: std::process::Command, stdin: &str) -> Output {
    finish(cmd, Some(stdin))
}

fn finish(mut cmd: std::process::Command, stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(match stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).unwrap();
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            kill(pid, "KILL");
            panic!("subprocess exceeded its time limit");
        }
    };
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Sends a signal by name (`HUP`, `TERM`, `KILL`) with the system's kill(1).
pub fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Asserts that no full key appears in `text`.
pub fn assert_no_key(text: &str) {
    for key in [KEY_A, KEY_B] {
        assert!(!text.contains(key), "a full key leaked: {text}");
    }
    assert!(
        !text.contains("SECRETMIDDLE"),
        "part of a key leaked: {text}"
    );
}

/// `keyproxy serve` running as a subprocess with JSON logs, so a test can wait for a log line
/// instead of sleeping.
pub struct Served {
    pub child: tokio::process::Child,
    pub url: String,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every stderr line so far, for leak checks.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// Starts the binary with `--listen 127.0.0.1:0 --log-format json` and waits for the line
    /// that says where it listens.
    pub async fn start(cmd: std::process::Command) -> Self {
        Self::start_logging(cmd, "json").await
    }

    /// As [`Served::start`], with logs in `format` (`json` or `text`).
    pub async fn start_logging(mut cmd: std::process::Command, format: &str) -> Self {
        use std::process::Stdio;
        use tokio::io::AsyncBufReadExt;
        cmd.args(["--log-format", format, "serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut served = Self {
            child,
            url: String::new(),
            lines,
            log,
        };
        let line = served.wait_for_log("keyproxy is listening").await;
        let listen = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(v) => v["fields"]["listen"].as_str().unwrap().to_owned(),
            Err(_) => line.rsplit("listen=").next().unwrap().trim().to_owned(),
        };
        served.url = format!("http://{listen}");
        served
    }

    /// Waits for the next stderr line containing `needle` and returns it.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(LIMIT, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no log line with {needle:?}; stderr so far:\n{}",
                self.log.lock().unwrap().join("\n")
            ),
        }
    }

    pub fn signal(&self, signal: &str) {
        kill(self.child.id().unwrap(), signal);
    }

    /// Sends SIGTERM and returns the exit code and stdout.
    pub async fn stop(mut self) -> (Option<i32>, String, Vec<String>) {
        use tokio::io::AsyncReadExt;
        self.signal("TERM");
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("keyproxy did not exit after SIGTERM")
            .unwrap();
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout).await;
        }
        // Drain what the reader has not yet passed on.
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_secs(5), self.lines.recv()).await
        {}
        let log = self.log.lock().unwrap().clone();
        (status.code(), stdout, log)
    }
}

/// `KEYPROXY_SKIP_REAL_CLIENTS=1`: the specs that install a real client from the npm registry
/// (OpenClaw, Claude Code, Codex, Gemini CLI, opencode, and playwright-core with Chromium for
/// the page) skip, saying so, instead of downloading
/// it. CI (`.ci/run`) never sets it.
pub fn real_clients_skipped(spec: &str) -> bool {
    let skip = std::env::var("KEYPROXY_SKIP_REAL_CLIENTS").is_ok_and(|v| !v.is_empty() && v != "0");
    if skip {
        eprintln!("SKIPPED {spec}: KEYPROXY_SKIP_REAL_CLIENTS is set; nothing was downloaded");
    }
    skip
}
