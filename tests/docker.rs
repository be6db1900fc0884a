//! docker/: the image itself is built and run in a real engine by docker/smoke.sh (minutes; not
//! in CI). These run in seconds what can go wrong without an engine: the Dockerfile's dependency
//! recipe covers every target Cargo.toml declares and everything it copies is in the build
//! context; the binary runs with the image's ENTRYPOINT, CMD, ENV and HEALTHCHECK; the Compose
//! and Kubernetes configs load; the Kubernetes secret volume layout on disk reloads.

#[path = "docker/dockerfile.rs"]
mod dockerfile;
mod support;
use std::path::Path;

use dockerfile::*;
use support::*;
use tokio::io::AsyncBufReadExt;

/// The bug this catches: a target added to Cargo.toml (a bench, once) that the dependency layer
/// has no file for, so `cargo build` in the image fails on a manifest that builds everywhere
/// else. The recipe stage is reproduced here: its context files copied, docker/recipe.sh run.
#[cfg(unix)]
#[test]
fn the_dependency_recipe_has_a_stub_for_every_target_cargo_toml_declares() {
    let recipe = stage("recipe");
    assert!(
        recipe
            .runs()
            .any(|r| r.starts_with("keyproxy-recipe /recipe")),
        "the recipe stage runs docker/recipe.sh"
    );
    let build = stage("build");
    let (_, from_recipe, _) = build.copies().remove(0);
    assert_eq!(
        from_recipe,
        ["/recipe/"],
        "the build stage starts from the recipe"
    );
    let deps = build.runs().next().unwrap();
    assert!(deps.starts_with("cargo build --release --locked"), "{deps}");

    let context = tempfile::tempdir().unwrap();
    for source in recipe.context_sources() {
        copy_tree(&repo().join(&source), &context.path().join(&source));
    }
    let out = context.path().join("recipe-out");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg(repo().join("docker/recipe.sh"))
        .arg(&out)
        .current_dir(context.path());
    if let Some(cargo) = std::env::var_os("CARGO") {
        let dir = Path::new(&cargo).parent().unwrap().to_owned();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let paths = std::iter::once(dir).chain(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).unwrap());
    }
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "docker/recipe.sh failed: {}", ran.stderr);
    for file in ["Cargo.toml", "Cargo.lock"] {
        let original = std::fs::read(repo().join(file)).unwrap();
        assert_eq!(std::fs::read(out.join(file)).unwrap(), original, "{file}");
    }
    let targets = declared_targets();
    assert!(targets.iter().any(|(kind, _)| kind.starts_with("bench")));
    for (kind, path) in &targets {
        assert!(
            out.join(path).is_file(),
            "Cargo.toml's {kind} ({}) has no stub in the image's dependency recipe: COPY its folder \
             in the recipe stage of docker/Dockerfile",
            path.display()
        );
    }
    // What the image is built from: the real sources of the library, binaries and build script.
    let real = build.context_sources();
    for (kind, path) in targets.iter().filter(|(k, _)| {
        !k.starts_with("bench") && !k.starts_with("test") && !k.starts_with("example")
    }) {
        assert!(
            covered(&real, path),
            "the build stage of docker/Dockerfile would compile the stub of {kind} ({})",
            path.display()
        );
    }
}

/// `.dockerignore` admits only what the image is built from (`*`, then `!path` lines); a COPY
/// of anything else fails in the engine, not here, unless this checks it.
#[test]
fn every_file_the_dockerfile_copies_exists_and_is_in_the_build_context() {
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        patterns.first(),
        Some(&"*"),
        "an allowlist: everything else stays out"
    );
    let admitted: Vec<String> = patterns[1..]
        .iter()
        .map(|p| {
            p.strip_prefix('!')
                .expect("only !path lines after *")
                .to_owned()
        })
        .collect();
    let sources: Vec<String> = stages().iter().flat_map(Stage::context_sources).collect();
    assert!(sources.len() >= 4, "{sources:?}");
    for source in &sources {
        assert!(
            repo().join(source).exists(),
            "docker/Dockerfile copies {source}, which does not exist"
        );
        assert!(
            covered(&admitted, Path::new(source)),
            "docker/Dockerfile copies {source}, which .dockerignore keeps out of the build context"
        );
    }
}

#[test]
fn the_dockerfile_builds_like_ci_and_exposes_what_it_listens_on() {
    let builds: Vec<String> = stages()
        .iter()
        .flat_map(|s| s.runs().map(str::to_owned).collect::<Vec<_>>())
        .filter(|r| r.contains("cargo build"))
        .collect();
    assert_eq!(builds.len(), 2, "the dependencies, then keyproxy");
    assert!(
        builds
            .iter()
            .all(|b| b.contains("cargo build --release --locked")),
        "{builds:?}"
    );
    let image = image();
    assert_eq!(image.run[0], "/usr/local/bin/keyproxy");
    assert_eq!(image.healthcheck, ["/usr/local/bin/keyproxy", "health"]);
    let listen: std::net::SocketAddr = image.env["KEYPROXY_LISTEN"].parse().unwrap();
    assert_eq!(listen.port(), image.expose);
    assert_eq!(
        image.user, "65532:65532",
        "numeric, so Kubernetes can verify runAsNonRoot"
    );
    assert_eq!(
        image.volumes,
        [image.env["XDG_STATE_HOME"].clone()],
        "usage is kept on the volume"
    );
    for label in ["title", "version=\"${VERSION}\"", "revision", "licenses"] {
        assert!(
            image
                .labels
                .contains(&format!("org.opencontainers.image.{label}")),
            "{label}"
        );
    }
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
                    "XDG_CONFIG_HOME" | "XDG_STATE_HOME" => root.path().join(v.trim_start_matches('/')).display().to_string(),
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
        // Usage went to the state volume, which `--read-only` leaves writable.
        let volume = root.path().join(image.volumes[0].trim_start_matches('/'));
        assert!(volume.join("keyproxy/usage.sqlite3").is_file(), "usage is not on the volume");
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
    for line in [
        "read_only: true",
        "- keyproxy-state:/state",
        "user: \"65532:${KEYPROXY_GID",
    ] {
        assert!(compose.contains(line), "compose.yaml: {line}");
    }
}

#[tokio::test]
async fn the_kubernetes_sidecar_config_reloads_when_the_secret_is_applied() {
    bounded(async {
        let up = Mock::start(ok_handler()).await;
        let (_, text) = docker_file("kubernetes/keyproxy.toml");
        let (_, deployment) = docker_file("kubernetes/deployment.yaml");
        assert!(deployment.contains("mountPath: /var/run/keyproxy"));
        // User 65532 reads the Secret through its group, and writes usage to the emptyDir only.
        for line in [
            "fsGroup: 65532",
            "defaultMode: 0440",
            "readOnlyRootFilesystem: true",
            "mountPath: /state",
            "emptyDir: {}",
        ] {
            assert!(deployment.contains(line), "deployment.yaml: {line}");
        }
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
