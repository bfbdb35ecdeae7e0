//! Liveness, readiness and startup probes (exec through CRI `ExecSync`, httpGet and
//! tcpSocket to the pod IP — 127.0.0.1 for hostNetwork pods). They run on the edge alone,
//! so they are enforced while the cloud is away.
//!
//! [`Prober`] is the pure bookkeeping (which probe is due, thresholds, verdicts); [`check`]
//! runs one probe. The loop spawns due probes as tasks and folds their results back in.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cri::Cri;
use super::spec::{Container, Probe};

/// The three probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Gates the other two until it succeeds; failing it kills the container.
    Startup,
    /// Failing it kills the container (restarted per the restart policy).
    Liveness,
    /// Failing it marks the container not ready.
    Readiness,
}

#[derive(Debug, Clone, Default)]
struct State {
    successes: u32,
    failures: u32,
    /// The thresholded result.
    passed: Option<bool>,
    next_ms: i64,
    in_flight: bool,
}

/// What a probe result means for the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    None,
    /// Liveness or startup failed past the threshold: kill the container.
    Kill,
    /// Readiness changed: write the status.
    ReadinessChanged,
}

/// Probe bookkeeping for every running container.
#[derive(Debug, Default)]
pub struct Prober {
    states: BTreeMap<(String, Kind), State>,
}

fn secs(v: Option<i64>, default: i64) -> i64 {
    v.filter(|s| *s > 0).unwrap_or(default)
}

fn probe_of(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
    }
}

impl Prober {
    /// Whether the startup probe (if any) has succeeded.
    pub fn started(&self, id: &str, c: &Container) -> bool {
        c.startup_probe.is_none()
            || self
                .states
                .get(&(id.to_owned(), Kind::Startup))
                .is_some_and(|s| s.passed == Some(true))
    }

    /// Whether the container counts as ready (started, and its readiness probe passed).
    pub fn ready(&self, id: &str, c: &Container) -> bool {
        self.started(id, c)
            && (c.readiness_probe.is_none()
                || self
                    .states
                    .get(&(id.to_owned(), Kind::Readiness))
                    .is_some_and(|s| s.passed == Some(true)))
    }

    /// The probes of container `id` due at `now_ms` (marked in flight).
    pub fn due(
        &mut self,
        id: &str,
        c: &Container,
        started_ms: i64,
        now_ms: i64,
    ) -> Vec<(Kind, Probe)> {
        let mut out = Vec::new();
        let started = self.started(id, c);
        for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
            let Some(p) = probe_of(c, kind) else { continue };
            if kind != Kind::Startup && !started {
                continue;
            }
            let st = self
                .states
                .entry((id.to_owned(), kind))
                .or_insert_with(|| State {
                    next_ms: started_ms + secs(p.initial_delay_seconds, 0) * 1000,
                    ..State::default()
                });
            if kind == Kind::Startup && st.passed == Some(true) {
                continue;
            }
            if !st.in_flight && now_ms >= st.next_ms {
                st.in_flight = true;
                out.push((kind, p.clone()));
            }
        }
        out
    }

    /// Folds in one result.
    pub fn record(
        &mut self,
        id: &str,
        c: &Container,
        kind: Kind,
        ok: bool,
        now_ms: i64,
    ) -> Verdict {
        let Some(p) = probe_of(c, kind) else {
            return Verdict::None;
        };
        let Some(st) = self.states.get_mut(&(id.to_owned(), kind)) else {
            return Verdict::None;
        };
        st.in_flight = false;
        st.next_ms = now_ms + secs(p.period_seconds, 10) * 1000;
        let before = st.passed;
        if ok {
            st.successes += 1;
            st.failures = 0;
            let need = if kind == Kind::Readiness {
                secs(p.success_threshold, 1)
            } else {
                1
            };
            if i64::from(st.successes) >= need {
                st.passed = Some(true);
            }
        } else {
            st.failures += 1;
            st.successes = 0;
            if i64::from(st.failures) >= secs(p.failure_threshold, 3) {
                st.passed = Some(false);
            }
        }
        match kind {
            Kind::Liveness | Kind::Startup if st.passed == Some(false) => Verdict::Kill,
            Kind::Readiness if before != st.passed => Verdict::ReadinessChanged,
            Kind::Startup if before != st.passed => Verdict::ReadinessChanged,
            _ => Verdict::None,
        }
    }

    /// Forgets containers that are gone (or killed).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.states.retain(|(id, _), _| keep(id));
    }
}

fn port(v: &Value) -> Option<u16> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Runs one probe against container `id` whose pod answers at `ip`.
pub async fn check(cri: &Cri, id: &str, p: &Probe, ip: &str) -> bool {
    let timeout = Duration::from_secs(secs(p.timeout_seconds, 1).unsigned_abs());
    if let Some(e) = &p.exec {
        return matches!(
            cri.exec_sync(id, e.command.clone(), timeout).await,
            Ok((0, _))
        );
    }
    let (host, port_v, path) = if let Some(h) = &p.http_get {
        (
            h.host.clone(),
            &h.port,
            Some(h.path.clone().unwrap_or_else(|| "/".to_owned())),
        )
    } else if let Some(t) = &p.tcp_socket {
        (t.host.clone(), &t.port, None)
    } else {
        return true;
    };
    let Some(port) = port(port_v) else {
        return false;
    };
    let host = host.unwrap_or_else(|| ip.to_owned());
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let Some(path) = path else { return Some(true) };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/kedge\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let line = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(probes: Value) -> Container {
        let mut c = json!({"name": "c", "image": "i"});
        if let (Some(c), Some(p)) = (c.as_object_mut(), probes.as_object()) {
            c.extend(p.clone());
        }
        serde_json::from_value(c).unwrap()
    }

    #[test]
    fn liveness_kills_after_the_threshold() {
        let c = container(json!({"livenessProbe": {"exec": {"command": ["false"]},
            "initialDelaySeconds": 2, "periodSeconds": 1, "failureThreshold": 2}}));
        let mut p = Prober::default();
        assert!(p.due("x", &c, 0, 1_000).is_empty(), "initial delay");
        assert_eq!(p.due("x", &c, 0, 2_000).len(), 1);
        assert!(p.due("x", &c, 0, 2_000).is_empty(), "in flight");
        assert_eq!(
            p.record("x", &c, Kind::Liveness, false, 2_000),
            Verdict::None
        );
        assert!(p.due("x", &c, 0, 2_500).is_empty(), "period");
        assert_eq!(p.due("x", &c, 0, 3_000).len(), 1);
        assert_eq!(
            p.record("x", &c, Kind::Liveness, false, 3_000),
            Verdict::Kill
        );
    }

    #[test]
    fn startup_gates_readiness() {
        let c = container(json!({
            "startupProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1},
            "readinessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1}}));
        let mut p = Prober::default();
        assert!(!p.ready("x", &c));
        let due = p.due("x", &c, 0, 0);
        assert_eq!(
            due.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![Kind::Startup]
        );
        p.record("x", &c, Kind::Startup, true, 0);
        let due = p.due("x", &c, 0, 1_000);
        assert_eq!(
            due.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![Kind::Readiness]
        );
        assert_eq!(
            p.record("x", &c, Kind::Readiness, true, 1_000),
            Verdict::ReadinessChanged
        );
        assert!(p.ready("x", &c));
        p.retain(|_| false);
        assert!(!p.ready("x", &c));
    }

    #[tokio::test]
    async fn tcp_and_http_checks() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            }
        });
        let cri = Cri::new("/nonexistent.sock").unwrap();
        let tcp: Probe = serde_json::from_value(json!({"tcpSocket": {"port": port}})).unwrap();
        assert!(check(&cri, "x", &tcp, "127.0.0.1").await);
        let http: Probe =
            serde_json::from_value(json!({"httpGet": {"port": port, "path": "/healthz"}})).unwrap();
        assert!(check(&cri, "x", &http, "127.0.0.1").await);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let bad: Probe = serde_json::from_value(json!({"tcpSocket": {"port": dead}})).unwrap();
        assert!(!check(&cri, "x", &bad, "127.0.0.1").await);
    }
}
