//! `keyproxy serve` (the default): run the proxy until SIGTERM or SIGINT, reloading on SIGHUP.

use std::process::ExitCode;

use anyhow::Context as _;
use keyproxy::config::Origin;
use keyproxy::ops::reload::ReloadRequest;

pub fn serve(origin: Origin, listen: Option<std::net::SocketAddr>) -> ExitCode {
    // Accepting, reloading and signals; connections are served by the worker threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyproxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(origin, listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr through the log; a cause already in the message is not repeated.
            let (mut message, _) = keyproxy::proxy::causes(e.as_ref());
            if message.contains("Address already in use") {
                message += " (is another keyproxy running? `keyproxy health` asks it; `--listen 127.0.0.1:PORT` picks another port)";
            }
            tracing::error!("{message}");
            ExitCode::from(2)
        }
    }
}

async fn run(origin: Origin, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    match &origin {
        Origin::File(p) => tracing::info!(config = %p.display(), "loading config"),
        Origin::Embedded { .. } => {
            tracing::info!("no config file found; using the embedded default")
        }
    }
    let running = keyproxy::start(origin, listen)
        .await
        .context("cannot start")?;
    let snapshot = running.state.load();
    for route in snapshot.routes.iter() {
        tracing::info!(prefix = %route.prefix, upstream = %route.upstream_label, profile = %route.profile, "route");
    }
    for (profile, _) in snapshot.keys.profiles() {
        let keys = snapshot.keys.fingerprints(profile);
        if !keys.is_empty() {
            tracing::info!(profile, keys = %keys.join(", "), "profile");
        }
    }
    for profile in snapshot.profiles_without_key() {
        tracing::warn!(
            profile,
            "no key yet: {}; requests for it get a local 401 until one is added",
            keyproxy::keys::looked_list(&snapshot.keys.looked_for(profile))
        );
    }
    for warning in snapshot.profiles_without_provider() {
        tracing::warn!("{warning}");
    }
    // Handlers first: whoever waits for the line below may signal at once, and SIGHUP's default
    // action would end the process.
    let reload = running.reloader();
    let mut hup = signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let listen = format!("http://{}", running.local_addr);
    let mut in_config_order: Vec<_> = snapshot.routes.iter().collect();
    in_config_order.sort_by_key(|r| r.index);
    for route in in_config_order {
        let urls = route.agent_base_urls(&listen);
        let said: Vec<String> = urls
            .iter()
            .map(|(style, url)| match *style {
                "any" => format!("agents at {url}"),
                style => format!("{style}-style agents at {url}"),
            })
            .collect();
        tracing::info!(prefix = %route.prefix, "route {}: point {}", route.prefix, said.join(", "));
    }
    tracing::info!(listen = %running.local_addr, "keyproxy is listening on {listen}");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config and keys");
                // try_send: a reloader stuck on a hung mount must not stop signal handling.
                if reload.try_send(ReloadRequest { reason: "SIGHUP", done: None }).is_err() {
                    tracing::warn!("a reload is still running or queued; SIGHUP ignored");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    running.shutdown().await;
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("cannot install a signal handler")
}
