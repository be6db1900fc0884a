//! `keyproxy completions SHELL` and `keyproxy man`: generated from the clap definitions in
//! `args.rs`, so they never disagree with `--help`.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory as _;

use super::args::Cli;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "keyproxy",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

pub fn man(dir: Option<&Path>) -> ExitCode {
    let written = match dir {
        Some(dir) => clap_mangen::generate_to(Cli::command(), dir)
            .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display())),
        None => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| format!("cannot write the man page: {e}")),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("keyproxy man: {why}");
            ExitCode::FAILURE
        }
    }
}
