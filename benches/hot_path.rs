//! The request path without I/O, on a realistic request from the OpenAI Python SDK: route
//! match, profile choice (with and without client tokens), key pick and header rewrite with the
//! injected key. Run with `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::request::Parts;
use http::Request;
use keyproxy::ops::reload::Reloader;
use keyproxy::proxy::plan;

const KEY: &str = "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef968304f4";
const TOKEN: &str = "kp-bench-0123456789abcdef0123456789";

fn snapshot(dir: &Path, clients: bool) -> Reloader {
    let mut config = String::from(
        "keys_files = [\"keys.toml\"]\n\
         [[routes]]\nprefix = \"/\"\nprovider = \"openrouter\"\n\
         [[routes]]\nprefix = \"/anthropic\"\nstrip_prefix = true\nprovider = \"anthropic\"\n\
         [[routes]]\nprefix = \"/openai\"\nstrip_prefix = true\nprovider = \"openai\"\n",
    );
    if clients {
        config += &format!(
            "[[clients]]\nname = \"agent\"\ntoken = \"{TOKEN}\"\nprofiles = [\"openrouter:default\"]\n"
        );
    }
    std::fs::write(dir.join("keyproxy.toml"), config).unwrap();
    std::fs::write(
        dir.join("keys.toml"),
        format!("[profiles.\"openrouter:default\"]\nkeys = [\"{KEY}\", \"{KEY}x\"]\n[profiles.\"anthropic:default\"]\nkey = \"{KEY}\"\n"),
    )
    .unwrap();
    Reloader::start(keyproxy::Origin::File(dir.join("keyproxy.toml"))).unwrap()
}

/// What the OpenAI Python SDK sends for a chat completion.
fn sdk_request(authorization: &str) -> Parts {
    Request::post("/api/v1/chat/completions")
        .header("host", "127.0.0.1:8787")
        .header("accept-encoding", "gzip, deflate")
        .header("connection", "keep-alive")
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("user-agent", "OpenAI/Python 1.54.0")
        .header("x-stainless-lang", "python")
        .header("x-stainless-package-version", "1.54.0")
        .header("x-stainless-os", "Linux")
        .header("x-stainless-arch", "x64")
        .header("x-stainless-runtime", "CPython")
        .header("x-stainless-runtime-version", "3.11.7")
        .header("authorization", authorization)
        .header("x-stainless-retry-count", "0")
        .header("content-length", "187")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let open = snapshot(dir.path(), false);
    let open = open.state().load();
    let gated_dir = tempfile::tempdir().unwrap();
    let gated = snapshot(gated_dir.path(), true);
    let gated = gated.state().load();

    c.bench_function("route match", |b| {
        b.iter(|| open.routes.find(black_box("/api/v1/chat/completions")))
    });
    c.bench_function("plan: route, profile, key, headers", |b| {
        b.iter_batched_ref(
            || sdk_request("Bearer placeholder"),
            |parts| {
                plan(&open, black_box(parts))
                    .map(|p| p.key.fingerprint().len())
                    .ok()
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("plan with a client token", |b| {
        let auth = format!("Bearer {TOKEN}");
        b.iter_batched_ref(
            || sdk_request(&auth),
            |parts| {
                plan(&gated, black_box(parts))
                    .map(|p| p.key.fingerprint().len())
                    .ok()
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("parse the request head (baseline hyper pays anyway)", |b| {
        b.iter(|| black_box(sdk_request("Bearer placeholder")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
