//! The `guestctl` command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use guestctl::{Client, ClientError, DEFAULT_CONNECT, connect};
use guestd_core::{Reply, Request};
use serde_json::Value;

/// guestctl: talk to a guestd agent from the host.
#[derive(Debug, Parser)]
#[command(name = "guestctl", version)]
struct Cli {
    /// The guest's channel: unix:PATH.
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_CONNECT, global = true)]
    connect: String,

    /// Print the agent's raw reply as JSON instead of its message.
    #[arg(long, global = true)]
    json: bool,

    /// Seconds to wait for a reply.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, global = true)]
    timeout: f64,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The agent's version.
    Version,
    /// The commands the agent has enabled.
    Features,
    /// Rewrite the guest's network configuration (`resetnetwork`): from the host's data, or
    /// from FILE: a JSON list of interface objects or {"interfaces": [...], "hostname": "..."}.
    ResetNetwork {
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Send any command: NAME and an optional JSON VALUE (a bare word is sent as a string).
    Raw { name: String, value: Option<String> },
    /// Print a man page (`man`) or a shell completion script (`bash`, `zsh`, `fish`).
    #[command(hide = true)]
    Generate { what: String },
}

/// Exit codes: 0 success, 1 the agent answered with an error, 2 usage, 3 no answer.
const EXIT_AGENT_ERROR: u8 = 1;
const EXIT_NO_ANSWER: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = Duration::from_secs_f64(cli.timeout.max(0.001));
    let request = match &cli.command {
        Cmd::Generate { what } => return generate(what),
        Cmd::Version => Request::new("version", "agent"),
        Cmd::Features => Request::new("features", ""),
        Cmd::Raw { name, value } => Request::new(name.clone(), parse_value(value.as_deref())),
        Cmd::ResetNetwork { config } => match network_value(config.as_deref()) {
            Ok(value) => Request::new("resetnetwork", value),
            Err(e) => {
                eprintln!("guestctl: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let reply = connect(&cli.connect, timeout)
        .and_then(|mut client: Box<dyn Client>| client.call(&request, timeout));
    match reply {
        Ok(reply) => report(&reply, cli.json),
        Err(e) => {
            eprintln!("guestctl: {e}");
            ExitCode::from(if matches!(e, ClientError::Spec(_)) {
                2
            } else {
                EXIT_NO_ANSWER
            })
        }
    }
}

fn generate(what: &str) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    let done = match what {
        "man" => clap_mangen::Man::new(cmd)
            .render(&mut out)
            .map_err(|e| e.to_string()),
        shell => shell
            .parse::<clap_complete::Shell>()
            .map(|s| clap_complete::generate(s, &mut cmd, "guestctl", &mut out)),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestctl generate: {e}");
            ExitCode::from(2)
        }
    }
}

/// The `resetnetwork` value: `""` (the host's data), or the JSON in FILE.
fn network_value(file: Option<&std::path::Path>) -> Result<Value, String> {
    let Some(file) = file else {
        return Ok(Value::String(String::new()));
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", file.display()))?;
    if !(value.is_array() || value.is_object()) {
        return Err(format!(
            "{} must hold a JSON list of interfaces or an object with \"interfaces\" and \"hostname\"",
            file.display()
        ));
    }
    Ok(value)
}

/// A JSON value if it parses, else the text as a JSON string.
fn parse_value(text: Option<&str>) -> Value {
    match text {
        None => Value::String(String::new()),
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
    }
}

fn report(reply: &Reply, json: bool) -> ExitCode {
    if json {
        println!("{}", reply.encode());
    } else if reply.is_success() && !reply.message.is_empty() {
        println!("{}", reply.message);
    }
    let _ = std::io::stdout().flush();
    if reply.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "guestctl: agent answered {}: {}",
            reply.returncode, reply.message
        );
        ExitCode::from(EXIT_AGENT_ERROR)
    }
}
