//! `cordon completions SHELL` and `cordon man`: shell completion scripts and man pages, made
//! from the same clap definitions the command line is parsed with, so they never drift.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::{Cli, EXIT_INVALID, EXIT_SANDBOX_ERROR};

pub(crate) const COMPLETIONS_HELP: &str = "Install (one of):
  bash:       cordon completions bash > ~/.local/share/bash-completion/completions/cordon
  zsh:        cordon completions zsh > \"${fpath[1]}/_cordon\"   (a directory on $fpath)
  fish:       cordon completions fish > ~/.config/fish/completions/cordon.fish
  elvish:     cordon completions elvish >> ~/.config/elvish/rc.elv
  powershell: cordon completions powershell >> $PROFILE

Exit status: 0 printed, 2 an unknown shell, 5 stdout cannot be written.";

pub(crate) const MAN_HELP: &str = "Install:
  cordon man --dir /usr/local/share/man/man1 && mandb   (then `man cordon`, `man cordon-run`)
  cordon man | man -l -                                  (read it without installing)

Exit status: 0 written, 2 --dir is not a directory, 5 a page cannot be written.";

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command into this existing directory (cordon.1, cordon-run.1,
    /// cordon-image-build.1, …; existing pages of those names are replaced) instead of
    /// printing cordon.1 on stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn completions(args: &CompletionsArgs) -> u8 {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "cordon", &mut script);
    write_stdout(&script)
}

pub fn man(args: &ManArgs) -> u8 {
    let Some(dir) = &args.dir else {
        let mut page = Vec::new();
        if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
            eprintln!(
                "cordon: {}: cannot render the man page: {e}",
                super::error_word()
            );
            return EXIT_SANDBOX_ERROR;
        }
        return write_stdout(&page);
    };
    if !dir.is_dir() {
        eprintln!(
            "cordon: {}: --dir {}: not a directory; create it first (e.g. mkdir -p {})",
            super::error_word(),
            dir.display(),
            dir.display()
        );
        return EXIT_INVALID;
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives each subcommand its full name (`cordon-image-build`), which names its page.
    cmd.build();
    match write_pages(cmd, dir) {
        Ok(n) => {
            eprintln!("cordon: wrote {n} man pages to {}", dir.display());
            0
        }
        Err(e) => {
            eprintln!(
                "cordon: {}: cannot write a man page in {}: {e}",
                super::error_word(),
                dir.display()
            );
            EXIT_SANDBOX_ERROR
        }
    }
}

/// Writes the page of `cmd` and of each of its subcommands, and theirs; returns how many.
fn write_pages(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<usize> {
    let mut n = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        n += write_pages(sub.clone(), dir)?;
    }
    clap_mangen::Man::new(cmd).generate_to(dir)?;
    Ok(n + 1)
}

fn write_stdout(bytes: &[u8]) -> u8 {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "cordon: {}: cannot write to stdout: {e}",
                super::error_word()
            );
            EXIT_SANDBOX_ERROR
        }
    }
}
