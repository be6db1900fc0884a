mod keys_cmd;
mod openclaw_cmd;
mod running_cmd;
mod service_cmd;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use keyproxy::cli::{Cli, Command, LogFormat};
use keyproxy::config::{self, Origin};
use keyproxy::ops::reload::ReloadRequest;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    not_dumpable();
    let origin = config::discover(cli.config.as_deref());
    match cli.command {
        Some(Command::Check {
            json,
            token,
            admin_token,
            live,
        }) => {
            let running = keyproxy::ops::check::Running {
                listen: cli.listen,
                token: admin_token.or(token),
                live,
            };
            let report = keyproxy::ops::check::run(origin, &running);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.json).unwrap_or_default()
                );
            } else {
                print!("{}", report.text);
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some(Command::Status { json, running }) => {
            running_cmd::status(&origin, cli.listen, &running, json)
        }
        Some(Command::Usage {
            json,
            local,
            since,
            until,
            by,
            running,
        }) => {
            let range = [("since", since), ("until", until), ("by", by)];
            running_cmd::usage(&origin, cli.listen, &running, json, local, range)
        }
        Some(Command::Me { json, running }) => running_cmd::me(&origin, cli.listen, &running, json),
        Some(Command::Reload { running }) => running_cmd::reload(&origin, cli.listen, &running),
        Some(Command::Health { url, timeout }) => health(origin, cli.listen, url, timeout),
        Some(Command::Service { action }) => service_cmd::run(origin, cli.listen, action),
        Some(Command::Keys { action }) => keys_cmd::run(origin, action),
        Some(Command::Openclaw { action }) => openclaw_cmd::run(origin, cli.listen, action),
        Some(Command::Serve) => serve(origin, cli.listen),
        None => serve(origin, cli.listen),
    }
}

fn health(
    origin: Origin,
    listen: Option<std::net::SocketAddr>,
    url: Option<String>,
    timeout: std::time::Duration,
) -> ExitCode {
    let url = match url {
        Some(url) => url,
        None => match listen.map_or_else(|| config::load(&origin).map(|c| c.listen), Ok) {
            Ok(addr) => keyproxy::ops::probe::default_url(addr),
            Err(e) => {
                eprintln!("keyproxy health: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(rt) => rt.block_on(keyproxy::ops::probe::probe(&url, timeout)),
        Err(e) => Err(format!("cannot start the async runtime: {e}")),
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("keyproxy health: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Another process of the same user could otherwise read the keys from this one's memory or
/// environment through /proc (`/proc/PID/mem`, `environ`) or ptrace; a process that is not
/// dumpable is off limits to them, and leaves no core dump. It does not stop root, nor a
/// debugger the kernel's ptrace rules still allow.
#[cfg(target_os = "linux")]
fn not_dumpable() {
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!("cannot mark the process not dumpable ({e}); other processes of this user may read its memory");
    }
}

#[cfg(not(target_os = "linux"))]
fn not_dumpable() {}

/// Logs go to stderr; see `log_buffer` for why the worker threads collect theirs.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(keyproxy::LogWriter)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(origin: Origin, listen: Option<std::net::SocketAddr>) -> ExitCode {
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
