//! The Helm chart `deploy/helm/cloudcore` rendered by the real Helm engine (PyPI
//! `helm-python-sdk`, Helm v4's library, driven by `tests/helm_render.py`), for the chart
//! tests and the RBAC audit check.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::workspace_root;

/// The namespace the chart is rendered into.
pub const NS: &str = "kedge-system";

pub fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/helm/cloudcore")
}

/// What `helm_render.py` returns.
pub struct Rendered {
    /// `helm lint`'s result.
    pub lint: Value,
    /// Rendered templates by path.
    pub manifests: BTreeMap<String, String>,
    /// The chart's CRDs.
    pub crds: Vec<Value>,
}

pub enum RenderResult {
    Ok(Rendered),
    /// The engine refused (render or values error): its message.
    Failed(String),
    /// No python3 / helm_python here: the reason.
    Skip(String),
}

/// Renders the chart with `values`.
pub fn try_render(values: &Value) -> RenderResult {
    let script = workspace_root().join("tests/helm_render.py");
    let child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return RenderResult::Skip(format!("cannot run python3: {e}")),
    };
    let req = json!({
        "chart": chart_dir(), "values": values, "name": "cloudcore", "namespace": NS,
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => {}
        Some(3) => return RenderResult::Skip(stderr.trim().to_owned()),
        _ => return RenderResult::Failed(stderr),
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifests = v["manifests"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_owned()))
        .collect();
    RenderResult::Ok(Rendered {
        lint: v["lint"].clone(),
        manifests,
        crds: v["crds"].as_array().cloned().unwrap_or_default(),
    })
}

/// Renders, or returns `None` after printing why the test is skipped.
pub fn render(values: &Value) -> Option<Rendered> {
    match try_render(values) {
        RenderResult::Ok(r) => Some(r),
        RenderResult::Failed(e) => panic!("rendering with {values} failed:\n{e}"),
        RenderResult::Skip(why) => {
            eprintln!("SKIP helm_chart: {why} (pip install -r scripts/requirements-test.txt)");
            None
        }
    }
}

impl Rendered {
    /// Every object of every rendered `.yaml` template, Namespaces first.
    pub fn docs(&self) -> Vec<Value> {
        let mut docs: Vec<Value> = Vec::new();
        for (path, text) in &self.manifests {
            if !path.ends_with(".yaml") {
                continue;
            }
            let parsed: Vec<Value> = serde_saphyr::from_multiple(text)
                .unwrap_or_else(|e| panic!("{path} is not YAML: {e}\n{text}"));
            docs.extend(parsed.into_iter().filter(|d| d.is_object()));
        }
        docs.sort_by_key(|d| d["kind"] != "Namespace");
        docs
    }

    /// NOTES.txt.
    pub fn notes(&self) -> &str {
        self.manifests
            .iter()
            .find(|(k, _)| k.ends_with("NOTES.txt"))
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    /// Lint found no warning or error.
    pub fn assert_lint_clean(&self) {
        assert_eq!(self.lint["errors"], json!([]), "lint: {}", self.lint);
        for m in self.lint["messages"].as_array().unwrap() {
            assert!(
                m["severity"].as_i64().unwrap() < 2,
                "lint warning/error: {m}"
            );
        }
    }
}
