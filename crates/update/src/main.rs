//! `guestd-update`: see the crate documentation (`lib.rs`) for the protocol with the daemon.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use guestd_update::download::{self, DownloadOptions};
use guestd_update::{ERROR, FetchRequest, archive, privileges};

const USAGE: &str = "usage: guestd-update fetch [--user NAME] < request.json > body\n       \
                     guestd-update unpack --max-unpacked BYTES [--user NAME] < archive.tar.gz\n       \
                     guestd-update --version";

/// The longest `fetch` request read from stdin (a URL and perhaps a CA bundle).
const MAX_REQUEST: u64 = 4 << 20;

enum Failure {
    Usage(String),
    Failed(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(why)) => {
            eprintln!("guestd-update: {why}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("{ERROR}{message}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    user: Option<String>,
    max_unpacked: Option<u64>,
}

fn parse(args: &[String]) -> Result<Options, Failure> {
    let mut opts = Options {
        user: None,
        max_unpacked: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| Failure::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--user" => opts.user = Some(value("--user")?),
            "--max-unpacked" => {
                let n = value("--max-unpacked")?;
                opts.max_unpacked =
                    Some(n.parse().map_err(|_| {
                        Failure::Usage(format!("--max-unpacked {n}: not a number"))
                    })?);
            }
            other => return Err(Failure::Usage(format!("unknown argument '{other}'"))),
        }
    }
    Ok(opts)
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some((mode, rest)) = args.split_first() else {
        return Err(Failure::Usage("no mode given".into()));
    };
    if mode == "--version" {
        println!("guestd-update {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if mode == "--help" || mode == "-h" {
        println!("{USAGE}");
        return Ok(());
    }
    let opts = parse(rest)?;
    // Before reading a byte of input.
    if let Some(user) = &opts.user {
        privileges::drop_to(user).map_err(Failure::Failed)?;
    }
    match mode.as_str() {
        "fetch" => fetch(),
        "unpack" => {
            let max = opts
                .max_unpacked
                .ok_or_else(|| Failure::Usage("unpack needs --max-unpacked".into()))?;
            unpack(max)
        }
        other => Err(Failure::Usage(format!("unknown mode '{other}'"))),
    }
}

fn read_stdin(limit: u64) -> Result<Vec<u8>, Failure> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit + 1)
        .read_to_end(&mut input)
        .map_err(|e| Failure::Failed(format!("Cannot read the helper's input: {e}")))?;
    if input.len() as u64 > limit {
        return Err(Failure::Failed(format!(
            "The helper's input is larger than {limit} bytes"
        )));
    }
    Ok(input)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Failed(format!("Cannot hand the download to guestd: {e}")))
}

fn fetch() -> Result<(), Failure> {
    let input = read_stdin(MAX_REQUEST)?;
    let request: FetchRequest = serde_json::from_slice(&input)
        .map_err(|e| Failure::Failed(format!("Invalid helper request: {e}")))?;
    let opts = DownloadOptions {
        max_size: request.max_size,
        timeout: Duration::from_secs(request.timeout_secs),
        ca_pem: request.ca_pem.map(String::into_bytes),
    };
    let body = download::fetch(&request.url, &opts).map_err(|e| Failure::Failed(e.to_string()))?;
    write_stdout(&body)
}

fn unpack(max_unpacked: u64) -> Result<(), Failure> {
    let input = read_stdin(max_unpacked)?;
    let entries =
        archive::unpack(&input, max_unpacked).map_err(|e| Failure::Failed(e.to_string()))?;
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.contents.len() + 64).sum());
    archive::write_entries(&entries, &mut out)
        .map_err(|e| Failure::Failed(format!("Cannot encode the archive: {e}")))?;
    write_stdout(&out)
}
