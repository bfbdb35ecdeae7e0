//! The README's quickstart, run verbatim on a fresh checkout.
//!
//! **Extraction** (at test time, from the checkout's README.md): every fenced block whose
//! info string starts with `sh` is a command block and must carry exactly one marker word
//! after the language (GitHub only reads the first word, so readers never see it):
//!
//! - `sh test:background` — the main command, started in the background from the checkout's
//!   root; the test waits for its banner (the `export KUBECONFIG=` and `local edge:` lines)
//!   and stops it with SIGTERM at the end (a clean exit is asserted);
//! - `sh test:run` — run in order, each with `bash -euo pipefail` from the checkout's root,
//!   with the `export` lines of the earlier run blocks in effect (the reader's shell);
//!   blocks that wait on the system (`kubectl get nodes`: the local edge Ready) are retried
//!   until their check passes;
//! - `sh test:skip` — not run, with the reason in the README's text: the test suite itself
//!   (`scripts/test.sh`), commands for another machine (joining a gateway) or a real cluster
//!   (`helm install`; the chart is tested by `helm_chart.rs`).
//!
//! An unmarked `sh` block fails the test, so every new README command is classified.
//! ` ```text ` blocks are sample output and are not run.
//!
//! **Fresh checkout**: `git clone` of the repository under test (its committed `HEAD`, as CI
//! runs from a clean clone) into `$CARGO_TARGET_DIR/readme/checkout`, removed and cloned
//! again on every run. Its `./kedge-data` is relative to that checkout.
//!
//! **Build cost**: the quickstart's `cargo build --release` would be a second cold build of
//! the workspace with full optimisation (about 8 minutes on 2 cores). Instead the checkout's
//! `target` is a symlink to `$CARGO_TARGET_DIR/readme/target`, which survives between runs,
//! and the environment sets `CARGO_PROFILE_RELEASE_{OPT_LEVEL=0, DEBUG=false,
//! INCREMENTAL=true, CODEGEN_UNITS=256, LTO=false}` (and the same for the `edge` profile of
//! the gateway edgecore the quickstart builds): the commands stay verbatim, the
//! "release" build is as cheap as a debug build, the dependencies are built once per
//! machine, and later runs recompile only the workspace crates (incrementally: a fresh
//! clone gives every file a new mtime). `CARGO_TARGET_DIR` is removed from the command's
//! environment so `./target/release/...` is where the README says. The checkout lives at a
//! fixed path for the same reason (paths are part of cargo's fingerprints).
//!
//! The quickstart binds the default ports (API 6443, hub 10000, metrics 9100, the local
//! edge's MQTT 1883 and metrics): the test fails up front, naming the port, if one is taken.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tests::{bin_dir, workspace_root};

/// How a command block is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Background,
    Run,
    Skip,
}

#[derive(Debug, Clone)]
struct Block {
    mode: Mode,
    text: String,
    /// 1-based line of the opening fence.
    line: usize,
}

/// The fenced `sh` blocks of `markdown`, in order.
fn sh_blocks(markdown: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        if lang != "sh" {
            continue;
        }
        let marks: Vec<&str> = words.collect();
        let mode = match marks.as_slice() {
            ["test:background"] => Mode::Background,
            ["test:run"] => Mode::Run,
            ["test:skip"] => Mode::Skip,
            other => {
                return Err(format!(
                    "README.md:{}: a ```sh block needs exactly one of test:background, test:run, test:skip after the language (found {other:?})",
                    i + 1
                ));
            }
        };
        out.push(Block {
            mode,
            text: body,
            line: i + 1,
        });
    }
    Ok(out)
}

#[test]
fn blocks_are_classified() {
    let md = "# x\n```sh test:run\nls\n```\n```text\n$ out\n```\n```sh test:skip\nscripts/test.sh\n```\n";
    let b = sh_blocks(md).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(
        (b[0].mode, b[0].text.as_str(), b[0].line),
        (Mode::Run, "ls\n", 2)
    );
    assert_eq!(b[1].mode, Mode::Skip);
    let err = sh_blocks("```sh\nrm -rf /\n```\n").unwrap_err();
    assert!(err.contains("README.md:1"), "{err}");
    // The README itself is classified, has one main command, and skips the test runner.
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let blocks = sh_blocks(&readme).unwrap();
    assert_eq!(
        blocks.iter().filter(|b| b.mode == Mode::Background).count(),
        1
    );
    let runner = blocks
        .iter()
        .find(|b| b.text.contains("scripts/test.sh"))
        .unwrap();
    assert_eq!(runner.mode, Mode::Skip);
}

/// The background command: its process group is stopped on drop.
struct Main {
    child: Child,
}

impl Main {
    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, sig);
    }
}

impl Drop for Main {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn git(args: &[&str], cwd: &Path) {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Clone the repository under test into a fixed path with a persistent `target` symlink.
fn fresh_checkout() -> PathBuf {
    let base = bin_dir().parent().unwrap().join("readme");
    let checkout = base.join("checkout");
    let target = base.join("target");
    if checkout.exists() {
        std::fs::remove_dir_all(&checkout).unwrap();
    }
    std::fs::create_dir_all(&target).unwrap();
    git(
        &[
            "clone",
            "--quiet",
            "--no-hardlinks",
            workspace_root().to_str().unwrap(),
            checkout.to_str().unwrap(),
        ],
        &base,
    );
    std::os::unix::fs::symlink(&target, checkout.join("target")).unwrap();
    checkout
}

fn env_for(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("CARGO_TARGET_DIR")
        .env_remove("KUBECONFIG")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        // the gateway edgecore's profile (`scripts/build-edgecore.sh`), as cheap likewise
        .env("CARGO_PROFILE_EDGE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_EDGE_DEBUG", "false")
        .env("CARGO_PROFILE_EDGE_INCREMENTAL", "true")
        .env("CARGO_PROFILE_EDGE_CODEGEN_UNITS", "256")
        .env("CARGO_PROFILE_EDGE_LTO", "false")
        .env("CARGO_TERM_COLOR", "never")
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// Runs one `test:run` block; returns (success, stdout + stderr).
fn run_block(checkout: &Path, exports: &str, block: &Block) -> (bool, String) {
    let script = format!("{exports}\n{}", block.text);
    let out = env_for(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(checkout),
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What a run block's output must show (None: success is enough).
fn check(block: &str, output: &str, node: &str) -> Result<(), String> {
    let row = |cols: &[&str]| {
        output.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.first() == Some(&node) && cols.iter().all(|c| words.contains(c))
        })
    };
    if block.contains("kubectl get nodes") && !row(&["Ready", "edge"]) {
        return Err(format!(
            "node {node} is not listed Ready with the edge role"
        ));
    }
    if block.contains("cloudcore nodes") && !row(&["Ready", "yes"]) {
        return Err(format!("node {node} is not listed Ready and connected"));
    }
    if block.contains("token create") && !output.lines().any(|l| l.starts_with("K10")) {
        return Err("no K10… token printed".into());
    }
    Ok(())
}

#[test]
fn readme_quickstart_runs_verbatim_on_a_fresh_checkout() {
    for port in [6443, 10000, 9100, 9101, 1883] {
        assert!(
            port_free(port),
            "port {port} is in use: the README quickstart binds the default ports; stop what holds it"
        );
    }
    let checkout = fresh_checkout();
    let readme = std::fs::read_to_string(checkout.join("README.md")).unwrap();
    let blocks = sh_blocks(&readme).unwrap();
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_lowercase();

    let main = blocks
        .iter()
        .find(|b| b.mode == Mode::Background)
        .expect("a test:background block");
    let log_path = checkout.join("quickstart.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = env_for(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &main.text])
            .current_dir(&checkout),
    )
    .process_group(0)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(log)
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut main_proc = Main { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The build (dependencies once per machine), then the banner.
    let deadline = Instant::now() + Duration::from_secs(40 * 60);
    let mut banner = Vec::new();
    while !banner
        .iter()
        .any(|l: &String| l.starts_with("local edge: "))
    {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => banner.push(line),
            Err(_) => panic!(
                "README.md:{}: no banner within 40 min; output: {banner:?}\nlog:\n{}",
                main.line,
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        }
    }
    let export = format!(
        "export KUBECONFIG={}",
        checkout.join("kedge-data/kubeconfig.yaml").display()
    );
    assert!(
        banner.iter().any(|l| l == &export),
        "the banner lacks `{export}`: {banner:?}"
    );

    let mut exports = String::new();
    for block in blocks.iter().filter(|b| b.mode == Mode::Run) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (ok, output) = run_block(&checkout, &exports, block);
            let verdict = if ok {
                check(&block.text, &output, &node)
            } else {
                Err("failed".into())
            };
            match verdict {
                Ok(()) => break,
                Err(why) if Instant::now() > deadline => panic!(
                    "README.md:{}: {why}:\n{}\n--- output:\n{output}\n--- quickstart log:\n{}",
                    block.line,
                    block.text,
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
        for line in block.text.lines() {
            if line.trim_start().starts_with("export ") {
                exports.push_str(line);
                exports.push('\n');
            }
        }
    }

    // Ctrl-C in the reader's terminal: SIGINT to the group; a clean exit.
    main_proc.signal(nix::sys::signal::Signal::SIGINT);
    let status = tests::wait_exit(&mut main_proc.child, Duration::from_secs(60)).unwrap();
    assert!(status.success(), "the quickstart exited with {status}");
}
