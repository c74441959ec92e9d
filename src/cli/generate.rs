//! `gateway generate`: the man page and the shell completions, made from the command line's
//! own definitions so that they never drift from it. The Debian package ships what this
//! prints; anyone building from source can install the same.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

/// What to generate.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generated {
    /// gateway(1) in roff, for `man -l -` or /usr/share/man/man1/gateway.1.
    Man,
    /// Completions for bash (/usr/share/bash-completion/completions/gateway).
    CompleteBash,
    /// Completions for zsh (/usr/share/zsh/vendor-completions/_gateway).
    CompleteZsh,
    /// Completions for fish (/usr/share/fish/vendor_completions.d/gateway.fish).
    CompleteFish,
}

/// Writes the generated text to stdout.
pub fn generate(what: Generated) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    match what {
        Generated::Man => clap_mangen::Man::new(command).render(&mut out)?,
        Generated::CompleteBash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut command, "gateway", &mut out)
        }
        Generated::CompleteZsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut command, "gateway", &mut out)
        }
        Generated::CompleteFish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut command, "gateway", &mut out)
        }
    }
    std::io::stdout().lock().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}
