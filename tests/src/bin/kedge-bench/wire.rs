//! Just enough of the API's JSON to check answers: names and versions of list items, the
//! continue token, and the resourceVersion of a watch event.

use anyhow::{Context, Result};
use serde::Deserialize;

/// `metadata` of a list.
#[derive(Debug, Deserialize)]
pub struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    pub resource_version: String,
    #[serde(rename = "continue", default)]
    pub cont: Option<String>,
}

/// An object reduced to its name and version.
#[derive(Debug, Deserialize)]
pub struct Named {
    pub metadata: ObjectMeta,
}

/// `metadata` of an object.
#[derive(Debug, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "resourceVersion", default)]
    pub resource_version: String,
}

/// A list.
#[derive(Debug, Deserialize)]
pub struct List {
    pub metadata: ListMeta,
    pub items: Vec<Named>,
}

impl List {
    /// The continue token, if another page follows.
    pub fn next(&self) -> Option<&str> {
        self.metadata.cont.as_deref().filter(|c| !c.is_empty())
    }
}

/// Decode a list answer.
pub fn list(body: &[u8]) -> Result<List> {
    serde_json::from_slice(body).with_context(|| {
        format!(
            "not a list: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    })
}

/// The resourceVersion of one object.
pub fn object_rv(body: &[u8]) -> Result<u64> {
    let o: Named = serde_json::from_slice(body).context("decoding an object")?;
    o.metadata
        .resource_version
        .parse()
        .context("the object's resourceVersion is not ours")
}

/// The type and resourceVersion of one watch line, cheaply: the first `"resourceVersion":"`
/// in a line is the object's own (managedFields name fields `f:<name>`, so they cannot hold
/// it). Falls back to a full decode when the fast path does not apply.
pub fn watch_event(line: &[u8]) -> Option<(&'static str, u64)> {
    const KINDS: [&str; 4] = ["MODIFIED", "ADDED", "DELETED", "BOOKMARK"];
    let kind = KINDS.into_iter().find(|k| {
        line.strip_prefix(b"{\"type\":\"")
            .is_some_and(|rest| rest.starts_with(k.as_bytes()))
    })?;
    let needle = "\"resourceVersion\":\"";
    let rv = std::str::from_utf8(line)
        .ok()
        .and_then(|text| {
            let rest = &text[text.find(needle)? + needle.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .or_else(|| {
            #[derive(Deserialize)]
            struct Ev {
                object: Named,
            }
            let ev: Ev = serde_json::from_slice(line).ok()?;
            ev.object.metadata.resource_version.parse().ok()
        })?;
    Some((kind, rv))
}

#[cfg(test)]
mod tests {
    #[test]
    fn watch_line_fast_path_reads_the_object_version() {
        let line = br#"{"type":"MODIFIED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","resourceVersion":"42"}}}"#;
        assert_eq!(super::watch_event(line), Some(("MODIFIED", 42)));
    }
}
