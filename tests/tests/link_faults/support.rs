//! Helpers of the link e2e tests: a standalone cloud with short link timers,
//! edges joined with `edgecore join` and run as their own processes (with
//! their delivery journal on), the test objects (one pod per edge referencing
//! N ConfigMaps) and the journal replay that tells what an edge holds.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tests::{Standalone, bin};

/// Key -> (uid, resourceVersion).
pub type State = BTreeMap<String, (String, String)>;

/// `cloudcore standalone` with a short lifecycle grace and the given link
/// timers.
pub struct Cloud {
    pub s: Standalone,
    pub dir: PathBuf,
}

impl Cloud {
    /// Starts on `dir`; `hub_port` pins the hub port (so a restart keeps it).
    pub fn start(dir: &Path, hub_port: Option<u16>, ping: u64, idle: u64) -> Cloud {
        Self::start_with_grace(dir, hub_port, ping, idle, 4)
    }

    /// [`Cloud::start`] with the lifecycle grace (seconds without a Lease renewal before
    /// the node turns Unknown).
    pub fn start_with_grace(
        dir: &Path,
        hub_port: Option<u16>,
        ping: u64,
        idle: u64,
        grace: u64,
    ) -> Cloud {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("cloud.toml");
        std::fs::write(
            &cfg,
            format!(
                "[lifecycle]\ngrace_seconds = {grace}\n[hub]\nping_seconds = {ping}\nidle_seconds = {idle}\n"
            ),
        )
        .unwrap();
        let listen = hub_port.map(|p| format!("127.0.0.1:{p}"));
        let mut extra = vec!["--config", cfg.to_str().unwrap()];
        if let Some(l) = &listen {
            extra.extend(["--hub-listen", l.as_str()]);
        }
        let s = Standalone::start(dir, &extra).unwrap();
        Cloud {
            s,
            dir: dir.to_path_buf(),
        }
    }

    /// The hub's address.
    pub fn hub_addr(&self) -> SocketAddr {
        self.s
            .hub
            .trim_start_matches("wss://")
            .parse()
            .unwrap_or_else(|e| panic!("hub url {:?}: {e}", self.s.hub))
    }

    /// A kube-rs client.
    pub async fn client(&self) -> kube::Client {
        self.s.client().await.unwrap()
    }

    /// A join token (valid 1 h).
    pub fn token(&self) -> String {
        let out = Command::new(bin("cloudcore"))
            .args(["token", "create", "--ttl", "1h", "--kubeconfig"])
            .arg(&self.s.kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until node `name` has Ready=`status`.
    pub async fn wait_ready(&self, name: &str, status: &str, timeout: Duration) {
        let nodes: Api<Node> = Api::all(self.client().await);
        tests::eventually(&format!("node {name} Ready={status}"), timeout, || async {
            let n = nodes.get_opt(name).await.ok().flatten()?;
            let ready = n
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.status == status).then_some(())
        })
        .await;
    }

    /// `kill -9` of cloudcore.
    pub fn kill9(&mut self) {
        self.s.kill9();
    }
}

/// A joined edge run as its own `edgecore run` process.
pub struct Edge {
    pub name: String,
    pub root: PathBuf,
    child: Option<Child>,
}

impl Edge {
    /// `edgecore join --no-start` against `cloud` with a fresh token.
    pub fn join(cloud: &Cloud, name: &str, root: &Path) -> Edge {
        Self::join_via(cloud, &cloud.s.hub, name, root)
    }

    /// `edgecore join --no-start` through the hub at `server` (another replica, a proxy)
    /// with a fresh token of `cloud`.
    pub fn join_via(cloud: &Cloud, server: &str, name: &str, root: &Path) -> Edge {
        let token = cloud.token();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let out = Command::new(bin("edgecore"))
            .args(["join", "--server", server, "--token", &token])
            .args(["--node-name", name, "--no-start"])
            .args(["--mqtt-listen", "127.0.0.1:0", "--metrics-listen"])
            .arg(metrics.to_string())
            .arg("--root")
            .arg(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "join {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Edge {
            name: name.to_owned(),
            root: root.to_path_buf(),
            child: None,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("etc/kedge/edgecore.toml")
    }

    /// Points the edge at another hub URL (e.g. a proxy).
    pub fn point_at(&self, url: &str) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let mut found = false;
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                if !found && l.trim_start().starts_with("server =") {
                    found = true;
                    format!("server = \"{url}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        assert!(found, "no server line in {text}");
        std::fs::write(self.config(), out.join("\n") + "\n").unwrap();
    }

    /// The log file (JSON lines, journal included).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("edge.log")
    }

    /// Starts `edgecore run` with the delivery journal on.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(bin("edgecore"))
            .arg("run")
            .arg("--config")
            .arg(self.config())
            .env("KEDGE_LOG_FORMAT", "json")
            .env("KEDGE_LOG", "info,kedge_journal=debug,rumqttd=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Takes the edge store's lock (`<root>/var/lib/kedge.lock`, beside the store) as a
    /// short-lived reader such as `edgecore status` does; released when dropped.
    pub fn hold_store_lock(&self) -> std::fs::File {
        let path = self.root.join("var/lib/kedge.lock");
        assert!(path.exists(), "no store lock at {}", path.display());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.try_lock().unwrap();
        f
    }

    /// Whether edgecore still runs (not exited).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let st = tests::wait_exit(&mut child, Duration::from_secs(20)).unwrap();
            assert!(st.success(), "{} exited with {st}", self.name);
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `edgecore status -o json`.
    pub fn status(&self) -> Value {
        let out = Command::new(bin("edgecore"))
            .args(["status", "-o", "json", "--root"])
            .arg(&self.root)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The link state (`live`, `syncing`, ...).
    pub fn link(&self) -> String {
        self.status()["link"].as_str().unwrap_or("").to_owned()
    }

    /// Sessions started since edgecore started.
    pub fn sessions(&self) -> u64 {
        self.status()["sessions"].as_u64().unwrap_or(0)
    }

    /// The journal so far.
    pub fn journal(&self) -> Journal {
        Journal::parse(&std::fs::read_to_string(self.log_path()).unwrap_or_default())
    }

    /// `Some` when the edge holds exactly `want` for the test objects: every
    /// key of `want` with its uid and resourceVersion, and no other key
    /// under the same names (the pod name is the prefix of every name).
    pub fn converged(&self, want: &State) -> Option<()> {
        let held = self.journal().held;
        for (k, v) in want {
            if held.get(k) != Some(v) {
                return None;
            }
        }
        let prefixes: BTreeSet<String> = want
            .keys()
            .filter(|k| k.contains("/pod/"))
            .map(|k| k.replace("/pod/", "/configmap/") + "-")
            .collect();
        let extra = held
            .keys()
            .any(|k| prefixes.iter().any(|p| k.starts_with(p)) && !want.contains_key(k));
        (!extra).then_some(())
    }

    /// Waits until [`Edge::converged`]; on timeout fails with what differs
    /// and the tail of the edge's log.
    pub async fn wait_converged(&self, want: &State, timeout: Duration) {
        self.wait_converged_with(|| async { want.clone() }, timeout)
            .await;
    }

    /// Waits until the edge holds exactly the API's current state of `keys`
    /// (re-read at every poll: objects may change meanwhile, e.g. a pod's
    /// status while its node was unreachable).
    pub async fn wait_converged_to_api(
        &self,
        client: &kube::Client,
        keys: &[String],
        timeout: Duration,
    ) {
        self.wait_converged_with(|| api_state(client, keys), timeout)
            .await;
    }

    async fn wait_converged_with<F, Fut>(&self, mut want_now: F, timeout: Duration)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = State>,
    {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let want = &want_now().await;
            if self.converged(want).is_some() {
                return;
            }
            if std::time::Instant::now() > deadline {
                let held = self.journal().held;
                let diff: Vec<String> = want
                    .iter()
                    .filter(|(k, v)| held.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k}: want {v:?}, held {:?}", held.get(k)))
                    .take(10)
                    .collect();
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.contains("kedge_journal"))
                    .rev()
                    .take(30)
                    .collect();
                panic!(
                    "{} did not converge within {timeout:?}; link {}; differences:\n{}\nlog tail (newest first):\n{}",
                    self.name,
                    self.link(),
                    diff.join("\n"),
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// No key went back to an older version, no deleted incarnation came back.
    pub fn assert_journal_clean(&self) {
        let j = self.journal();
        assert!(j.entries > 0, "{}: the journal is empty", self.name);
        assert!(
            j.violations.is_empty(),
            "{}: journal violations:\n{}",
            self.name,
            j.violations.join("\n")
        );
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The edge's delivery journal replayed.
#[derive(Debug, Default)]
pub struct Journal {
    /// What the edge holds: key -> (uid, rv).
    pub held: State,
    /// Ordering violations found.
    pub violations: Vec<String>,
    /// Delete / tombstone frames seen per key.
    pub removals: BTreeMap<String, usize>,
    /// Journaled frames.
    pub entries: usize,
}

fn rv_num(rv: &str) -> Option<u64> {
    rv.parse().ok()
}

impl Journal {
    /// Replays the JSON log lines of target `kedge_journal`, following the
    /// edge's own rules (an older version of the same uid is ignored; a
    /// delete removes only its uid; a tombstone removes the key).
    pub fn parse(log: &str) -> Journal {
        let mut j = Journal::default();
        let mut gone: BTreeSet<(String, String)> = BTreeSet::new();
        for line in log.lines() {
            if !line.contains("kedge_journal") {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["target"] != "kedge_journal" {
                continue;
            }
            j.entries += 1;
            let s = |f: &str| v[f].as_str().unwrap_or("").to_owned();
            let (kind, op, key, uid, rv) = (s("kind"), s("op"), s("key"), s("uid"), s("rv"));
            match (kind.as_str(), op.as_str()) {
                ("object", "delete") => {
                    *j.removals.entry(key.clone()).or_default() += 1;
                    if j.held.get(&key).is_some_and(|(u, _)| *u == uid) {
                        j.held.remove(&key);
                    }
                    gone.insert((key, uid));
                }
                ("tombstone", _) => {
                    *j.removals.entry(key.clone()).or_default() += 1;
                    if let Some((u, _)) = j.held.remove(&key) {
                        gone.insert((key, u));
                    }
                }
                ("object", _) => {
                    if gone.contains(&(key.clone(), uid.clone())) {
                        j.violations.push(format!(
                            "{key}: deleted incarnation {uid} came back at {rv}"
                        ));
                    }
                    match j.held.get(&key) {
                        Some((u, held_rv)) if *u == uid => {
                            if let (Some(n), Some(h)) = (rv_num(&rv), rv_num(held_rv))
                                && n < h
                            {
                                j.violations
                                    .push(format!("{key}: went back from {held_rv} to {rv}"));
                                continue;
                            }
                        }
                        Some((u, held_rv)) => {
                            if let (Some(n), Some(h)) = (rv_num(&rv), rv_num(held_rv))
                                && n < h
                            {
                                j.violations.push(format!(
                                    "{key}: older incarnation {uid}@{rv} replaced {u}@{held_rv}"
                                ));
                            }
                            gone.insert((key.clone(), u.clone()));
                        }
                        None => {}
                    }
                    j.held.insert(key, (uid, rv));
                }
                _ => {}
            }
        }
        j
    }

    /// How many held keys start with `prefix`.
    pub fn held_with_prefix(&self, prefix: &str) -> usize {
        self.held.keys().filter(|k| k.starts_with(prefix)).count()
    }
}

/// Keys of the test objects `<prefix>-0..n` (ConfigMaps) and the pod `<prefix>`.
pub fn cm_keys(prefix: &str, n: usize, with_pod: bool) -> Vec<String> {
    let mut keys: Vec<String> = (0..n)
        .map(|i| format!("default/configmap/{prefix}-{i}"))
        .collect();
    if with_pod {
        keys.push(format!("default/pod/{prefix}"));
    }
    keys
}

/// The API's (uid, resourceVersion) of `keys` (absent ones left out).
pub async fn api_state(client: &kube::Client, keys: &[String]) -> State {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut out = State::new();
    for key in keys {
        let mut parts = key.splitn(3, '/');
        let (_, kind, name) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
        let meta = match kind {
            Some("configmap") => cms.get_opt(name).await.unwrap().map(|o| o.metadata),
            Some("pod") => pods.get_opt(name).await.unwrap().map(|o| o.metadata),
            _ => panic!("unexpected key {key}"),
        };
        if let Some(m) = meta {
            out.insert(
                key.clone(),
                (
                    m.uid.unwrap_or_default(),
                    m.resource_version.unwrap_or_default(),
                ),
            );
        }
    }
    out
}

/// ~2 KiB of data so updates have weight.
fn filler(tag: &str) -> String {
    format!("{tag}:{}", "x".repeat(2000))
}

/// Creates (if absent) ConfigMaps `<prefix>-0..n` and the pod `<prefix>`
/// bound to `node`, referencing all of them as volumes.
pub async fn create_app(client: &kube::Client, node: &str, prefix: &str, n: usize) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..n)
        .map(|i| {
            let cms = cms.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("{prefix}-{i}"), "namespace": "default"},
                    "data": {"v": filler("0")}
                }))
                .unwrap();
                match cms.create(&PostParams::default(), &cm).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => panic!("creating ConfigMap {prefix}-{i}: {e}"),
                }
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let volumes: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("v{i}"), "configMap": {"name": format!("{prefix}-{i}")}}))
        .collect();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": prefix, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": volumes,
        }
    }))
    .unwrap();
    match pods.create(&PostParams::default(), &pod).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating pod {prefix}: {e}"),
    }
}

/// `rounds` updates of each ConfigMap `<prefix>-0..n` (8 in parallel).
pub async fn update_cms(client: &kube::Client, prefix: &str, n: usize, rounds: usize) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for _ in 0..rounds {
        let tag = format!("{}", rand_tag());
        futures::stream::iter(0..n)
            .map(|i| {
                let cms = cms.clone();
                let tag = tag.clone();
                async move {
                    let patch = json!({"data": {"v": filler(&tag)}});
                    cms.patch(
                        &format!("{prefix}-{i}"),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("updating {prefix}-{i}: {e}"));
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
    }
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Deletes the pod `<prefix>` at once (grace 0) and the listed ConfigMaps,
/// and waits until they are gone.
pub async fn delete_app(client: &kube::Client, prefix: &str, cm_indices: &[usize]) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete(prefix, &now).await.unwrap();
    for i in cm_indices {
        cms.delete(&format!("{prefix}-{i}"), &now).await.unwrap();
    }
    tests::eventually(
        "the deleted objects gone",
        Duration::from_secs(20),
        || async {
            let pod_gone = pods.get_opt(prefix).await.ok()?.is_none();
            let mut cms_gone = true;
            for i in cm_indices {
                cms_gone &= cms.get_opt(&format!("{prefix}-{i}")).await.ok()?.is_none();
            }
            (pod_gone && cms_gone).then_some(())
        },
    )
    .await;
}
