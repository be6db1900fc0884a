//! `keyproxy completions SHELL` and `keyproxy man`: generated from the clap definitions in
//! `args.rs`, so they never disagree with `--help`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory as _;

use super::args::Cli;

/// Generated into memory, then written: clap_complete panics on a write error, and a reader
/// that stops early (`| head`) is no failure.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "keyproxy", &mut script);
    match to_stdout(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyproxy completions: cannot write the script: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `bytes` to stdout; a closed pipe (the reader had enough) is not an error.
fn to_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn man(dir: Option<&Path>) -> ExitCode {
    let written = match dir {
        Some(dir) => clap_mangen::generate_to(Cli::command(), dir)
            .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display())),
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .and_then(|()| to_stdout(&page))
                .map_err(|e| format!("cannot write the man page: {e}"))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("keyproxy man: {why}");
            ExitCode::FAILURE
        }
    }
}
