//! End to end: a Rust mock upstream and a load generator in this process, keyproxy (the release
//! binary) as a separate process, and nginx and haproxy (when on PATH: `apt-get install nginx
//! haproxy`) configured to do the same job, all on the same machine. Every scenario runs twice:
//! against a plain HTTP/1.1 mock, and against a TLS mock offering `h2` by ALPN (as providers do),
//! which each proxy verifies against the run's CA.
//!
//!   cargo bench --bench end_to_end
//!   KEYPROXY_BENCH_SECS=10 KEYPROXY_BENCH_ROUNDS=5 cargo bench --bench end_to_end
//!   KEYPROXY_BENCH_ONLY=paced cargo bench --bench end_to_end   # scenarios whose title matches
//!   KEYPROXY_BENCH_UPSTREAM=TLS cargo bench --bench end_to_end  # or plain
//!
//! Before merging a change to the request path, the quick mode (under a minute) beside the
//! previous commit's release binary:
//!
//!   KEYPROXY_BENCH_QUICK=1 KEYPROXY_BENCH_BASELINE=/tmp/keyproxy-old cargo bench --bench end_to_end
//!
//! It runs chat completions at 64 connections and at one, on both upstreams, 1 s rounds, with
//! keyproxy, the baseline build, the direct connection and nginx (haproxy too with
//! `KEYPROXY_BENCH_PEERS=all`), and prints req/s, CPU per request and p50 beside each other.
//! `KEYPROXY_BENCH_LIMITED=1` adds this build serving a client with a budget, a token limit
//! and a model list, so the cost of the limits is a figure of the same run.
//! `KEYPROXY_BENCH_SHARED=1` adds that client twice: alone (`limited`) and with its windows in a
//! real redis-server on loopback (`shared`, `[shared]`; `apt-get install redis-server`), so the
//! cost of sharing is `shared` against `limited`, with the store's own CPU per request beside it:
//!
//!   KEYPROXY_BENCH_QUICK=1 KEYPROXY_BENCH_SHARED=1 KEYPROXY_BENCH_ROUNDS=7 cargo bench --bench end_to_end
//!
//! `KEYPROXY_BENCH_SHARED_BASELINE=/tmp/keyproxy-old` adds that build with `[shared]` too
//! (`shared-base`, its own redis-server), to measure a change to the shared path itself.
//!
//! Each figure is the median of `KEYPROXY_BENCH_ROUNDS` (3) interleaved rounds — direct,
//! keyproxy, nginx, haproxy, then again — with the spread (lowest to highest) beside it.
//! Scenarios: chat completions and SSE streams of 20 events at 64 keep-alive connections (with
//! upstream handshakes and CPU per request); 256 paced streams of 20 events 25 ms apart (added
//! delay per event); latency at one connection; time to first byte; resident memory idle and
//! with 1,000 open streams, over TLS to an upstream allowing 100 streams per connection.

#[path = "e2e/load.rs"]
mod load;
#[path = "e2e/mock.rs"]
mod mock;
#[path = "e2e/proxies.rs"]
mod proxies;
#[path = "../tests/support/tls.rs"]
mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::sync::Notify;

use load::{connect, first_byte, load, pct, Run, Scenario, Target};
use mock::Mock;
use proxies::{
    cpu_micros, haproxy, keyproxy, keyproxy_at, keyproxy_limited, keyproxy_shared, nginx, rss_kib,
    Proxy,
};

const KEY: &str = "sk-or-v1-bench0000000000000000000000000000000000000000000968304f4";

/// The quick mode: fewer scenarios and shorter rounds, for a check before every merge.
fn quick() -> bool {
    std::env::var_os("KEYPROXY_BENCH_QUICK").is_some()
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One target's figures over the rounds.
#[derive(Default)]
struct Rounds {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    delay50: Vec<f64>,
    delay99: Vec<f64>,
    handshakes: Vec<f64>,
    cpu_us: Vec<f64>,
    /// CPU per request of the proxy's store (redis-server), where it has one.
    store_cpu_us: Vec<f64>,
    errors: usize,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

impl Rounds {
    fn add(&mut self, run: &Run, handshakes: usize, cpu_us: Option<f64>) {
        self.rps.push(run.rps());
        self.p50.push(run.pct(0.5));
        self.p99.push(run.pct(0.99));
        self.delay50.push(pct(&run.delays, 0.5));
        self.delay99.push(pct(&run.delays, 0.99));
        self.handshakes.push(handshakes as f64);
        if let Some(cpu) = cpu_us {
            self.cpu_us.push(cpu);
        }
        self.errors += run.errors;
    }
}

struct Targets<'a> {
    direct: Target,
    proxies: Vec<&'a Proxy>,
}

/// Runs `scenario` on every target, `rounds` times interleaved, and prints the medians.
async fn compare(title: &str, up: &Mock, targets: &Targets<'_>, scenario: Scenario, conns: usize) {
    let (secs, rounds): (f64, usize) = (
        env("KEYPROXY_BENCH_SECS", if quick() { 1.0 } else { 3.0 }),
        env("KEYPROXY_BENCH_ROUNDS", 3),
    );
    let only: String = env("KEYPROXY_BENCH_ONLY", String::new());
    if !only.is_empty() && !title.contains(only.as_str()) {
        return;
    }
    if quick() && !title.starts_with("chat completions") && !title.starts_with("latency") {
        return;
    }
    println!("{title}");
    let mut direct = Rounds::default();
    let mut through: Vec<Rounds> = targets.proxies.iter().map(|_| Rounds::default()).collect();
    for _ in 0..rounds {
        let before = up.connections();
        let run = load(&targets.direct, scenario, conns, secs).await;
        direct.add(&run, up.connections() - before, None);
        for (proxy, rounds) in targets.proxies.iter().zip(through.iter_mut()) {
            let (before, cpu) = (up.connections(), cpu_micros(proxy.child.id()));
            let store = proxy.store.as_ref().map(|s| cpu_micros(s.id()));
            let run = load(&Target::Plain(proxy.addr), scenario, conns, secs).await;
            let per_request = |micros: u64| micros as f64 / run.requests.max(1) as f64;
            rounds.add(
                &run,
                up.connections() - before,
                Some(per_request(cpu_micros(proxy.child.id()) - cpu)),
            );
            if let (Some(s), Some(before)) = (&proxy.store, store) {
                rounds
                    .store_cpu_us
                    .push(per_request(cpu_micros(s.id()) - before));
            }
        }
    }
    let paced = matches!(scenario, Scenario::Paced);
    let row = |name: &str, r: &Rounds| {
        let mut line = format!(
            "  {name:<9} {:>8.0} req/s ({:>11})  p50 {:>7.0} us  p99 {:>7.0} us",
            median(&r.rps),
            spread(&r.rps),
            median(&r.p50),
            median(&r.p99)
        );
        if paced {
            line += &format!(
                "  event delay p50 {:>5.0} us p99 {:>6.0} us",
                median(&r.delay50),
                median(&r.delay99)
            );
        }
        if !r.cpu_us.is_empty() {
            line += &format!(
                "  cpu {:>5.1} us/req  upstream handshakes {:.0}",
                median(&r.cpu_us),
                median(&r.handshakes)
            );
        }
        if !r.store_cpu_us.is_empty() {
            line += &format!("  store cpu {:>4.1} us/req", median(&r.store_cpu_us));
        }
        if r.errors > 0 {
            line += &format!("  errors {}", r.errors);
        }
        println!("{line}");
    };
    row("direct", &direct);
    for (proxy, r) in targets.proxies.iter().zip(&through) {
        row(proxy.name, r);
    }
    let kp = median(&through[0].rps);
    for (proxy, other) in targets.proxies.iter().zip(&through) {
        let line = match proxy.name {
            "baseline" => "keyproxy against the baseline build",
            "limited" => "a limited client against none",
            "shared" => "the limited client with [shared] against it alone",
            "shared-base" => "[shared] in this build against the shared baseline build",
            _ => continue,
        };
        let alone = targets.proxies.iter().position(|p| p.name == "limited");
        let shared_at = targets.proxies.iter().position(|p| p.name == "shared");
        let (a, b) = match (proxy.name, alone) {
            ("baseline", _) => (&through[0], other),
            ("shared-base", _) => match shared_at {
                Some(i) => (&through[i], other),
                None => continue,
            },
            ("shared", Some(i)) => (other, &through[i]),
            _ => (other, &through[0]),
        };
        println!(
            "  {line}: {:.2} of its req/s, cpu {:+.1} us/req, p50 {:+.0} us",
            median(&a.rps) / median(&b.rps),
            median(&a.cpu_us) - median(&b.cpu_us),
            median(&a.p50) - median(&b.p50),
        );
    }
    let best = targets.proxies[1..]
        .iter()
        .zip(&through[1..])
        .filter(|(p, _)| !matches!(p.name, "baseline" | "limited" | "shared" | "shared-base"))
        .map(|(p, r)| (p.name, median(&r.rps)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        Some((name, rps)) => {
            let (a, b) = match paced {
                true => (&through[0].delay50, &through[0].delay99),
                false => (&through[0].p50, &through[0].p99),
            };
            let (c, d) = match paced {
                true => (&direct.delay50, &direct.delay99),
                false => (&direct.p50, &direct.p99),
            };
            println!(
                "  keyproxy: {:.2} of direct, {:.2} of the best peer ({name}); added {}p50 {:+.0} us, p99 {:+.0} us",
                kp / median(&direct.rps),
                kp / rps,
                if paced { "delay per event " } else { "" },
                median(a) - median(c),
                median(b) - median(d),
            )
        }
        None => println!("  keyproxy: {:.2} of direct", kp / median(&direct.rps)),
    }
}

/// Opens `n` streams that stay open upstream, and returns keyproxy's resident set once all have
/// their first byte (or after 20 s, saying how many did).
async fn open_streams(kp: &Proxy, up: &Mock, n: usize) -> (f64, usize) {
    let opened = Arc::new(AtomicUsize::new(0));
    let all_open = Arc::new(Notify::new());
    let mut streams = Vec::new();
    for _ in 0..n {
        let (opened, all_open) = (opened.clone(), all_open.clone());
        let addr = kp.addr;
        streams.push(tokio::spawn(async move {
            let mut send = connect(&Target::Plain(addr)).await;
            send.ready().await.unwrap();
            let resp = send.send_request(Scenario::Hold.request(addr)).await;
            let Ok(resp) = resp else { return };
            let mut body = resp.into_body();
            if matches!(body.frame().await, Some(Ok(_)))
                && opened.fetch_add(1, Ordering::Relaxed) + 1 == n
            {
                all_open.notify_one();
            }
            while body.frame().await.is_some() {}
        }));
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), all_open.notified()).await;
    let rss = rss_kib(kp.child.id(), "VmRSS:") as f64 / 1024.0;
    let open = opened.load(Ordering::Relaxed);
    for _ in 0..n {
        up.release.notify_one();
    }
    for s in streams {
        let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
    }
    (rss, open)
}

fn main() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // The mock and the load generator get one thread each; keyproxy, nginx and haproxy choose
    // their own (two on a two-core machine). Everything shares the same cores.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let (mock_rt, rt) = (runtime(), runtime());
    let dir = tempfile::tempdir().unwrap();
    let plain = mock_rt.block_on(mock::start(None));
    let tls = mock_rt.block_on(mock::start(Some((256, dir.path()))));
    let tls_dir = tempfile::tempdir().unwrap();
    let tls100 = mock_rt.block_on(mock::start(Some((100, tls_dir.path()))));

    rt.block_on(async {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "keyproxy end-to-end benchmark: {cores} cores, {} s per run, median of {} rounds (spread in brackets)",
            env("KEYPROXY_BENCH_SECS", if quick() { 1.0 } else { 3.0 }),
            env("KEYPROXY_BENCH_ROUNDS", 3)
        );
        let only: String = env("KEYPROXY_BENCH_ONLY", String::new());
        let upstreams: String = env("KEYPROXY_BENCH_UPSTREAM", String::new());
        for (label, up) in [("plain HTTP/1.1 upstream", &plain), ("TLS upstream, h2 by ALPN, 256 streams per connection", &tls)] {
            if !upstreams.is_empty() && !label.starts_with(upstreams.as_str()) {
                continue;
            }
            let kp = keyproxy(up).await;
            let idle = rss_kib(kp.child.id(), "VmRSS:");
            let mut peers = Vec::new();
            if let Ok(binary) = std::env::var("KEYPROXY_BENCH_BASELINE") {
                peers.push(keyproxy_at(up, "baseline", &binary, "").await);
            }
            // KEYPROXY_BENCH_LIMITED=1: the same build for a client with limits beside it.
            let shared = std::env::var_os("KEYPROXY_BENCH_SHARED").is_some();
            if shared || std::env::var_os("KEYPROXY_BENCH_LIMITED").is_some() {
                peers.push(keyproxy_limited(up).await);
            }
            // KEYPROXY_BENCH_SHARED=1: and that client with [shared] and a redis-server.
            if shared {
                match keyproxy_shared(up, "shared", env!("CARGO_BIN_EXE_keyproxy")).await {
                    Some(p) => peers.push(p),
                    None => println!("  (redis-server not on PATH: apt-get install redis-server)"),
                }
                // KEYPROXY_BENCH_SHARED_BASELINE: another build's release binary with [shared].
                if let Ok(binary) = std::env::var("KEYPROXY_BENCH_SHARED_BASELINE") {
                    peers.extend(keyproxy_shared(up, "shared-base", &binary).await);
                }
            }
            peers.extend(nginx(up).await);
            if !quick() || std::env::var("KEYPROXY_BENCH_PEERS").as_deref() == Ok("all") {
                peers.extend(haproxy(up).await);
            }
            println!("== {label}; keyproxy idle resident set {:.1} MiB", idle as f64 / 1024.0);
            if peers.is_empty() {
                println!("  (nginx and haproxy not on PATH: apt-get install nginx haproxy to compare)");
            }
            let direct = match &up.ca {
                Some(ca) => Target::tls(up.addr, ca),
                None => Target::Plain(up.addr),
            };
            let targets = Targets {
                direct,
                proxies: std::iter::once(&kp).chain(peers.iter()).collect(),
            };
            compare("chat completions, 64 connections", up, &targets, Scenario::Chat, 64).await;
            compare("SSE streams of 20 events, 64 connections", up, &targets, Scenario::Stream, 64).await;
            compare("paced streams: 256 of 20 events 25 ms apart", up, &targets, Scenario::Paced, 256).await;
            compare("latency at one connection, chat completions", up, &targets, Scenario::Chat, 1).await;

            if up.ca.is_none() && !quick() && (only.is_empty() || only.contains("memory")) {
                println!("time to first byte of a stream, one connection, 2000 streams");
                let d = first_byte(&targets.direct, 2000).await;
                let k = first_byte(&Target::Plain(kp.addr), 2000).await;
                println!("  direct    p50 {:>6.0} us   p99 {:>6.0} us", pct(&d, 0.5), pct(&d, 0.99));
                println!(
                    "  keyproxy  p50 {:>6.0} us   p99 {:>6.0} us   (+{:.0} / +{:.0} us)",
                    pct(&k, 0.5),
                    pct(&k, 0.99),
                    pct(&k, 0.5) - pct(&d, 0.5),
                    pct(&k, 0.99) - pct(&d, 0.99)
                );
                // A fresh process: the runs above leave their high-water mark in the allocator.
                let fresh = keyproxy(up).await;
                let (rss, open) = open_streams(&fresh, up, 1000).await;
                println!("keyproxy with 1000 open streams: {rss:.1} MiB, {open} open at once");
            }
        }
        if quick() || (!only.is_empty() && !only.contains("memory")) {
            return;
        }
        let kp = keyproxy(&tls100).await;
        let (rss, open) = open_streams(&kp, &tls100, 1000).await;
        println!(
            "keyproxy with 1000 open streams over TLS, upstream allowing 100 streams per connection: {rss:.1} MiB, {open} open at once over {} upstream connections",
            tls100.connections()
        );
    });
}
