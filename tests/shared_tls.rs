//! `[shared]` over TLS: a real redis-server listening only on its TLS port with a certificate
//! from a CA made for the run (rcgen), and a password. keyproxy reaches it through rustls with
//! `rediss://` and `ca_file`, two replicas share a budget through it, and without the CA the
//! store is refused, named by host:port, and the password appears in no output at any level.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const TOKEN: &str = "kp-agent-0123456789abcdef01234";
const PASSWORD: &str = "tls-s3cret-pass-4f1c";
const ANSWER: &str =
    r#"{"model":"m","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,"cost":0.3}}"#;

/// redis-server with `--port 0 --tls-port PORT`: TLS only, so nothing gets through in clear.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `ca.pem` (the run's CA), and `cert.pem` and `key.pem` (for 127.0.0.1, signed by it).
fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "keyproxy redis test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

async fn tls_redis(dir: &Path) -> TlsRedis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = |name: &str| dir.join(name).display().to_string();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &file("cert.pem"),
            "--tls-key-file",
            &file("key.pem"),
        ])
        .args([
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args([
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "this spec needs a real redis-server on PATH (apt-get install redis-server): {e}"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "redis-server never listened on its TLS port"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TlsRedis { port, child }
}

/// A replica whose `[shared]` store is `rediss://` with the password from `$TEAM_REDIS_PASSWORD`;
/// `ca` is the `ca_file` line, or none.
async fn replica(upstream: &str, port: u16, ca: Option<&Path>, log: &str) -> (Served, Bin) {
    let bin = Bin::new();
    let dir = bin.config_dir();
    write_private(
        &dir.join("keys.toml"),
        &keys_toml("openrouter:default", KEY_A),
    );
    let ca_line = ca.map_or(String::new(), |p| {
        std::fs::copy(p, dir.join("redis-ca.pem")).unwrap();
        "ca_file = \"redis-ca.pem\"\n".to_owned()
    });
    let config = format!(
        "state_dir = \"state\"\nkeys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nprofile = \"openrouter:default\"\n[[clients]]\nname = \"agent\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\nbudget_usd = 1.0\nreserve_usd = 0.3\n[shared]\nredis = \"rediss://:$TEAM_REDIS_PASSWORD@127.0.0.1:{port}/0\"\ntimeout = \"1s\"\n{ca_line}"
    );
    std::fs::write(dir.join("keyproxy.toml"), config).unwrap();
    let mut cmd = bin.command();
    cmd.env("TEAM_REDIS_PASSWORD", PASSWORD)
        .env("RUST_LOG", log);
    (Served::start(cmd).await, bin)
}

async fn chat(url: &str) -> Reply {
    chat_as(url, TOKEN, "m").await
}

async fn status(url: &str) -> serde_json::Value {
    get_json_as(url, "/_keyproxy/status", TOKEN).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_is_shared_through_rediss_with_the_ca_file() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let redis = tls_redis(dir.path()).await;
        let up = Mock::start(Arc::new(|_| reply(200, ANSWER))).await;
        let ca = dir.path().join("ca.pem");
        let (a, _bin_a) = replica(&up.url, redis.port, Some(&ca), "info").await;
        let (b, _bin_b) = replica(&up.url, redis.port, Some(&ca), "info").await;
        // One at a time, in turn: 0.3 is spent per answer, a dollar in all whichever replica
        // answers, so the fifth is refused by both (alone, each would admit four).
        let mut statuses = Vec::new();
        for i in 0..6 {
            let url = if i % 2 == 0 { &a.url } else { &b.url };
            statuses.push(chat(url).await.status.as_u16());
        }
        assert_eq!(
            statuses,
            [200, 200, 200, 200, 429, 429],
            "through the TLS store"
        );
        assert_eq!(up.count(), 4);
        for s in [&a, &b] {
            let seen = status(&s.url).await;
            assert_eq!(seen["shared"]["reachable"], true, "{seen}");
        }
        for s in [a, b] {
            let (_, _, log) = s.stop().await;
            let log = log.join("\n");
            assert!(!log.contains(PASSWORD), "{log}");
            assert!(!log.contains("shared store unreachable"), "{log}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_its_ca_the_tls_store_is_refused_and_the_password_never_shown() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let redis = tls_redis(dir.path()).await;
        let up = Mock::start(ok_handler()).await;
        // The built-in roots do not hold the run's CA: the handshake fails, every level logged.
        let (served, bin) = replica(&up.url, redis.port, None, "trace").await;
        let store = format!("127.0.0.1:{}", redis.port);
        let started = Instant::now();
        let reply = chat(&served.url).await;
        assert!(started.elapsed() < Duration::from_millis(2500));
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.headers["x-keyproxy-error"], "limits-unavailable");
        assert!(reply.text().contains(&store), "{}", reply.text());
        let seen = status(&served.url).await;
        assert_eq!(seen["shared"]["reachable"], false, "{seen}");
        assert_eq!(up.count(), 0);

        let mut cmd = bin.command();
        cmd.env("TEAM_REDIS_PASSWORD", PASSWORD).arg("check");
        let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
        let shown = format!("{}{}", out.stdout, out.stderr);
        assert!(
            shown.contains(&format!("shared store: {store} (NOT reachable)")),
            "{shown}"
        );
        let (_, _, log) = served.stop().await;
        let everything = format!("{shown}{}{seen}{}", reply.text(), log.join("\n"));
        assert!(!everything.contains(PASSWORD), "{everything}");
    })
    .await;
}
