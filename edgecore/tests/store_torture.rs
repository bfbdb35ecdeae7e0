//! Kill -9 torture of the edge store, short CI run (the benchmark runs
//! `edgecore-torture --cycles 300`): every flushed batch survives SIGKILL and
//! the store always reopens.

use std::process::Command;
use std::time::Duration;

#[test]
fn flushed_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgecore-torture"))
        .args(["--cycles", "30", "--max-run-ms", "120", "--dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn edgecore-torture");
    // Bound the whole run: 30 cycles take a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let text = String::from_utf8_lossy(&out.stdout);
            println!("{text}");
            assert!(status.success(), "torture failed: {text}");
            assert!(text.starts_with("ok: 30 cycles"), "{text}");
            return;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "edgecore-torture did not finish within 120 s (a child hung on the store lock?)"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
