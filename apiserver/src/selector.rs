//! Label and field selectors, parsed and matched the way Kubernetes does it.
//!
//! Owns the `labelSelector` and `fieldSelector` query-parameter grammars, the
//! `metav1.LabelSelector` object form, label key/value validation and the table of field
//! names each built-in resource can be selected by. No IO.
//!
//! Start reading at [`LabelSelector::parse`] and [`FieldSelector::parse`]. A list or watch
//! handler parses both once per request, checks the field names with
//! [`FieldSelector::validate`] against [`builtin_fields`] (plus a CRD's `selectableFields`),
//! then calls `matches_*` per object; [`FieldSelector::exact_value`] gives the store its fast
//! paths (`metadata.name=x`, `spec.nodeName=y`). Every [`SelectorError`] is a 400 BadRequest,
//! worded like the Kubernetes message it stands for.

#[path = "selector/field.rs"]
mod field;
#[path = "selector/label.rs"]
mod label;
pub use field::{
    FieldRequirement, FieldSelector, builtin_field_value, builtin_fields, builtin_resource,
    field_value,
};
pub use label::{LabelOp, LabelSelector, Requirement};

/// Why a selector was refused. Every variant is answered with 400 BadRequest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The `labelSelector` string breaks the grammar between requirements.
    #[error("{0}")]
    LabelSyntax(String),
    /// One requirement of a `labelSelector` string is malformed or invalid.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A label key is not a qualified name.
    #[error("key: Invalid value: {key:?}: {reason}")]
    InvalidLabelKey { key: String, reason: &'static str },
    /// A label value is too long or has characters a label value may not have.
    #[error("values: Invalid value: {value:?}: {reason}")]
    InvalidLabelValue { value: String, reason: &'static str },
    /// A `metav1.LabelSelector` object is malformed.
    #[error("{0}")]
    LabelSelectorObject(String),
    /// A `fieldSelector` term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldSyntax { selector: String, term: String },
    /// A `fieldSelector` value has a `\` that escapes nothing escapable.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    FieldEscape(String),
    /// A `fieldSelector` value has a bare `,` or `=`.
    #[error("invalid field selector: unescaped character in value: {0}")]
    FieldUnescaped(char),
    /// The resource cannot be selected by this field.
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
}

const NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and \
     must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or \
     '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const PREFIX_MSG: &str = "prefix part a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com')";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
     'MyValue', or 'my_value', or '12345', regex used for validation is \
     '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` on a non-empty string.
fn is_label_token(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            matches!((b.first(), b.last()), (Some(f), Some(e))
                if (f.is_ascii_lowercase() || f.is_ascii_digit())
                    && (e.is_ascii_lowercase() || e.is_ascii_digit()))
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Checks a label key: an optional DNS-1123 subdomain prefix and `/`, then a name of at most
/// 63 characters. Also what object metadata validation should use.
pub fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let bad = |reason| {
        Err(SelectorError::InvalidLabelKey {
            key: key.to_owned(),
            reason,
        })
    };
    let name = match key.split_once('/') {
        None => key,
        Some((_, name)) if name.contains('/') => return bad(NAME_MSG),
        Some(("", _)) => return bad("prefix part must be non-empty"),
        Some((prefix, _)) if prefix.len() > 253 => {
            return bad("prefix part must be no more than 253 characters");
        }
        Some((prefix, _)) if !is_dns1123_subdomain(prefix) => return bad(PREFIX_MSG),
        Some((_, name)) => name,
    };
    if name.is_empty() {
        bad("name part must be non-empty")
    } else if name.len() > 63 {
        bad("name part must be no more than 63 characters")
    } else if !is_label_token(name) {
        bad(NAME_MSG)
    } else {
        Ok(())
    }
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn validate_label_value(value: &str) -> Result<(), SelectorError> {
    let bad = |reason| {
        Err(SelectorError::InvalidLabelValue {
            value: value.to_owned(),
            reason,
        })
    };
    if value.len() > 63 {
        bad("must be no more than 63 characters")
    } else if !value.is_empty() && !is_label_token(value) {
        bad(VALUE_MSG)
    } else {
        Ok(())
    }
}
