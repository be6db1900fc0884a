//! The proxies under test, each configured to do keyproxy's job (set `Authorization`, stream
//! through) in front of the same mock: keyproxy (the release binary), and nginx and haproxy
//! when they are on PATH. Over a TLS mock each verifies its certificate against the run's CA;
//! haproxy offers `h2` by ALPN as keyproxy does, nginx speaks HTTP/1.1 to upstreams.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::mock::Mock;
use crate::KEY;

pub struct Proxy {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub child: Child,
    /// A process this proxy needs and that dies with it: the redis-server of `shared`.
    pub store: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGINT, so that a profiler wrapping keyproxy writes its data out.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if let Some(store) = &mut self.store {
            let _ = store.kill();
            let _ = store.wait();
        }
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
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

pub async fn keyproxy(up: &Mock) -> Proxy {
    keyproxy_at(up, "keyproxy", env!("CARGO_BIN_EXE_keyproxy"), "").await
}

/// The token every load request carries (`Authorization: Bearer ...`): ignored where no
/// clients are configured, the limited client's where they are.
pub const CLIENT_TOKEN: &str = "kp-bench-client-token-0001";

fn limited_client() -> String {
    format!(
        "[[clients]]\nname = \"bench\"\ntoken = \"{CLIENT_TOKEN}\"\nprofiles = [\"p\"]\nbudget_usd = 1000000.0\nreserve_usd = 0.01\ntokens_per_day = 1_000_000_000_000\nmodels = [\"openai/gpt-4o-mini\", \"anthropic/*\"]\n"
    )
}

/// This build with the requests coming from a client that has a budget, a token limit and a
/// model list: the cost of reading its body, checking its model, reserving and settling.
pub async fn keyproxy_limited(up: &Mock) -> Proxy {
    let client = limited_client();
    keyproxy_at(up, "limited", env!("CARGO_BIN_EXE_keyproxy"), &client).await
}

/// The limited client of [`keyproxy_limited`] with its windows in a real redis-server of its
/// own on loopback (`[shared]`): one more round trip per request to admit, one off the
/// response path to settle. `None` when redis-server is not on PATH. `name` and `binary`: this
/// build as `shared`, or the build of `KEYPROXY_BENCH_SHARED_BASELINE` as `shared-base`.
pub async fn keyproxy_shared(up: &Mock, name: &'static str, binary: &str) -> Option<Proxy> {
    if !on_path("redis-server") {
        return None;
    }
    let port = free_addr().port();
    let store = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let client = format!(
        "{}[shared]\nredis = \"redis://127.0.0.1:{port}/0\"\n",
        limited_client()
    );
    let mut proxy = keyproxy_at(up, name, binary, &client).await;
    proxy.store = Some(store);
    Some(proxy)
}

/// Another keyproxy build under the same load, named `name`: `KEYPROXY_BENCH_BASELINE` points at
/// the release binary of the commit a change is measured against.
pub async fn keyproxy_at(up: &Mock, name: &'static str, binary: &str, extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    // KEYPROXY_BENCH_USAGE=off measures keyproxy without usage accounting. Only what every
    // build since the first understands is written, so an old build can be the baseline; the
    // usage database goes to the run's folder through XDG_STATE_HOME.
    let usage = match std::env::var("KEYPROXY_BENCH_USAGE").as_deref() {
        Ok("off") => "usage = false\n",
        _ => "",
    };
    let ca = up
        .ca
        .as_ref()
        .map(|c| format!("ca_file = \"{}\"\n", c.display()))
        .unwrap_or_default();
    std::fs::write(
        dir.path().join("keyproxy.toml"),
        format!(
            "{usage}keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"p\"\n{ca}{extra}",
            up.url

        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!("[profiles.p]\nkey = \"{KEY}\"\n"),
    )
    .unwrap();
    let addr = free_addr();
    // KEYPROXY_BENCH_WRAP runs keyproxy under a profiler: "perf record -g -o kp.perf --".
    let wrap = std::env::var("KEYPROXY_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    command
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .arg("--config")
        .arg(dir.path().join("keyproxy.toml"))
        .args(["serve", "--listen", &addr.to_string()]);
    launch(name, command, addr, dir)
        .await
        .unwrap_or_else(|| panic!("{name} ({binary}) starts"))
}

/// Starts `command` quietly and waits until it listens on `addr`; `dir` lives as long as it.
async fn launch(
    name: &'static str,
    mut command: Command,
    addr: SocketAddr,
    dir: tempfile::TempDir,
) -> Option<Proxy> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(addr).await;
    Some(Proxy {
        name,
        addr,
        child,
        store: None,
        _dir: dir,
    })
}

pub fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub async fn nginx(up: &Mock) -> Option<Proxy> {
    if !on_path("nginx") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let d = dir.path().display();
    let upstream = up.addr;
    let (scheme, tls) = match &up.ca {
        Some(ca) => (
            "https",
            format!(
                "proxy_ssl_trusted_certificate {}; proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_server_name on; proxy_ssl_session_reuse on;",
                ca.display()
            ),
        ),
        None => ("http", String::new()),
    };
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
  upstream up {{ server {upstream}; keepalive 1024; keepalive_requests 10000000; }}
  server {{
    listen {addr};
    location / {{
      proxy_pass {scheme}://up;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Authorization \"Bearer {KEY}\";
      proxy_buffering off;
      {tls}
    }}
  }}
}}"
        ),
    )
    .unwrap();
    let mut command = Command::new("nginx");
    command.args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")]);
    launch("nginx", command, addr, dir).await
}

pub async fn haproxy(up: &Mock) -> Option<Proxy> {
    if !on_path("haproxy") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let upstream = up.addr;
    let tls = match &up.ca {
        Some(ca) => format!(
            " ssl verify required ca-file {} verifyhost localhost sni str(localhost) alpn h2,http/1.1",
            ca.display()
        ),
        None => String::new(),
    };
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
  # Streams events as they come instead of waiting to fill packets (SSE).
  option http-no-delay
frontend f
  bind {addr}
  http-request set-header Authorization \"Bearer {KEY}\"
  default_backend b
backend b
  server s {upstream}{tls}
"
        ),
    )
    .unwrap();
    let mut command = Command::new("haproxy");
    command
        .args(["-db", "-f"])
        .arg(dir.path().join("haproxy.cfg"));
    launch("haproxy", command, addr, dir).await
}

pub fn rss_kib(pid: u32, field: &str) -> u64 {
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

/// CPU time (user + system) a process and its children (nginx's workers) have used, in
/// microseconds.
pub fn cpu_micros(pid: u32) -> u64 {
    let own = |pid: &str| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // utime and stime are the 12th and 13th fields after the command's ")".
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0)
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let ticks = own(&pid.to_string()) + children.split_whitespace().map(own).sum::<u64>();
    // Clock ticks are 1/100 s on every common Linux configuration.
    ticks * 10_000
}
