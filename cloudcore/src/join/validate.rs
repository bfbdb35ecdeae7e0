//! Name and label syntax, as Kubernetes' apimachinery validation defines it.

use std::collections::BTreeMap;

/// Labels a joining node may not set on itself (Kubernetes' NodeRestriction reserves them).
const RESERVED_LABEL_PREFIXES: [&str; 2] = ["node-restriction.kubernetes.io/", "kedge.io/"];

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (what Node names must be): dot-separated DNS-1123 labels, at most
/// 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_qualified_part(v)
}

fn is_qualified_part(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A label key: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name as a value but
/// not empty.
pub fn is_label_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_part(name),
        None => is_qualified_part(k),
    }
}

/// Checks join labels; the error names the first offending entry.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in labels {
        if !is_label_key(k) {
            return Err(format!("invalid label key {k:?}"));
        }
        if !is_label_value(v) {
            return Err(format!("invalid value {v:?} for label {k:?}"));
        }
        if let Some(p) = RESERVED_LABEL_PREFIXES.iter().find(|p| k.starts_with(*p)) {
            return Err(format!("label {k:?} uses the reserved prefix {p:?}"));
        }
    }
    Ok(())
}
