//! `keyproxy status` and `keyproxy reload`: ask the running keyproxy over its admin endpoints.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use keyproxy::cli::Running;
use keyproxy::config::{self, Origin};
use keyproxy::ops::instance;
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
    let url = match (&running.url, listen) {
        (Some(url), _) => Ok(url.clone()),
        (None, Some(addr)) => Ok(instance::admin_url(addr, path)),
        (None, None) => config::load(origin)
            .map(|c| instance::admin_url(c.listen, path))
            .map_err(|e| e.to_string()),
    };
    let asked = url.and_then(|url| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let answer = runtime.block_on(instance::ask(
            method,
            &url,
            running.token.as_deref(),
            timeout,
        ))?;
        Ok((url, answer))
    });
    match asked {
        Ok((url, (status, body))) if status.is_success() => Ok((url, body)),
        Ok((url, (status, body))) => {
            let why = instance::message(status, &body);
            eprintln!("keyproxy {command}: {url} answered {status}: {why}");
            Err(ExitCode::FAILURE)
        }
        Err(why) => {
            eprintln!("keyproxy {command}: {why}; is keyproxy running? (keyproxy health)");
            Err(ExitCode::FAILURE)
        }
    }
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
) -> ExitCode {
    let path = if local { "usage?local=1" } else { "usage" };
    show(path, (origin, listen, running), json, |_, body| {
        instance::usage_table(body)
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
    // `usage?local=1` is the path; the command is named without its query.
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
