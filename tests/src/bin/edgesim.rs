//! `edgesim`: N simulated edges speaking the real link protocol to a running cloudcore
//! (see `tests::edgesim`). Joins every edge with a token through the real `/join`, keeps
//! them connected for `--duration`, then prints a summary (`--output table|json`).
//! Exits 0 when every edge was live at the end, 1 otherwise, 2 on bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::edgesim::{Fleet, SimConfig, Summary};

const USAGE: &str = "\
usage: edgesim --server wss://IP:PORT (--token TOKEN | --kubeconfig FILE) [options]

  --server URL        cloudcore's hub (an IP address: sockets bind 127.0.0.x sources)
  --token TOKEN       a join token (multi-use), or
  --kubeconfig FILE   create one with `cloudcore token create` (binary next to edgesim)
  --edges N           simulated edges (default 100)
  --ramp DURATION     spread the edges' first dial over this long (default 0s)
  --duration DURATION keep them connected this long after all were live (default 30s)
  --interval DURATION Lease renewal interval, ±10 % jitter (default 10s)
  --sources N         127.0.0.x source addresses to spread over (default 32)
  --prefix NAME       node names are NAME-00000… (default sim)
  --dir DIR           certificates, one directory per edge (default /var/tmp/edgesim)
  --output FORMAT     table (default) or json

Durations: 500ms, 10s, 2m or plain seconds.
Raise `ulimit -n` above the edge count first (one socket per edge).";

#[derive(Debug)]
struct Args {
    config: SimConfig,
    kubeconfig: Option<PathBuf>,
    duration: Duration,
    json: bool,
}

/// Parses `500ms`, `10s`, `2m` or a plain number of seconds.
fn duration(s: &str) -> Result<Duration> {
    let bad = || format!("{s:?} is not a duration (500ms, 10s, 2m)");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().with_context(bad)?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!(bad()),
    };
    Duration::try_from_secs_f64(secs).with_context(bad)
}

fn parse(args: &[String]) -> Result<Args> {
    let mut c = SimConfig::new("", "", 100, PathBuf::from("/var/tmp/edgesim"));
    let (mut kubeconfig, mut dur, mut json) = (None, Duration::from_secs(30), false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        let num = || -> Result<usize> {
            v.replace(['_', ','], "")
                .parse()
                .with_context(|| format!("{a}: {v:?} is not a count"))
        };
        match a.as_str() {
            "--server" => c.server = v.clone(),
            "--token" => c.token = v.clone(),
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(v)),
            "--edges" => c.edges = num()?,
            "--ramp" => c.ramp = duration(v)?,
            "--duration" => dur = duration(v)?,
            "--interval" => c.report_interval = duration(v)?.max(Duration::from_millis(100)),
            "--sources" => c.sources = u8::try_from(num()?.clamp(1, 250))?,
            "--prefix" => c.prefix = v.clone(),
            "--dir" => c.dir = PathBuf::from(v),
            "--output" => match v.as_str() {
                "json" => json = true,
                "table" => json = false,
                other => bail!("--output: {other:?} is neither table nor json"),
            },
            other => bail!("unknown argument {other:?}"),
        }
    }
    if c.server.is_empty() {
        bail!("--server is required");
    }
    if c.token.is_empty() && kubeconfig.is_none() {
        bail!("--token or --kubeconfig is required");
    }
    Ok(Args {
        config: c,
        kubeconfig,
        duration: dur,
        json,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut args = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("edgesim: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tests::init_crypto();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgesim: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&mut args)) {
        Ok(s) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                println!("{}", table(&s));
            }
            if s.live == s.edges {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("edgesim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &mut Args) -> Result<Summary> {
    if let Some(k) = &args.kubeconfig {
        let out = std::process::Command::new(tests::bin("cloudcore"))
            .args(["token", "create", "--ttl", "24h", "--kubeconfig"])
            .arg(k)
            .output()
            .context("running cloudcore token create")?;
        if !out.status.success() {
            bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
        }
        args.config.token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    match tests::edgesim::raise_nofile() {
        Ok(n) => eprintln!("edgesim: RLIMIT_NOFILE {n}"),
        Err(e) => eprintln!("edgesim: cannot raise RLIMIT_NOFILE: {e}"),
    }
    let started = Instant::now();
    eprintln!(
        "edgesim: joining {} edges at {}",
        args.config.edges, args.config.server
    );
    let fleet = Fleet::start(&args.config).await?;
    eprintln!("edgesim: joined and started in {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(600);
    while fleet.live() < fleet.edges.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("edgesim: {:?}", fleet.summary());
    }
    eprintln!(
        "edgesim: {} of {} live after {:?}; holding for {:?}",
        fleet.live(),
        fleet.edges.len(),
        started.elapsed(),
        args.duration
    );
    tokio::time::sleep(args.duration).await;
    let s = fleet.summary();
    fleet.stop().await;
    Ok(s)
}

fn table(s: &Summary) -> String {
    let rows = [
        ("edges", s.edges.to_string()),
        ("live (in sync)", s.live.to_string()),
        ("sessions", s.sessions.to_string()),
        (
            "Lease renewals written (answered 2xx)",
            s.lease_renewals.to_string(),
        ),
        ("failed dials", s.dial_failures.to_string()),
        ("upstream errors", s.upstream_errors.to_string()),
        (
            "Lease renewals before the Lease existed (404)",
            s.lease_not_found.to_string(),
        ),
        ("cloud ERROR frames", s.cloud_errors.to_string()),
        ("objects held (all edges)", s.objects_held.to_string()),
    ];
    let mut out = String::from("| metric | value |\n| --- | --- |\n");
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out
}

#[cfg(test)]
mod unit {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("7").unwrap(), Duration::from_secs(7));
        assert!(duration("7h").is_err());
    }

    #[test]
    fn server_and_a_credential_are_required() {
        let a = |s: &[&str]| parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(a(&["--edges", "3"]).is_err());
        assert!(a(&["--server", "wss://127.0.0.1:1"]).is_err());
        let ok = a(&[
            "--server",
            "wss://127.0.0.1:1",
            "--token",
            "t",
            "--edges",
            "1_000",
        ])
        .unwrap();
        assert_eq!(ok.config.edges, 1000);
    }
}
