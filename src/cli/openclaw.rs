//! The `keyproxy openclaw` commands: the part that prints and runs programs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::args::OpenclawAction;
use std::net::SocketAddr;

use keyproxy::config::{self, Config, Origin, DEFAULT_PROFILE};
use keyproxy::ops::reload::Reloader;
use keyproxy::proxy::Snapshot;
use keyproxy::tasks::openclaw::{self, PLACEHOLDER};

/// `listen` is `--listen`: the address OpenClaw should reach, when not the config's.
pub fn run(origin: Origin, listen: Option<SocketAddr>, action: OpenclawAction) -> ExitCode {
    let reloader = match Reloader::start(origin) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyproxy openclaw: {e}");
            return ExitCode::from(2);
        }
    };
    let snapshot = reloader.state().load();
    let mut config = (*snapshot.config).clone();
    if let Some(listen) = listen {
        config.listen = listen;
    }
    match action {
        OpenclawAction::Status { json } => status(&config, &snapshot, json),
        OpenclawAction::Connect {
            state_dir,
            api_key,
            dry_run,
        } => connect(&config, &snapshot, state_dir, api_key, dry_run),
    }
}

fn status(config: &Config, snapshot: &Snapshot, json: bool) -> ExitCode {
    let (ok, text, value) = openclaw::report(config, snapshot);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!(
            "OpenClaw state folders:\n{text}{}\n",
            if ok { "OK" } else { "FAIL" }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn connect(
    config: &Config,
    snapshot: &Snapshot,
    state_dir: Option<PathBuf>,
    api_key: Option<String>,
    dry_run: bool,
) -> ExitCode {
    let api_key = match api_key {
        Some(k) => k,
        None if config.clients.is_empty() => PLACEHOLDER.to_owned(),
        None => {
            eprintln!("keyproxy openclaw connect: this keyproxy serves only its clients; pass the client token OpenClaw should use with --api-key or KEYPROXY_CLIENT_TOKEN");
            return ExitCode::from(2);
        }
    };
    if !config.clients.is_empty() && config.clients.find(&api_key).is_none() {
        eprintln!("keyproxy openclaw connect: --api-key is not the token of any client in this keyproxy's config");
        return ExitCode::from(2);
    }
    let base_url = openclaw::base_url(config);
    let dir = state_dir
        .clone()
        .or_else(|| std::env::var_os("OPENCLAW_STATE_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".openclaw")));
    let mut commands = openclaw::connect_commands(&base_url, &api_key).to_vec();
    // `paste-api-key` points apiKey at the profile it wrote; keyproxy serves that same profile
    // for openrouter:default, so the reference stays and keeps saying which key is current.
    let reference = dir
        .as_deref()
        .and_then(|d| openclaw_setup_reference(d, config.clients.is_empty()));
    if let Some(profile) = &reference {
        println!("apiKey stays '{profile}': OpenClaw sends that key and keyproxy injects the same one from OpenClaw's store.");
        commands.pop();
    }
    let openclaw = (!dry_run).then(|| on_path("openclaw")).flatten();
    match openclaw {
        Some(program) => {
            for args in &commands {
                let mut cmd = std::process::Command::new(&program);
                cmd.args(&args[1..]);
                if let Some(dir) = &state_dir {
                    cmd.env("OPENCLAW_STATE_DIR", dir);
                }
                println!("running: {}", shown(args, &state_dir, &api_key));
                match cmd.status() {
                    Ok(s) if s.success() => {}
                    Ok(s) => {
                        eprintln!("keyproxy openclaw connect: openclaw exited with {s}; nothing more was changed");
                        return ExitCode::FAILURE;
                    }
                    Err(e) => {
                        eprintln!(
                            "keyproxy openclaw connect: cannot run {}: {e}",
                            program.display()
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
            println!("OpenClaw now sends OpenRouter requests to {base_url}.");
        }
        None => {
            if !dry_run {
                println!("openclaw is not on PATH; run these where it is:");
            }
            for args in &commands {
                println!("  {}", shown(args, &state_dir, &api_key));
            }
        }
    }
    if let Some(dir) = dir {
        let profile_missing = snapshot.keys.profile(DEFAULT_PROFILE).is_none();
        if profile_missing && !config.openclaw_state_dirs.contains(&dir) {
            let where_ = match &config.path {
                Some(p) => p.display().to_string(),
                None => config::config_home()
                    .map(|d| d.join("keyproxy/keyproxy.toml").display().to_string())
                    .unwrap_or_else(|| "keyproxy.toml".into()),
            };
            println!(
                "keyproxy has no key for '{DEFAULT_PROFILE}' yet. To serve the key OpenClaw stores, add to {where_}:\n  openclaw_state_dirs = [\"{}\"]",
                dir.display()
            );
        }
    }
    ExitCode::SUCCESS
}

/// The profile the folder's apiKey names, when it is a profile reference worth keeping.
fn openclaw_setup_reference(dir: &Path, no_clients: bool) -> Option<String> {
    let (_, key) = openclaw::openrouter_provider(dir).ok()?;
    key.filter(|k| no_clients && openclaw::is_profile_reference(k))
}

/// A command as a user would type it; a client token is not echoed.
fn shown(args: &[String], state_dir: &Option<PathBuf>, api_key: &str) -> String {
    let mut line = String::new();
    if let Some(dir) = state_dir {
        line.push_str(&format!(
            "OPENCLAW_STATE_DIR={} ",
            quote(&dir.display().to_string())
        ));
    }
    let words: Vec<String> = args
        .iter()
        .map(|a| {
            if a == api_key && api_key != PLACEHOLDER {
                "<your client token>".to_owned()
            } else {
                quote(a)
            }
        })
        .collect();
    line.push_str(&words.join(" "));
    line
}

fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:@=".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}
