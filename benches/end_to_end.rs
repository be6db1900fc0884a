//! End to end: a Rust mock upstream and a load generator in this process, keyproxy (the release
//! binary) as a separate process, all on the same machine. Every figure through keyproxy is
//! printed beside the same figure measured straight to the mock in the same run, and, when
//! `nginx` and `haproxy` are on PATH, through each of them configured to do the same job.
//!
//!   cargo bench --bench end_to_end
//!   KEYPROXY_BENCH_SECS=10 cargo bench --bench end_to_end     # longer runs
//!
//! Scenarios: chat completions (JSON in, JSON out) and SSE streams of 20 events at 64
//! keep-alive connections; latency at one connection; time to the first byte of a stream;
//! upstream connection reuse; keyproxy's resident memory idle and with 1,000 open streams.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const KEY: &str = "sk-or-v1-bench0000000000000000000000000000000000000000000968304f4";
const CHAT_REQUEST: &str = r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about reverse proxies."}],"temperature":0.7}"#;
const CHAT_RESPONSE: &str = r#"{"id":"gen-1732442400-abcdefghijklmnop","provider":"OpenAI","model":"openai/gpt-4o-mini","object":"chat.completion","created":1732442400,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":"Requests pass through,\nkeys stay home behind the wall,\nstreams flow, none the wiser.","refusal":null}}],"usage":{"prompt_tokens":27,"completion_tokens":22,"total_tokens":49}}"#;
const EVENT: &[u8] = b"data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n";
const EVENTS: usize = 20;

// ---------------------------------------------------------------------------------------------
// The mock upstream

/// 20 SSE events, each its own frame, sent as fast as the connection takes them; `hold` keeps
/// the stream open after the first until released.
struct Events {
    left: usize,
    hold: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Body for Events {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left < EVENTS {
            if let Some(hold) = self.hold.as_mut() {
                if hold.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.hold = None;
            }
        }
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(EVENT)))))
    }
}

struct Mock {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

async fn mock() -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (count, rel) = (connections.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            count.fetch_add(1, Ordering::Relaxed);
            let rel = rel.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let rel = rel.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let _ = req.into_body().collect().await;
                        let resp = if path.ends_with("/chat/completions") {
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Either::Left(Full::new(Bytes::from_static(
                                    CHAT_RESPONSE.as_bytes(),
                                ))))
                        } else {
                            let hold: Option<Pin<Box<dyn Future<Output = ()> + Send>>> =
                                if path.ends_with("/hold") {
                                    Some(Box::pin(async move { rel.notified().await }))
                                } else {
                                    None
                                };
                            Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(Either::Right(Events { left: EVENTS, hold }))
                        };
                        Ok::<_, std::convert::Infallible>(resp.unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Mock {
        addr,
        connections,
        release,
    }
}

// ---------------------------------------------------------------------------------------------
// The load generator

#[derive(Clone, Copy)]
enum Scenario {
    Chat,
    Stream,
}

impl Scenario {
    fn request(self, host: SocketAddr) -> Request<Full<Bytes>> {
        let (method, path, body) = match self {
            Self::Chat => ("POST", "/api/v1/chat/completions", CHAT_REQUEST),
            Self::Stream => ("POST", "/api/v1/stream", CHAT_REQUEST),
        };
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", host.to_string())
            .header("content-type", "application/json")
            .header("authorization", "Bearer placeholder")
            .header("user-agent", "OpenAI/Python 1.54.0")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }
}

struct Run {
    requests: usize,
    errors: usize,
    secs: f64,
    /// Microseconds per request, sorted.
    latencies: Vec<u32>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        f64::from(self.latencies[i])
    }
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// `conns` keep-alive connections sending requests back to back for `secs`, after a warm-up.
async fn load(addr: SocketAddr, scenario: Scenario, conns: usize, secs: f64) -> Run {
    let warm = Instant::now() + Duration::from_millis(500);
    let end = warm + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut send = connect(addr).await;
            let (mut lat, mut errors) = (Vec::with_capacity(1 << 16), 0usize);
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                if send.ready().await.is_err() {
                    send = connect(addr).await;
                    errors += 1;
                    continue;
                }
                let ok = match send.send_request(scenario.request(addr)).await {
                    Ok(resp) => resp.status() == 200 && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    errors += 1;
                } else if started >= warm {
                    lat.push(started.elapsed().as_micros() as u32);
                }
            }
            (lat, errors)
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        secs,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (lat, errors) = t.await.unwrap();
        run.requests += lat.len();
        run.errors += errors;
        run.latencies.extend(lat);
    }
    run.latencies.sort_unstable();
    run
}

/// Time from sending a stream request to its first body byte, at one connection.
async fn first_byte(addr: SocketAddr, n: usize) -> Vec<u32> {
    let mut send = connect(addr).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 200 {
        send.ready().await.unwrap();
        let started = Instant::now();
        let resp = send
            .send_request(Scenario::Stream.request(addr))
            .await
            .unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        if i >= 200 {
            out.push(started.elapsed().as_micros() as u32);
        }
        while body.frame().await.is_some() {}
    }
    out.sort_unstable();
    out
}

// ---------------------------------------------------------------------------------------------
// The proxies

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {addr}");
}

struct Proxy {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGINT, so that a profiler wrapping keyproxy writes its data out.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn keyproxy(upstream: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keyproxy.toml"),
        format!("keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"http://{upstream}\"\nprofile = \"p\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!("[profiles.p]\nkey = \"{KEY}\"\n"),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // KEYPROXY_BENCH_WRAP runs keyproxy under a profiler: "perf record -g -o kp.perf --".
    let wrap = std::env::var("KEYPROXY_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_keyproxy"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_keyproxy")),
    };
    let child = command
        .arg("--config")
        .arg(dir.path().join("keyproxy.toml"))
        .args(["serve", "--listen", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(addr).await;
    Proxy {
        name: "keyproxy",
        addr,
        child,
        _dir: dir,
    }
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

async fn nginx(upstream: SocketAddr) -> Option<Proxy> {
    if !on_path("nginx") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "worker_processes auto; daemon off; pid {d}/nginx.pid; error_log /dev/null crit;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  keepalive_requests 10000000;
  upstream up {{ server {upstream}; keepalive 256; keepalive_requests 10000000; }}
  server {{
    listen {addr};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Authorization \"Bearer {KEY}\";
      proxy_buffering off;
    }}
  }}
}}"
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(addr).await;
    Some(Proxy {
        name: "nginx",
        addr,
        child,
        _dir: dir,
    })
}

async fn haproxy(upstream: SocketAddr) -> Option<Proxy> {
    if !on_path("haproxy") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        dir.path().join("haproxy.cfg"),
        format!(
            "global
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend f
  bind {addr}
  http-request set-header Authorization \"Bearer {KEY}\"
  default_backend b
backend b
  server s {upstream}
"
        ),
    )
    .unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(dir.path().join("haproxy.cfg"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(addr).await;
    Some(Proxy {
        name: "haproxy",
        addr,
        child,
        _dir: dir,
    })
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------

fn line(name: &str, run: &Run, direct: &Run) {
    println!(
        "  {name:<9} {:>9.0} req/s ({:>5.2} of direct)   p50 {:>7.0} us   p99 {:>7.0} us   (+{:.0} / +{:.0} us)   errors {}",
        run.rps(),
        run.rps() / direct.rps(),
        run.pct(0.50),
        run.pct(0.99),
        run.pct(0.50) - direct.pct(0.50),
        run.pct(0.99) - direct.pct(0.99),
        run.errors
    );
}

fn main() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let secs: f64 = std::env::var("KEYPROXY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // The mock and the load generator get one thread each; keyproxy, nginx and haproxy choose
    // their own (two on a two-core machine). Everything shares the same cores.
    let mock_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let up = mock_rt.block_on(mock());
    let upstream = up.addr;

    rt.block_on(async {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("keyproxy end-to-end benchmark: {cores} cores, {secs} s per run, mock upstream {upstream}");
        let kp = keyproxy(upstream).await;
        let idle = rss_kib(kp.child.id(), "VmRSS:");
        let mut others = Vec::new();
        if let Some(p) = nginx(upstream).await {
            others.push(p);
        }
        if let Some(p) = haproxy(upstream).await {
            others.push(p);
        }
        if others.is_empty() {
            println!("  (nginx and haproxy not on PATH: apt-get install nginx haproxy to compare)");
        }

        let only = std::env::var("KEYPROXY_BENCH_ONLY").unwrap_or_default();
        for (title, scenario) in [("chat completions, 64 connections", Scenario::Chat), ("SSE streams of 20 events, 64 connections", Scenario::Stream)] {
            if !only.is_empty() && !title.contains(only.as_str()) {
                continue;
            }
            println!("{title}");
            let direct = load(upstream, scenario, 64, secs).await;
            println!(
                "  {:<9} {:>9.0} req/s                     p50 {:>7.0} us   p99 {:>7.0} us   errors {}",
                "direct", direct.rps(), direct.pct(0.5), direct.pct(0.99), direct.errors
            );
            let before = up.connections.load(Ordering::Relaxed);
            let run = load(kp.addr, scenario, 64, secs).await;
            let opened = up.connections.load(Ordering::Relaxed) - before;
            line("keyproxy", &run, &direct);
            let mut best: Option<(&str, f64)> = None;
            for p in &others {
                let r = load(p.addr, scenario, 64, secs).await;
                line(p.name, &r, &direct);
                if best.is_none_or(|(_, b)| r.rps() > b) {
                    best = Some((p.name, r.rps()));
                }
            }
            if let Some((name, rps)) = best {
                println!("  keyproxy / best of nginx, haproxy ({name}): {:.2}", run.rps() / rps);
            }
            println!("  upstream connections keyproxy opened: {opened} for 64 client connections");
        }

        println!("latency at one connection, chat completions");
        let direct = load(upstream, Scenario::Chat, 1, secs).await;
        println!(
            "  {:<9} {:>9.0} req/s                     p50 {:>7.0} us   p99 {:>7.0} us",
            "direct", direct.rps(), direct.pct(0.5), direct.pct(0.99)
        );
        line("keyproxy", &load(kp.addr, Scenario::Chat, 1, secs).await, &direct);
        for p in &others {
            line(p.name, &load(p.addr, Scenario::Chat, 1, secs).await, &direct);
        }

        println!("time to first byte of a stream, one connection, 2000 streams");
        let d = first_byte(upstream, 2000).await;
        let k = first_byte(kp.addr, 2000).await;
        let pct = |v: &[u32], p: f64| f64::from(v[((v.len() as f64 * p) as usize).min(v.len() - 1)]);
        println!("  direct    p50 {:>6.0} us   p99 {:>6.0} us", pct(&d, 0.5), pct(&d, 0.99));
        println!(
            "  keyproxy  p50 {:>6.0} us   p99 {:>6.0} us   (+{:.0} / +{:.0} us)",
            pct(&k, 0.5),
            pct(&k, 0.99),
            pct(&k, 0.5) - pct(&d, 0.5),
            pct(&k, 0.99) - pct(&d, 0.99)
        );

        println!("keyproxy memory (resident set)");
        println!("  idle at start: {:.1} MiB", idle as f64 / 1024.0);
        let opened = Arc::new(AtomicUsize::new(0));
        let all_open = Arc::new(Notify::new());
        let mut streams = Vec::new();
        for _ in 0..1000 {
            let (opened, all_open) = (opened.clone(), all_open.clone());
            let addr = kp.addr;
            streams.push(tokio::spawn(async move {
                let mut send = connect(addr).await;
                send.ready().await.unwrap();
                let mut req = Scenario::Stream.request(addr);
                *req.uri_mut() = "/api/v1/hold".parse().unwrap();
                let resp = send.send_request(req).await.unwrap();
                let mut body = resp.into_body();
                body.frame().await.unwrap().unwrap();
                if opened.fetch_add(1, Ordering::Relaxed) + 1 == 1000 {
                    all_open.notify_one();
                }
                while body.frame().await.is_some() {}
            }));
        }
        all_open.notified().await;
        let busy = rss_kib(kp.child.id(), "VmRSS:");
        let peak = rss_kib(kp.child.id(), "VmHWM:");
        println!("  with 1000 open streams: {:.1} MiB (peak so far {:.1} MiB)", busy as f64 / 1024.0, peak as f64 / 1024.0);
        // Each held stream waits for one notification.
        for _ in 0..1000 {
            up.release.notify_one();
        }
        for s in streams {
            let _ = s.await;
        }
        drop(others);
        drop(kp);
    });
}
