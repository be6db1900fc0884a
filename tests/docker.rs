//! docker/: no Docker engine runs here, so these run what the image and manifests would run:
//! the binary with the Dockerfile's ENTRYPOINT, CMD, ENV and HEALTHCHECK, the Compose and
//! Kubernetes configs, and the Kubernetes secret volume layout on disk.

mod support;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use support::*;
use tokio::io::AsyncBufReadExt;

fn docker_file(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docker")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

/// The Dockerfile's final stage: ENV, ENTRYPOINT + CMD, HEALTHCHECK's command, EXPOSE.
struct Image {
    env: BTreeMap<String, String>,
    run: Vec<String>,
    healthcheck: Vec<String>,
    expose: u16,
    build: Vec<String>,
}

fn image() -> Image {
    let (_, text) = docker_file("Dockerfile");
    let joined = text.replace("\\\n", " ");
    let mut image = Image {
        env: BTreeMap::new(),
        run: Vec::new(),
        healthcheck: Vec::new(),
        expose: 0,
        build: Vec::new(),
    };
    let json = |s: &str| -> Vec<String> { serde_json::from_str(s.trim()).unwrap() };
    let mut entrypoint = Vec::new();
    let mut cmd = Vec::new();
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
    {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instruction {
            "FROM" => image.env.clear(),
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').unwrap();
                    image.env.insert(k.into(), v.into());
                }
            }
            "ENTRYPOINT" => entrypoint = json(rest),
            "CMD" => cmd = json(rest),
            "HEALTHCHECK" => image.healthcheck = json(rest.split_once("CMD").unwrap().1),
            "EXPOSE" => image.expose = rest.trim().parse().unwrap(),
            "RUN" if rest.contains("cargo build") => image.build.push(rest.to_owned()),
            _ => {}
        }
    }
    image.run = entrypoint.into_iter().chain(cmd).collect();
    image
}

#[test]
fn the_dockerfile_builds_like_ci_and_exposes_what_it_listens_on() {
    let image = image();
    assert!(
        image
            .build
            .iter()
            .all(|b| b.contains("cargo build --release --locked")),
        "{:?}",
        image.build
    );
    assert_eq!(image.run[0], "/usr/local/bin/keyproxy");
    assert_eq!(image.healthcheck, ["/usr/local/bin/keyproxy", "health"]);
    let listen: std::net::SocketAddr = image.env["KEYPROXY_LISTEN"].parse().unwrap();
    assert_eq!(listen.port(), image.expose);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_with_its_own_arguments_environment_and_health_check() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let image = image();
        // The image's file system, rebased into a temporary folder: /etc/keyproxy is mounted.
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc/keyproxy");
        std::fs::create_dir_all(&etc).unwrap();
        let token = "kp-image-test-0123456789abcdef";
        std::fs::write(
            etc.join("keyproxy.toml"),
            format!("keys_files = [\"keys.toml\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nprofile = \"p\"\n[[clients]]\nname = \"agent\"\ntoken = \"{token}\"\nprofiles = [\"p\"]\n", up.url),
        )
        .unwrap();
        write_private(&etc.join("keys.toml"), &keys_toml("p", KEY_A));
        // The image's port may be taken on this machine; everything else is as the image says.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let with_image_env = |args: &[String]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyproxy"));
            cmd.env_clear().current_dir(root.path()).args(args);
            for (k, v) in &image.env {
                let v = match k.as_str() {
                    "XDG_CONFIG_HOME" => root.path().join(v.trim_start_matches('/')).display().to_string(),
                    "KEYPROXY_LISTEN" => v.replace(&format!(":{}", image.expose), &format!(":{port}")),
                    _ => v.clone(),
                };
                cmd.env(k, v);
            }
            cmd
        };

        // ENTRYPOINT + CMD, less the program itself.
        let mut served = {
            let mut cmd = with_image_env(&image.run[1..]);
            cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
            let mut cmd = tokio::process::Command::from(cmd);
            cmd.kill_on_drop(true);
            cmd.spawn().unwrap()
        };
        let mut stderr = tokio::io::BufReader::new(served.stderr.take().unwrap()).lines();
        while let Some(line) = stderr.next_line().await.unwrap() {
            assert_no_key(&line);
            serde_json::from_str::<serde_json::Value>(&line).expect("the image logs JSON");
            if line.contains("keyproxy is listening") {
                break;
            }
        }
        let url = format!("http://127.0.0.1:{port}");
        let health = with_image_env(&image.healthcheck[1..]);
        let out = tokio::task::spawn_blocking(move || run(health)).await.unwrap();
        assert_eq!(out.code, Some(0), "the HEALTHCHECK failed: {}", out.stderr);

        let reply = get(&format!("{url}/api/v1/models"), &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(up.received()[0].headers["authorization"], format!("Bearer {KEY_A}"));
        kill(served.id().unwrap(), "TERM");
        let status = served.wait().await.unwrap();
        assert_eq!(status.code(), Some(0));
    })
    .await;
}

#[test]
fn the_compose_config_needs_tokens_and_reads_the_docker_secret() {
    let (path, text) = docker_file("compose/keyproxy.toml");
    let config = keyproxy::config::parse(&text, &path).unwrap();
    assert!(
        !config.clients.is_empty(),
        "the image listens beyond loopback: clients are required"
    );
    let (keys_path, keys) = docker_file("compose/keys.toml");
    let keys = keyproxy::keys::parse_keys_file(&keys, &keys_path).unwrap();
    assert_eq!(
        keys.profiles["openrouter:default"].key_file.as_deref(),
        Some(Path::new("/run/secrets/openrouter_key"))
    );
    let (_, compose) = docker_file("compose.yaml");
    assert!(
        compose.contains("./compose:/etc/keyproxy:ro"),
        "the folder is mounted where the image looks"
    );
    assert!(compose.contains("http://keyproxy:8787/api/v1"));
}

#[tokio::test]
async fn the_kubernetes_sidecar_config_reloads_when_the_secret_is_applied() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let (_, text) = docker_file("kubernetes/keyproxy.toml");
        let (_, deployment) = docker_file("kubernetes/deployment.yaml");
        assert!(deployment.contains("mountPath: /var/run/keyproxy"));
        assert!(
            text.contains("listen = \"127.0.0.1:8787\""),
            "a sidecar listens on the pod's loopback"
        );

        // The manifest's mount point, rebased into a temporary folder; the upstream is the mock.
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().join("var/run/keyproxy");
        std::fs::create_dir_all(&mount).unwrap();
        kubernetes_secret_volume(
            &mount,
            "..2026_11_24_09_00_00.100",
            &keys_toml("openrouter:default", KEY_A),
        );
        let config = text
            .replace("/var/run/keyproxy", &mount.display().to_string())
            .replace(
                "provider = \"openrouter\"",
                &format!("provider = \"openrouter\"\nupstream = \"{}\"", up.url),
            );
        let proxy = Proxy::start(&format!("poll_interval = \"1h\"\n{config}"), &[]).await;
        assert_eq!(
            get(&format!("{}/_keyproxy/ready", proxy.url), &[])
                .await
                .status,
            200
        );

        kubernetes_secret_volume(
            &mount,
            "..2026_11_24_09_01_00.200",
            &keys_toml("openrouter:default", KEY_B),
        );
        proxy.wait_for_key("openrouter:default", FP_B).await;
        let reply = get(&format!("{}/api/v1/models", proxy.url), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            up.received()[0].headers["authorization"],
            format!("Bearer {KEY_B}")
        );
    })
    .await;
}
