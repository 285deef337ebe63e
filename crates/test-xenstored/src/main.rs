//! `test-xenstored --dom0 PATH --guest DOMID:PATH [--guest ...] [--max-nodes N] [--max-value N]
//! [--toolstack minimal|xapi|libxl] [--trace]`: serve until killed. Prints `ready` on stdout
//! once every socket listens.

#[cfg(unix)]
fn main() -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    use guestd_test_xenstored::{Config, TestXenstored, Toolstack};

    let mut config = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--dom0" => config.dom0 = Some(value("--dom0")?.into()),
            "--guest" => {
                let spec = value("--guest")?;
                let (domid, path) = spec
                    .split_once(':')
                    .with_context(|| format!("--guest wants DOMID:PATH, got '{spec}'"))?;
                let domid: u32 = domid
                    .parse()
                    .with_context(|| format!("bad domid '{domid}'"))?;
                if domid == 0 {
                    bail!("--guest domid must not be 0 (use --dom0)");
                }
                config.guests.push((domid, path.into()));
            }
            "--max-nodes" => config.quota.max_nodes = value("--max-nodes")?.parse()?,
            "--max-value" => config.quota.max_value = value("--max-value")?.parse()?,
            "--toolstack" => {
                let name = value("--toolstack")?;
                config.toolstack = Toolstack::parse(&name).with_context(|| {
                    format!("--toolstack wants minimal, xapi or libxl, got '{name}'")
                })?;
            }
            "--trace" => config.trace = true,
            "-h" | "--help" => {
                println!(
                    "usage: test-xenstored --dom0 PATH --guest DOMID:PATH [--guest ...] \
                     [--max-nodes N] [--max-value N] [--toolstack minimal|xapi|libxl] [--trace]"
                );
                return Ok(());
            }
            other => bail!("unknown argument '{other}' (see --help)"),
        }
    }
    if config.dom0.is_none() && config.guests.is_empty() {
        bail!("nothing to listen on: give --dom0 PATH and/or --guest DOMID:PATH");
    }
    let _daemon = TestXenstored::start(config).context("starting test-xenstored")?;
    println!("ready");
    loop {
        std::thread::park();
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("test-xenstored needs unix sockets");
    std::process::exit(2);
}
