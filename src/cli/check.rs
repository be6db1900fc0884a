//! `keyproxy check`: load config and keys as serve would and say what is wrong.

use std::net::SocketAddr;
use std::process::ExitCode;

use keyproxy::config::Origin;

pub fn run(
    origin: Origin,
    listen: Option<SocketAddr>,
    token: Option<String>,
    live: bool,
    json: bool,
) -> ExitCode {
    let running = keyproxy::tasks::check::Running {
        listen,
        token,
        live,
    };
    let report = keyproxy::tasks::check::run(origin, &running);
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
