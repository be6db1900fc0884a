//! `keyproxy status` and `keyproxy reload`: ask the running keyproxy over its admin endpoints.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::args::Running;
use keyproxy::config::{self, Origin};
use keyproxy::tasks::instance;
use serde_json::Value;

/// Asks the running keyproxy's admin endpoint `path`; its URL and JSON answer, or the exit code
/// after saying on stderr why there is none.
fn ask(
    command: &str,
    origin: &Origin,
    listen: Option<SocketAddr>,
    running: &Running,
    (method, path, timeout): (http::Method, &str, Duration),
) -> Result<(String, Value), ExitCode> {
    let (url, from) = match (&running.url, listen) {
        (Some(url), _) => (url.clone(), "from --url".to_owned()),
        (None, Some(addr)) => (instance::admin_url(addr, path), "from --listen".to_owned()),
        (None, None) => {
            let (addr, from) = configured_listen(command, origin);
            (instance::admin_url(addr, path), from)
        }
    };
    let tried = format!("tried {url} ({from}); give another with --listen ADDR or --url URL");
    let asked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|runtime| {
            runtime.block_on(instance::ask(method, &url, running.bearer(), timeout))
        });
    match asked {
        Ok((status, body)) if status.is_success() => Ok((url, body)),
        Ok((status, body)) => {
            let why = instance::message(status, &body);
            eprintln!("keyproxy {command}: {url} answered {status}: {why}");
            Err(ExitCode::FAILURE)
        }
        Err(why) => {
            eprintln!("keyproxy {command}: {why}; is keyproxy running? (keyproxy health); {tried}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// The address the config names and where it came from. A config that does not load still
/// names its `listen` (these commands are what Troubleshooting sends a user to after a typo):
/// read from the TOML when it parses, else from a `listen = "..."` line above every table;
/// failing both, the default address.
pub fn configured_listen(command: &str, origin: &Origin) -> (SocketAddr, String) {
    let error = match config::load(origin) {
        Ok(c) => {
            let from = match origin {
                Origin::File(path) => format!("listen in {}", path.display()),
                Origin::Embedded { .. } => "the default; no config file".to_owned(),
            };
            return (c.listen, from);
        }
        Err(e) => e.to_string(),
    };
    let default = || {
        config::DEFAULT_LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8787)))
    };
    let (path, named) = match origin {
        Origin::File(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| listen_in(&t)),
        ),
        Origin::Embedded { .. } => (String::new(), None),
    };
    let (addr, from) = match named {
        Some(addr) => (addr, format!("listen in {path}, which does not load")),
        None => (
            default(),
            format!("the default: {path} does not load and names no listen address"),
        ),
    };
    eprintln!("keyproxy {command}: the config does not load ({error}); asking {addr} ({from})");
    (addr, from)
}

/// `listen` of a config text that may not load as a config, or not even as TOML.
fn listen_in(text: &str) -> Option<SocketAddr> {
    if let Ok(table) = text.parse::<toml::Table>() {
        return table.get("listen")?.as_str()?.parse().ok();
    }
    text.lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let value = l.strip_prefix("listen")?.trim_start().strip_prefix('=')?;
            let value = value.split('#').next()?.trim();
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            value.parse().ok()
        })
}

pub fn status(
    origin: &Origin,
    listen: Option<SocketAddr>,
    running: &Running,
    json: bool,
) -> ExitCode {
    show(
        "status",
        (origin, listen, running),
        json,
        instance::status_text,
    )
}

pub fn usage(
    origin: &Origin,
    listen: Option<SocketAddr>,
    running: &Running,
    json: bool,
    local: bool,
    range: [(&str, Option<String>); 3],
) -> ExitCode {
    let mut query: Vec<String> = range
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
        .collect();
    if local {
        query.push("local=1".into());
    }
    let path = match query.is_empty() {
        true => "usage".to_owned(),
        false => format!("usage?{}", query.join("&")),
    };
    show(
        &path,
        (origin, listen, running),
        json,
        |_, body| match body.get("range") {
            Some(range) => instance::range_table(range),
            None => instance::usage_table(body),
        },
    )
}

pub fn me(origin: &Origin, listen: Option<SocketAddr>, running: &Running, json: bool) -> ExitCode {
    // /me is a client's: its token goes first, even where KEYPROXY_ADMIN_TOKEN is set too.
    let running = &Running {
        url: running.url.clone(),
        token: running
            .token
            .clone()
            .or_else(|| running.admin_token.clone()),
        admin_token: None,
    };
    show("me", (origin, listen, running), json, |_, body| {
        instance::me_text(body)
    })
}

/// GETs the admin endpoint named `command` and prints it as JSON or through `render`.
fn show(
    command: &str,
    (origin, listen, running): (&Origin, Option<SocketAddr>, &Running),
    json: bool,
    render: impl Fn(&str, &Value) -> String,
) -> ExitCode {
    let how = (http::Method::GET, command, Duration::from_secs(10));
    // `usage?since=...` is the path; the command is named without its query.
    let name = command.split('?').next().unwrap_or(command);
    let (url, body) = match ask(name, origin, listen, running, how) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if json {
        let text = serde_json::to_string_pretty(&body).unwrap_or_default();
        println!("{text}");
    } else {
        print!("{}", render(&url, &body));
    }
    ExitCode::SUCCESS
}

pub fn reload(origin: &Origin, listen: Option<SocketAddr>, running: &Running) -> ExitCode {
    // The endpoint itself gives up after 60 s of a reload that does not finish.
    let how = (http::Method::POST, "reload", Duration::from_secs(70));
    let (url, body) = match ask("reload", origin, listen, running, how) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    let count = &body["count"];
    match body["last_error"].as_str() {
        None => {
            println!("reloaded {url} (reload {count}); no errors");
            ExitCode::SUCCESS
        }
        Some(error) => {
            eprintln!("keyproxy reload: reloaded (reload {count}), keeping the last good keys of what failed: {error}");
            ExitCode::FAILURE
        }
    }
}
