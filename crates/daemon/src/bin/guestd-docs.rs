//! `guestd-docs man|bash|zsh|fish`: guestd's man page or a shell completion script, generated
//! from its command-line definition at packaging time (`packaging/build-packages`), so that the
//! daemon itself links no generator. Not installed.

use std::process::ExitCode;

use clap::CommandFactory;
use guestd_daemon::cli::Cli;

fn main() -> ExitCode {
    let what = std::env::args().nth(1).unwrap_or_default();
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    let done = match what.as_str() {
        "man" => clap_mangen::Man::new(cmd)
            .section("8")
            .render(&mut out)
            .map_err(|e| e.to_string()),
        shell => shell
            .parse::<clap_complete::Shell>()
            .map(|shell| clap_complete::generate(shell, &mut cmd, "guestd", &mut out)),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestd-docs: {e}\nusage: guestd-docs man|bash|zsh|fish");
            ExitCode::from(2)
        }
    }
}
