//! `keyproxy status` and `keyproxy reload`: ask the running keyproxy over its admin endpoints.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use keyproxy::config::{self, Origin};
use keyproxy::ops::instance;

/// The admin URL `path` of the keyproxy this config (or `--listen`) describes, or `url`.
fn url_for(
    origin: &Origin,
    listen: Option<SocketAddr>,
    url: Option<String>,
    path: &str,
) -> Result<String, String> {
    if let Some(url) = url {
        return Ok(url);
    }
    let listen = match listen {
        Some(addr) => addr,
        None => config::load(origin).map_err(|e| e.to_string())?.listen,
    };
    Ok(instance::admin_url(listen, path))
}

fn block_on<T>(fut: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(fut)
}

pub fn status(
    origin: &Origin,
    listen: Option<SocketAddr>,
    url: Option<String>,
    token: Option<String>,
    json: bool,
) -> ExitCode {
    let outcome = url_for(origin, listen, url, "status").and_then(|url| {
        let asked = block_on(instance::ask(
            http::Method::GET,
            &url,
            token.as_deref(),
            Duration::from_secs(10),
        ));
        asked.map(|answer| (url, answer))
    });
    match outcome {
        Ok((url, (status, body))) if status.is_success() => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
            } else {
                print!("{}", instance::status_text(&url, &body));
            }
            ExitCode::SUCCESS
        }
        Ok((url, (status, body))) => {
            eprintln!(
                "keyproxy status: {url} answered {status}: {}",
                instance::message(status, &body)
            );
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("keyproxy status: {why}; is keyproxy running? (keyproxy health)");
            ExitCode::FAILURE
        }
    }
}

pub fn reload(
    origin: &Origin,
    listen: Option<SocketAddr>,
    url: Option<String>,
    token: Option<String>,
) -> ExitCode {
    let outcome = url_for(origin, listen, url, "reload").and_then(|url| {
        let asked = block_on(instance::ask(
            http::Method::POST,
            &url,
            token.as_deref(),
            Duration::from_secs(70),
        ));
        asked.map(|answer| (url, answer))
    });
    match outcome {
        Ok((url, (status, body))) if status.is_success() => match body["last_error"].as_str() {
            None => {
                println!("reloaded {url} (reload {}); no errors", body["count"]);
                ExitCode::SUCCESS
            }
            Some(error) => {
                eprintln!("keyproxy reload: reloaded (reload {}), keeping the last good keys of what failed: {error}", body["count"]);
                ExitCode::FAILURE
            }
        },
        Ok((url, (status, body))) => {
            eprintln!(
                "keyproxy reload: {url} answered {status}: {}",
                instance::message(status, &body)
            );
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("keyproxy reload: {why}; is keyproxy running? (keyproxy health)");
            ExitCode::FAILURE
        }
    }
}
