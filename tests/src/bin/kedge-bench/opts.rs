//! The command line: which phases to run and how big (`--smoke` scales everything down so
//! the whole run takes well under a minute).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// What to run and how big.
#[derive(Debug, Clone)]
pub struct Opts {
    pub creates: usize,
    pub pods: usize,
    pub watchers: usize,
    pub updates: usize,
    pub lists: usize,
    pub page_rounds: usize,
    pub paged: usize,
    pub workers: usize,
    pub connections: usize,
    pub phases: Vec<String>,
    pub dir: Option<PathBuf>,
    pub smoke: bool,
}

pub const PHASES: [&str; 3] = ["durable", "pods", "paging"];

pub const USAGE: &str = "usage: kedge-bench api [--smoke] [--creates N] [--pods N] [--watchers N] \
[--updates N] [--lists N] [--page-rounds N] [--paged N] [--workers N] [--connections N] \
[--only durable,pods,paging] [--dir DIR]";

impl Opts {
    /// Parse the arguments after `api`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let smoke = args.iter().any(|a| a == "--smoke");
        let mut o = if smoke {
            Self::sized(2_000, 2_000, 100, 20, 10, 3, 5_000, true)
        } else {
            Self::sized(20_000, 10_000, 1_000, 50, 50, 10, 100_000, false)
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--smoke" {
                continue;
            }
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            let num = |v: &String| -> Result<usize> {
                v.replace(['_', ','], "")
                    .parse()
                    .with_context(|| format!("{a}: {v:?} is not a count"))
            };
            match a.as_str() {
                "--creates" => o.creates = num(value()?)?,
                "--pods" => o.pods = num(value()?)?.max(1),
                "--watchers" => o.watchers = num(value()?)?.max(1),
                "--updates" => o.updates = num(value()?)?.max(1),
                "--lists" => o.lists = num(value()?)?.max(1),
                "--page-rounds" => o.page_rounds = num(value()?)?.max(1),
                "--paged" => o.paged = num(value()?)?,
                "--workers" => o.workers = num(value()?)?.max(1),
                "--connections" => o.connections = num(value()?)?.max(1),
                "--dir" => o.dir = Some(PathBuf::from(value()?)),
                "--only" => {
                    o.phases = value()?.split(',').map(str::to_string).collect();
                    if let Some(bad) = o.phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
                        bail!(
                            "--only: unknown phase {bad:?} (phases: {})",
                            PHASES.join(", ")
                        );
                    }
                }
                other => bail!("unknown argument {other:?}"),
            }
        }
        Ok(o)
    }

    #[allow(clippy::too_many_arguments)]
    fn sized(
        creates: usize,
        pods: usize,
        watchers: usize,
        updates: usize,
        lists: usize,
        page_rounds: usize,
        paged: usize,
        smoke: bool,
    ) -> Self {
        Self {
            creates,
            pods,
            watchers,
            updates,
            lists,
            page_rounds,
            paged,
            workers: 64,
            connections: 4,
            phases: PHASES.iter().map(|p| p.to_string()).collect(),
            dir: None,
            smoke,
        }
    }

    /// Whether `phase` is to run.
    pub fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}
