//! The `guestctl` command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use guestctl::password::{self, Mode, SetPasswordError, SetPasswordOptions};
use guestctl::{Client, ClientError, DEFAULT_CONNECT, connect};
use guestd_core::{Reply, Request};
use guestd_crypto::legacy::LegacyDigest;
use serde_json::Value;
use zeroize::Zeroizing;

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
    /// Set the guest's administrator password (strong key exchange when the agent offers it).
    SetPassword {
        /// The account (needs the strong exchange); default: the agent's configured one
        /// (root, or the built-in Administrator on Windows).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Read the password from stdin (one trailing newline is removed) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Key derivation for the legacy exchange: md5 (old agents) or sha256 (OpenSSL 1.1+).
        #[arg(long, value_name = "DIGEST", default_value = "md5")]
        legacy_digest: LegacyDigest,
        /// Fail instead of falling back to nova's weak legacy exchange.
        #[arg(long)]
        require_strong: bool,
    },
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
        Cmd::SetPassword {
            user,
            password_stdin,
            legacy_digest,
            require_strong,
        } => {
            let opts = SetPasswordOptions {
                user: user.clone(),
                legacy_digest: *legacy_digest,
                require_strong: *require_strong,
            };
            return set_password(&cli.connect, timeout, &opts, *password_stdin);
        }
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

fn set_password(
    spec: &str,
    timeout: Duration,
    opts: &SetPasswordOptions,
    from_stdin: bool,
) -> ExitCode {
    let secret = match read_password(from_stdin) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("guestctl: {e}");
            return ExitCode::from(2);
        }
    };
    let result = connect(spec, timeout)
        .map_err(SetPasswordError::from)
        .and_then(|mut client| {
            let mode = password::choose_mode(client.as_mut(), opts, timeout)?;
            if let Mode::Legacy(digest) = mode {
                eprintln!(
                    "guestctl: warning: the agent does not offer keyinit2; using nova's legacy \
                     key exchange (107-bit Diffie-Hellman, {} key derivation), which does not \
                     protect the password from an eavesdropper",
                    digest.name()
                );
            }
            password::send_password(
                client.as_mut(),
                mode,
                opts.user.as_deref(),
                &secret,
                timeout,
            )
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestctl: {e}");
            ExitCode::from(match e {
                SetPasswordError::Client(ClientError::Spec(_)) => 2,
                SetPasswordError::Client(_) => EXIT_NO_ANSWER,
                _ => EXIT_AGENT_ERROR,
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

/// The new password: from stdin, or typed twice at a prompt without echo.
fn read_password(from_stdin: bool) -> Result<Zeroizing<String>, String> {
    use std::io::{IsTerminal, Read};
    let password = if from_stdin {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        Zeroizing::new(trimmed.to_string())
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password("New password: ").map_err(|e| format!("prompt: {e}"))?,
        );
        let again = Zeroizing::new(
            rpassword::prompt_password("Retype new password: ")
                .map_err(|e| format!("prompt: {e}"))?,
        );
        if *first != *again {
            return Err("the passwords do not match".into());
        }
        first
    } else {
        return Err(
            "stdin is not a terminal: pass --password-stdin to read the password from it".into(),
        );
    };
    if password.is_empty() {
        return Err("refusing to set an empty password".into());
    }
    Ok(password)
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
