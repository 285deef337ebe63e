//! The `guestctl` command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

use guestctl::password::{self, Mode, SetPasswordError, SetPasswordOptions};
use guestctl::{
    ClientError, ConnectOptions, DEFAULT_CONNECT, TlsFiles, call_with_retry, connect_with,
};
use guestd_core::{Reply, Request};
use guestd_crypto::legacy::LegacyDigest;
use serde_json::Value;
use zeroize::Zeroizing;

/// guestctl: talk to a guestd agent from the host.
#[derive(Debug, Parser)]
#[command(name = "guestctl", version)]
struct Cli {
    /// The guest's channel: unix:PATH, serial:PATH (QEMU's chardev socket of the guest's
    /// virtio-serial port), tcp:HOST:PORT, vsock:CID:PORT, xenstore:DOMID from dom0
    /// (xenstored socket from XENSTORED_PATH, default /var/run/xenstored/socket), or on a
    /// Windows guest pipe:\\.\pipe\NAME (guestd's local named pipe; run elevated).
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_CONNECT, global = true)]
    connect: String,

    /// tcp: this host's client certificate (PEM), presented to guestd.
    #[arg(long, value_name = "FILE", global = true)]
    tls_cert: Option<PathBuf>,

    /// tcp: the private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    tls_key: Option<PathBuf>,

    /// tcp: the CA that signed guestd's server certificate (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    tls_ca: Option<PathBuf>,

    /// Attempts in all when a reply is lost (connection lost, no answer in time); each retry
    /// reconnects and repeats the request with the same id, so the guest does not run it twice.
    #[arg(long, value_name = "N", default_value_t = 3, global = true)]
    attempts: u32,

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
    /// Write LOCAL's contents to the absolute path REMOTE in the guest (`file_inject`; falls
    /// back to `injectfile` for agents that lack it). An existing file keeps its mode and owner.
    InjectFile {
        local: std::path::PathBuf,
        remote: String,
    },
    /// Have the agent update itself from URL (a .tar.gz holding the new `guestd`), verified
    /// with the given checksum (`agentupdate`).
    #[command(group(clap::ArgGroup::new("checksum").required(true).args(["sha256", "md5"])))]
    Update {
        #[arg(long)]
        url: String,
        /// SHA-256 of the tarball (64 hex digits).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// MD5 of the tarball (32 hex digits), as nova sends it.
        #[arg(long, value_name = "HEX")]
        md5: Option<String>,
    },
    /// Bring the guest to the state a configure document describes (FILE, or - for stdin):
    /// files, directories, users, groups, packages, services, archives and runs of scripts the
    /// guest already has. Prints the whole result as JSON; exits 1 if a resource failed.
    /// Waits up to an hour for the reply unless --timeout is given.
    Configure {
        /// The document (JSON with a "resources" list); - reads it from stdin.
        #[arg(required_unless_present = "result", value_name = "FILE")]
        file: Option<String>,
        /// Report what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the stored result with this id (from an earlier run) instead.
        #[arg(long, value_name = "ID", conflicts_with_all = ["file", "dry_run"])]
        result: Option<String>,
        /// Put the document on the guest with file_inject first (done by itself when it is
        /// too large for one request, as over XenStore).
        #[arg(long)]
        via_inbox: bool,
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

/// How long `configure` waits for its reply unless `--timeout` says otherwise.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Exit codes: 0 success, 1 the agent answered with an error, 2 usage, 3 no answer.
const EXIT_AGENT_ERROR: u8 = 1;
const EXIT_NO_ANSWER: u8 = 3;

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let mut timeout = Duration::from_secs_f64(cli.timeout.max(0.001));
    // A document installs packages and runs scripts: unless told otherwise, wait as long as
    // guestd gives the command (its default timeout for configure).
    if matches!(cli.command, Cmd::Configure { .. })
        && matches.value_source("timeout") != Some(clap::parser::ValueSource::CommandLine)
    {
        timeout = CONFIGURE_TIMEOUT;
    }
    let connect_options = ConnectOptions {
        tls: TlsFiles {
            cert: cli.tls_cert.clone(),
            key: cli.tls_key.clone(),
            ca: cli.tls_ca.clone(),
        },
    };
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
            return set_password(
                &cli.connect,
                &connect_options,
                timeout,
                &opts,
                *password_stdin,
            );
        }
        Cmd::ResetNetwork { config } => match network_value(config.as_deref()) {
            Ok(value) => Request::new("resetnetwork", value),
            Err(e) => {
                eprintln!("guestctl: {e}");
                return ExitCode::from(2);
            }
        },
        Cmd::InjectFile { local, remote } => match std::fs::read(local) {
            Ok(contents) => file_inject(remote, &contents),
            Err(e) => {
                eprintln!("guestctl: cannot read {}: {e}", local.display());
                return ExitCode::from(2);
            }
        },
        Cmd::Configure {
            file,
            dry_run,
            result,
            via_inbox,
        } => {
            let options = guestctl::configure::ConfigureOptions {
                dry_run: *dry_run,
                max_request: is_xenstore(&cli.connect)
                    .then_some(guestctl::configure::XENSTORE_REQUEST_LIMIT),
                via_inbox: *via_inbox,
            };
            return configure(
                &cli,
                &options,
                timeout,
                file.as_deref(),
                result.as_deref(),
                &connect_options,
            );
        }
        Cmd::Update { url, sha256, md5 } => {
            let sum = sha256.as_deref().or(md5.as_deref()).unwrap_or_default();
            Request::new("agentupdate", format!("{url},{sum}"))
        }
    };
    let call = |request: &Request| {
        call_with_retry(
            &cli.connect,
            &connect_options,
            request,
            timeout,
            cli.attempts,
            |attempt, e| {
                eprintln!(
                    "guestctl: attempt {attempt} failed ({e}); retrying with the same request id"
                )
            },
        )
    };
    let reply = call(&request).and_then(|reply| {
        // Agents older than `file_inject` (all the reference ones) only know `injectfile`.
        match &cli.command {
            Cmd::InjectFile { local, remote } if reply.returncode == "404" => {
                let contents = std::fs::read(local)?;
                call(&injectfile(remote, &contents))
            }
            _ => Ok(reply),
        }
    });
    match reply {
        Ok(reply) => report(&reply, cli.json),
        Err(e) => {
            eprintln!("guestctl: {e}");
            ExitCode::from(if matches!(e, ClientError::Spec(_) | ClientError::Tls(_)) {
                2
            } else {
                EXIT_NO_ANSWER
            })
        }
    }
}

fn set_password(
    spec: &str,
    options: &ConnectOptions,
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
    // One connection for the whole exchange: the agreed key belongs to this channel.
    let result = connect_with(spec, options, timeout)
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

fn is_xenstore(spec: &str) -> bool {
    guestd_core::ChannelSpec::connect(spec)
        .is_ok_and(|s| matches!(s.kind, guestd_core::ChannelKind::Xenstore(_)))
}

/// `configure FILE|-` or `configure --result ID`.
fn configure(
    cli: &Cli,
    options: &guestctl::configure::ConfigureOptions,
    timeout: Duration,
    file: Option<&str>,
    result: Option<&str>,
    connect_options: &ConnectOptions,
) -> ExitCode {
    use guestctl::configure::{self as cf, ConfigureError};
    let mut call = |request: &Request| {
        call_with_retry(
            &cli.connect,
            connect_options,
            request,
            timeout,
            cli.attempts,
            |attempt, e| {
                eprintln!(
                    "guestctl: attempt {attempt} failed ({e}); retrying with the same request id"
                )
            },
        )
    };
    let outcome = match (result, file) {
        (Some(id), _) => cf::fetch_result(&mut call, id).map(|result| cf::ConfigureOutcome {
            returncode: "0".into(),
            result,
        }),
        (None, Some(file)) => {
            let text = if file == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
            } else {
                std::fs::read_to_string(file)
            };
            match text {
                Err(e) => {
                    eprintln!("guestctl: cannot read {file}: {e}");
                    return ExitCode::from(2);
                }
                Ok(text) => cf::parse_document(&text)
                    .and_then(|doc| cf::configure(&mut call, &doc, *options)),
            }
        }
        (None, None) => unreachable!("clap requires FILE or --result"),
    };
    match outcome {
        Ok(outcome) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&outcome.result).unwrap_or_default()
            );
            if outcome.ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("guestctl: configure: not every resource succeeded");
                ExitCode::from(EXIT_AGENT_ERROR)
            }
        }
        Err(ConfigureError::Document(e)) => {
            eprintln!("guestctl: {e}");
            ExitCode::from(2)
        }
        Err(ConfigureError::Client(e)) => {
            eprintln!("guestctl: {e}");
            ExitCode::from(EXIT_NO_ANSWER)
        }
        Err(e @ ConfigureError::Agent { .. }) => {
            eprintln!("guestctl: {e}");
            ExitCode::from(EXIT_AGENT_ERROR)
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

/// `file_inject` as nova's plugin sends it.
fn file_inject(remote: &str, contents: &[u8]) -> Request {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    Request::new(
        "file_inject",
        serde_json::json!({"b64_path": b64.encode(remote), "b64_file": b64.encode(contents)}),
    )
}

/// `injectfile`: base64 of `path,contents`.
fn injectfile(remote: &str, contents: &[u8]) -> Request {
    use base64::Engine;
    let mut data = remote.as_bytes().to_vec();
    data.push(b',');
    data.extend_from_slice(contents);
    Request::new(
        "injectfile",
        base64::engine::general_purpose::STANDARD.encode(data),
    )
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
