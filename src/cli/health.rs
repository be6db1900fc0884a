//! `keyproxy health`: exit 0 when a running keyproxy answers, for container health checks.

use std::process::ExitCode;

use keyproxy::config::{self, Origin};

pub fn health(
    origin: Origin,
    listen: Option<std::net::SocketAddr>,
    url: Option<String>,
    timeout: std::time::Duration,
) -> ExitCode {
    let url = match url {
        Some(url) => url,
        None => match listen.map_or_else(|| config::load(&origin).map(|c| c.listen), Ok) {
            Ok(addr) => keyproxy::tasks::probe::default_url(addr),
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
        Ok(rt) => rt.block_on(keyproxy::tasks::probe::probe(&url, timeout)),
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
