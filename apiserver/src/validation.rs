//! Object name and metadata validation, worded exactly as Kubernetes words it
//! (`k8s.io/apimachinery/pkg/util/validation`, `.../api/validation`).
//!
//! Start at [`validate_object_meta`] with the [`NameRule`] from [`name_rule`];
//! turn the resulting [`FieldError`]s into a 422 `Invalid` Status with
//! [`invalid_status`]. The `is_*` functions return Kubernetes' messages (empty
//! when valid) for callers that validate other fields. [`generate_name_suffix`]
//! implements `metadata.generateName`.

use serde_json::{Map, Value, json};

/// Max length of a DNS-1123 label (also DNS-1035 labels and label values).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Max length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Max total bytes of all annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// `names.MaxGeneratedNameLength`: generateName prefixes are cut to this.
pub const MAX_GENERATED_NAME_LENGTH: usize = 63 - 5;
/// `utilrand`'s alphabet for generated name suffixes (no vowels, no 0/1/3).
pub const GENERATE_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// `validation.RegexError`.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    // Go appends "'ex', " per example and " or " between them, so two
    // examples read "'a',  or 'b', " (two spaces), exactly as kubectl shows.
    let ex: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        ex.join(" or ")
    )
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(v: &str) -> bool {
    let b = v.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            alnum_lower(f) && alnum_lower(l) && b.iter().all(|&c| alnum_lower(c) || c == b'-')
        }
        _ => false,
    }
}

fn matches_dns1123_subdomain(v: &str) -> bool {
    v.split('.').all(matches_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(v: &str) -> bool {
    let b = v.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// DNS-1123 label (namespaces): lower-case alphanumerics and `-`, ≤ 63.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_owned());
        } else {
            errs.push(regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// DNS-1123 subdomain (most object names): labels joined by `.`, ≤ 253.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// DNS-1035 label (services): like a DNS-1123 label but starting with a letter.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !(matches_dns1123_label(value)
        && value.as_bytes().first().is_some_and(u8::is_ascii_lowercase))
    {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Qualified name (label keys, annotation keys, finalizers): an optional
/// DNS subdomain prefix and `/`, then a name of ≤ 63 characters.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(DNS1123_LABEL_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Label value: empty, or a qualified-name part of ≤ 63 characters.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// ConfigMap / Secret data key: `[-._a-zA-Z0-9]+`, ≤ 253, not `.`/`..`/`..*`.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errs.push("must not be '.'".to_owned());
    } else if value == ".." {
        errs.push("must not be '..'".to_owned());
    } else if value.starts_with("..") {
        errs.push("must not start with '..'".to_owned());
    }
    errs
}

/// `path.IsValidPathSegmentName`: not `.`/`..`, no `/` or `%`.
pub fn is_valid_path_segment_name(value: &str) -> Vec<String> {
    if value == "." || value == ".." {
        return vec![format!("may not be '{value}'")];
    }
    is_valid_path_segment_prefix(value)
}

/// `path.IsValidPathSegmentPrefix`: no `/` or `%`.
pub fn is_valid_path_segment_prefix(value: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|bad| value.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// Which rule a resource's `metadata.name` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most resources, custom resources included.
    Subdomain,
    /// DNS-1123 label: namespaces.
    Label,
    /// DNS-1035 label: services.
    Dns1035Label,
    /// Anything usable in a URL path: RBAC objects (`system:node`), CSRs.
    PathSegment,
}

impl NameRule {
    /// Kubernetes' `ValidateNameFunc`: messages for `name`; `prefix` means it
    /// is a `generateName` that gets a suffix appended.
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        // maskTrailingDash: a generateName may end in '-'.
        // maskTrailingDash: a generateName may end in '-'. Go cuts two bytes
        // (not one) and appends "a"; cutting inside a UTF-8 sequence leaves an
        // invalid name, which then fails validation as it does in Go.
        let masked;
        let name = if prefix && self != Self::PathSegment && name.len() > 1 && name.ends_with('-') {
            let kept = name.as_bytes().get(..name.len() - 2).unwrap_or_default();
            masked = format!("{}a", String::from_utf8_lossy(kept));
            masked.as_str()
        } else {
            name
        };
        match self {
            Self::Subdomain => is_dns1123_subdomain(name),
            Self::Label => is_dns1123_label(name),
            Self::Dns1035Label => is_dns1035_label(name),
            Self::PathSegment if prefix => is_valid_path_segment_prefix(name),
            Self::PathSegment => is_valid_path_segment_name(name),
        }
    }
}

/// The name rule Kubernetes applies to objects of `group`/`plural`.
pub fn name_rule(group: &str, plural: &str) -> NameRule {
    match (group, plural) {
        ("", "namespaces") => NameRule::Label,
        ("", "services") => NameRule::Dns1035Label,
        (
            "rbac.authorization.k8s.io",
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings",
        )
        | ("certificates.k8s.io", "certificatesigningrequests") => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// `field.ErrorType`: why a field is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    /// `FieldValueNotFound`.
    NotFound,
    /// `FieldValueRequired`.
    Required,
    /// `FieldValueDuplicate`.
    Duplicate,
    /// `FieldValueInvalid`.
    Invalid,
    /// `FieldValueNotSupported`.
    NotSupported,
    /// `FieldValueForbidden`.
    Forbidden,
    /// `FieldValueTooLong`.
    TooLong,
    /// `FieldValueTooMany`.
    TooMany,
    /// `InternalError`.
    Internal,
    /// `FieldValueTypeInvalid`.
    TypeInvalid,
}

impl FieldErrorType {
    /// The StatusCause `reason` (`FieldValueInvalid`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Internal => "InternalError",
            Self::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The human phrase (`Invalid value`, `Required value`, ...).
    pub fn phrase(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Internal => "Internal error",
        }
    }
}

/// One field-level validation error (`field.Error`); displays as Kubernetes
/// prints it: `metadata.name: Invalid value: "Foo": a lowercase ...`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {}", self.body())]
pub struct FieldError {
    /// JSON path of the field, e.g. `metadata.labels`.
    pub field: String,
    /// What is wrong.
    pub kind: FieldErrorType,
    /// The offending value (not shown for Required/Forbidden/TooLong/Internal).
    pub value: Value,
    /// Explanation appended after the value.
    pub detail: String,
}

impl FieldError {
    /// `field.Invalid`.
    pub fn invalid(field: &str, value: Value, detail: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            kind: FieldErrorType::Invalid,
            value,
            detail: detail.into(),
        }
    }

    /// `field.Required`.
    pub fn required(field: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            kind: FieldErrorType::Required,
            value: json!(""),
            detail: detail.into(),
        }
    }

    /// `field.Forbidden`.
    pub fn forbidden(field: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            kind: FieldErrorType::Forbidden,
            value: json!(""),
            detail: detail.into(),
        }
    }

    /// `field.TooLong` (`must have at most N bytes`).
    pub fn too_long(field: &str, max_bytes: usize) -> Self {
        Self {
            field: field.to_owned(),
            kind: FieldErrorType::TooLong,
            value: json!(""),
            detail: format!("must have at most {max_bytes} bytes"),
        }
    }

    /// `field.TypeInvalid`.
    pub fn type_invalid(field: &str, value: Value, detail: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            kind: FieldErrorType::TypeInvalid,
            value,
            detail: detail.into(),
        }
    }

    /// `ErrorBody()`: the message without the field, as in a StatusCause.
    pub fn body(&self) -> String {
        let mut s = match self.kind {
            FieldErrorType::Required
            | FieldErrorType::Forbidden
            | FieldErrorType::TooLong
            | FieldErrorType::Internal => self.kind.phrase().to_owned(),
            _ => format!("{}: {}", self.kind.phrase(), go_value(&self.value)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

/// How Go's `%q` / `%v` / `%#v` print a bad value in a field error.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let inner: Vec<String> = items
                .iter()
                .filter_map(Value::as_str)
                .map(go_quote)
                .collect();
            format!("[]string{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Validates `metadata` for create, as `ValidateObjectMetaAccessor` does:
/// generateName, name, namespace, generation, labels, annotations,
/// ownerReferences and finalizers, in that order. Name generation must
/// already have happened (see [`generate_name_suffix`]).
pub fn validate_object_meta(meta: &Value, rule: NameRule, namespaced: bool) -> Vec<FieldError> {
    validate_meta_with(meta, &|n, prefix| rule.check(n, prefix), namespaced)
}

/// [`validate_object_meta`] for a CustomResourceDefinition, whose name must
/// also be `<spec.names.plural>.<spec.group>`.
pub fn validate_crd_meta(crd: &Value) -> Vec<FieldError> {
    let str_at = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
    let required = format!("{}.{}", str_at("/spec/names/plural"), str_at("/spec/group"));
    let name_fn = |name: &str, prefix: bool| {
        let mut errs = NameRule::Subdomain.check(name, prefix);
        if name != required {
            errs.push("must be spec.names.plural+\".\"+spec.group".to_owned());
        }
        errs
    };
    let meta = crd.get("metadata").unwrap_or(&Value::Null);
    validate_meta_with(meta, &name_fn, false)
}

type NameFn<'a> = dyn Fn(&str, bool) -> Vec<String> + 'a;

fn validate_meta_with(meta: &Value, name_fn: &NameFn<'_>, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let text = |k: &str| meta.get(k).and_then(Value::as_str).unwrap_or("");

    let generate_name = text("generateName");
    if !generate_name.is_empty() {
        for msg in name_fn(generate_name, true) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                json!(generate_name),
                msg,
            ));
        }
    }
    let name = text("name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in name_fn(name, false) {
            errs.push(FieldError::invalid("metadata.name", json!(name), msg));
        }
    }

    let namespace = text("namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in NameRule::Label.check(namespace, false) {
                errs.push(FieldError::invalid(
                    "metadata.namespace",
                    json!(namespace),
                    msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }

    if let Some(g) = meta
        .get("generation")
        .and_then(Value::as_i64)
        .filter(|g| *g < 0)
    {
        errs.push(FieldError::invalid(
            "metadata.generation",
            json!(g),
            "must be greater than or equal to 0",
        ));
    }

    if let Some(labels) = string_map(meta, "labels", &mut errs) {
        for (k, v) in labels {
            for msg in is_qualified_name(k) {
                errs.push(FieldError::invalid("metadata.labels", json!(k), msg));
            }
            for msg in is_valid_label_value(v) {
                errs.push(FieldError::invalid("metadata.labels", json!(v), msg));
            }
        }
    }

    if let Some(annotations) = string_map(meta, "annotations", &mut errs) {
        let mut total = 0usize;
        for (k, v) in &annotations {
            for msg in is_qualified_name(&k.to_lowercase()) {
                errs.push(FieldError::invalid("metadata.annotations", json!(k), msg));
            }
            total += k.len() + v.len();
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::too_long(
                "metadata.annotations",
                TOTAL_ANNOTATION_SIZE_LIMIT,
            ));
        }
    }

    validate_owner_references(meta.get("ownerReferences"), &mut errs);
    validate_finalizers(meta.get("finalizers"), &mut errs);
    errs
}

/// The string map at `meta[key]`; a wrongly typed map is reported once.
fn string_map<'a>(
    meta: &'a Value,
    key: &str,
    errs: &mut Vec<FieldError>,
) -> Option<Vec<(&'a str, &'a str)>> {
    let field = format!("metadata.{key}");
    match meta.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut out = Vec::with_capacity(m.len());
            for (k, v) in m {
                match v.as_str() {
                    Some(v) => out.push((k.as_str(), v)),
                    None => errs.push(FieldError::type_invalid(
                        &field,
                        v.clone(),
                        "must be a string",
                    )),
                }
            }
            Some(out)
        }
        Some(other) => {
            errs.push(FieldError::type_invalid(
                &field,
                other.clone(),
                "must be an object of strings",
            ));
            None
        }
    }
}

fn validate_owner_references(refs: Option<&Value>, errs: &mut Vec<FieldError>) {
    const FIELD: &str = "metadata.ownerReferences";
    let Some(list) = refs.and_then(Value::as_array) else {
        return;
    };
    let mut first_controller: Option<String> = None;
    for r in list {
        let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind) = (text("apiVersion"), text("kind"));
        // schema.ParseGroupVersion: "v1", "group/version"; more slashes fail.
        let (group, version) = match api_version.split('/').collect::<Vec<_>>().as_slice() {
            [v] => ("", *v),
            [g, v] => (*g, *v),
            _ => ("", ""),
        };
        if version.is_empty() {
            errs.push(FieldError::invalid(
                &format!("{FIELD}.apiVersion"),
                json!(api_version),
                "version must not be empty",
            ));
        }
        if kind.is_empty() {
            errs.push(FieldError::invalid(
                &format!("{FIELD}.kind"),
                json!(kind),
                "must not be empty",
            ));
        }
        if text("name").is_empty() {
            errs.push(FieldError::invalid(
                &format!("{FIELD}.name"),
                json!(text("name")),
                "must not be empty",
            ));
        }
        if text("uid").is_empty() {
            errs.push(FieldError::invalid(
                &format!("{FIELD}.uid"),
                json!(text("uid")),
                "must not be empty",
            ));
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            errs.push(FieldError::invalid(
                FIELD,
                r.clone(),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{}", text("name"));
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    FIELD,
                    Value::Array(list.clone()),
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"),
                )),
                None => first_controller = Some(current),
            }
        }
    }
}

fn validate_finalizers(finalizers: Option<&Value>, errs: &mut Vec<FieldError>) {
    const FIELD: &str = "metadata.finalizers";
    let Some(list) = finalizers.and_then(Value::as_array) else {
        return;
    };
    for f in list {
        let f = f.as_str().unwrap_or("");
        for msg in is_qualified_name(f) {
            errs.push(FieldError::invalid(FIELD, json!(f), msg));
        }
    }
    let has = |name: &str| list.iter().any(|f| f.as_str() == Some(name));
    if has("orphan") && has("foregroundDeletion") {
        errs.push(FieldError::invalid(
            FIELD,
            Value::Array(list.clone()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// `Kind.group` as `schema.GroupKind.String()` prints it.
fn qualified_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    }
}

/// The top-level message of an `Invalid` Status:
/// `Pod "Foo" is invalid: metadata.name: Invalid value: ...`, several errors
/// joined as `[a, b]` with duplicates dropped.
pub fn invalid_message(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> String {
    let mut msgs: Vec<String> = Vec::new();
    for e in errs {
        let m = e.to_string();
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    let head = format!(
        "{} {} is invalid",
        qualified_kind(group, kind),
        go_quote(name)
    );
    match msgs.as_slice() {
        [] => head,
        [one] => format!("{head}: {one}"),
        many => format!("{head}: [{}]", many.join(", ")),
    }
}

/// The `details` of an `Invalid` Status: `{name, kind, causes}` with one
/// `{reason, message, field}` cause per error, in Kubernetes' order. Add the
/// API group as `details.group` for non-core kinds ([`invalid_status`] does).
pub fn to_status_details(kind: &str, name: &str, errs: &[FieldError]) -> Value {
    status_details("", kind, name, errs)
}

fn status_details(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Value {
    let mut d = Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            d.insert(k.to_owned(), json!(v));
        }
    };
    put("name", name);
    put("group", group);
    put("kind", kind);
    if !errs.is_empty() {
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
            .collect();
        d.insert("causes".to_owned(), Value::Array(causes));
    }
    Value::Object(d)
}

/// The full 422 `Invalid` Status Kubernetes answers with.
pub fn invalid_status(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": invalid_message(group, kind, name, errs),
        "reason": "Invalid",
        "details": status_details(group, kind, name, errs),
        "code": 422,
    })
}

/// [`generate_name_suffix`] with a random source from the standard library
/// (`RandomState`'s per-instance keys): what the create handler calls.
pub fn generate_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut counter = 0u64;
    generate_name_suffix(prefix, || {
        counter += 1;
        let mut h = state.build_hasher();
        h.write_u64(counter);
        // The high bits of the 64-bit hash; truncation is the point.
        (h.finish() >> 32) as u32
    })
}

/// `metadata.generateName` → name: the prefix cut to
/// [`MAX_GENERATED_NAME_LENGTH`] bytes plus 5 characters of
/// [`GENERATE_NAME_ALPHABET`], each picked by `next() % 27` (pass a random
/// source, e.g. `|| rand::random()`).
pub fn generate_name_suffix(prefix: &str, mut next: impl FnMut() -> u32) -> String {
    let mut cut = prefix.len().min(MAX_GENERATED_NAME_LENGTH);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut name = prefix[..cut].to_owned();
    let n = GENERATE_NAME_ALPHABET.len();
    for _ in 0..5 {
        let i = usize::try_from(next()).unwrap_or(0) % n;
        name.push(char::from(GENERATE_NAME_ALPHABET[i]));
    }
    name
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

    #[test]
    fn dns1123_subdomain() {
        for ok in [
            "a",
            "example.com",
            "my-pod-1",
            "0abc",
            "a.b-c.d",
            &"a".repeat(253),
        ] {
            assert!(is_dns1123_subdomain(ok).is_empty(), "{ok}");
        }
        assert_eq!(is_dns1123_subdomain("Foo"), [SUBDOMAIN_MSG]);
        for bad in ["", "-a", "a-", "a..b", ".a", "a_b", "a/b"] {
            assert_eq!(is_dns1123_subdomain(bad), [SUBDOMAIN_MSG], "{bad}");
        }
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254)),
            ["must be no more than 253 characters"]
        );
    }

    #[test]
    fn dns1123_and_dns1035_labels() {
        assert!(is_dns1123_label("kube-system").is_empty());
        assert!(is_dns1123_label("1abc").is_empty());
        assert_eq!(is_dns1123_label("a.b"), ["must not contain dots"]);
        assert_eq!(
            is_dns1123_label("Abc"),
            [
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        let long = "a".repeat(64);
        assert_eq!(
            is_dns1123_label(&long),
            ["must be no more than 63 characters"]
        );
        assert!(is_dns1035_label("my-svc").is_empty());
        assert_eq!(
            is_dns1035_label("1svc"),
            [
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(is_dns1035_label("").len(), 1);
    }

    #[test]
    fn qualified_names_and_label_values() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "node-role.kubernetes.io/edge",
            "A_b.c",
            "x/y",
        ] {
            assert!(is_qualified_name(ok).is_empty(), "{ok}");
        }
        let name_msg = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
        assert_eq!(is_qualified_name("-app"), [name_msg]);
        assert_eq!(is_qualified_name("/app"), ["prefix part must be non-empty"]);
        assert_eq!(
            is_qualified_name("app/"),
            ["name part must be non-empty", name_msg]
        );
        assert_eq!(
            is_qualified_name("Example.com/x"),
            [format!("prefix part {SUBDOMAIN_MSG}")]
        );
        assert_eq!(
            is_qualified_name("a/b/c"),
            [
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ]
        );
        assert_eq!(
            is_qualified_name(&"a".repeat(64)),
            ["name part must be no more than 63 characters"]
        );

        for ok in ["", "v1", "my_value", "12345", "A.b-c"] {
            assert!(is_valid_label_value(ok).is_empty(), "{ok}");
        }
        assert_eq!(
            is_valid_label_value("-bad"),
            [
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
        assert_eq!(
            is_valid_label_value(&"v".repeat(64)),
            ["must be no more than 63 characters"]
        );
    }

    #[test]
    fn config_map_keys_and_path_segments() {
        for ok in ["key.name", "KEY_NAME", "key-name", ".hidden"] {
            assert!(is_config_map_key(ok).is_empty(), "{ok}");
        }
        let msg = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
        assert_eq!(is_config_map_key("a/b"), [msg]);
        assert_eq!(is_config_map_key(""), [msg]);
        assert_eq!(is_config_map_key(".."), ["must not be '..'"]);
        assert_eq!(is_config_map_key("..data"), ["must not start with '..'"]);
        assert!(is_valid_path_segment_name("system:node").is_empty());
        assert_eq!(is_valid_path_segment_name(".."), ["may not be '..'"]);
        assert_eq!(
            is_valid_path_segment_name("a/b%c"),
            ["may not contain '/'", "may not contain '%'"]
        );
    }

    #[test]
    fn name_rules_by_resource() {
        assert_eq!(name_rule("", "namespaces"), NameRule::Label);
        assert_eq!(name_rule("", "services"), NameRule::Dns1035Label);
        assert_eq!(name_rule("", "pods"), NameRule::Subdomain);
        assert_eq!(
            name_rule("devices.kubeedge.io", "devices"),
            NameRule::Subdomain
        );
        assert_eq!(
            name_rule("rbac.authorization.k8s.io", "clusterroles"),
            NameRule::PathSegment
        );
        assert!(
            NameRule::PathSegment
                .check("system:controller:foo", false)
                .is_empty()
        );
        assert!(!NameRule::Subdomain.check("system:node", false).is_empty());
        // generateName may end with '-'.
        assert!(NameRule::Subdomain.check("web-", true).is_empty());
        assert!(NameRule::Label.check("ns-", true).is_empty());
        assert!(!NameRule::Subdomain.check("web-", false).is_empty());
        assert!(!NameRule::Subdomain.check("é-", true).is_empty());
    }

    #[test]
    fn object_meta_reports_like_kubernetes() {
        let meta = json!({"name": "Foo", "namespace": "default"});
        let errs = validate_object_meta(&meta, NameRule::Subdomain, true);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            format!("metadata.name: Invalid value: \"Foo\": {SUBDOMAIN_MSG}")
        );
        assert_eq!(
            invalid_message("", "Pod", "Foo", &errs),
            format!(
                "Pod \"Foo\" is invalid: metadata.name: Invalid value: \"Foo\": {SUBDOMAIN_MSG}"
            )
        );
        let status = invalid_status("", "Pod", "Foo", &errs);
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(
            status["details"],
            json!({"name": "Foo", "kind": "Pod", "causes": [{
                "reason": "FieldValueInvalid",
                "message": format!("Invalid value: \"Foo\": {SUBDOMAIN_MSG}"),
                "field": "metadata.name"
            }]})
        );
    }

    #[test]
    fn object_meta_every_check() {
        let meta = json!({
            "generateName": "Web-",
            "namespace": "Bad_NS",
            "generation": -1,
            "labels": {"app": "ok", "-bad": "v", "tier": "-x"},
            "annotations": {"Example.com/Key": "fine", "a/b/c": "x"},
            "ownerReferences": [
                {"apiVersion": "apps/", "kind": "", "name": "", "uid": "", "controller": true},
                {"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "1", "controller": true}
            ],
            "finalizers": ["orphan", "foregroundDeletion", "bad finalizer"]
        });
        let errs = validate_object_meta(&meta, NameRule::Subdomain, true);
        let fields: Vec<(&str, FieldErrorType)> =
            errs.iter().map(|e| (e.field.as_str(), e.kind)).collect();
        use FieldErrorType::*;
        assert_eq!(
            fields,
            [
                ("metadata.generateName", Invalid),
                ("metadata.name", Required),
                ("metadata.namespace", Invalid),
                ("metadata.generation", Invalid),
                ("metadata.labels", Invalid),
                ("metadata.labels", Invalid),
                ("metadata.annotations", Invalid),
                ("metadata.ownerReferences.apiVersion", Invalid),
                ("metadata.ownerReferences.kind", Invalid),
                ("metadata.ownerReferences.name", Invalid),
                ("metadata.ownerReferences.uid", Invalid),
                ("metadata.ownerReferences", Invalid),
                ("metadata.ownerReferences", Invalid),
                ("metadata.finalizers", Invalid),
                ("metadata.finalizers", Invalid),
            ]
        );
        assert_eq!(
            errs[1].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(
            errs[3].to_string(),
            "metadata.generation: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            errs[7].body(),
            "Invalid value: \"apps/\": version must not be empty"
        );
        assert_eq!(
            errs[11].detail,
            "/v1, Kind=Event is disallowed from being an owner"
        );
        assert_eq!(
            errs[12].detail,
            "Only one reference can have Controller set to true. Found \"true\" in references for / and Event/e"
        );
        assert_eq!(
            errs[14].to_string(),
            "metadata.finalizers: Invalid value: []string{\"orphan\", \"foregroundDeletion\", \"bad finalizer\"}: finalizer orphan and foregroundDeletion cannot be both set"
        );
        // Cluster-scoped objects may not carry a namespace.
        let errs = validate_object_meta(
            &json!({"name": "n1", "namespace": "x"}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        let errs = validate_object_meta(&json!({"name": "n1"}), NameRule::Subdomain, true);
        assert_eq!(errs[0].to_string(), "metadata.namespace: Required value");
        assert!(
            validate_object_meta(
                &json!({"name": "edge-1", "labels": {"node-role.kubernetes.io/edge": ""}}),
                NameRule::Subdomain,
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn annotation_size_and_types() {
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let meta = json!({"name": "a", "annotations": {"k": big}});
        let errs = validate_object_meta(&meta, NameRule::Subdomain, false);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "metadata.annotations: Too long: must have at most 262144 bytes"
        );
        assert_eq!(errs[0].kind.reason(), "FieldValueTooLong");
        let errs = validate_object_meta(
            &json!({"name": "a", "labels": {"n": 1}}),
            NameRule::Subdomain,
            false,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.labels: Invalid value: 1: must be a string"
        );
        assert_eq!(errs[0].kind.reason(), "FieldValueTypeInvalid");
    }

    #[test]
    fn crd_names_must_be_plural_dot_group() {
        let crd = |name: &str| {
            json!({"metadata": {"name": name},
            "spec": {"group": "devices.kubeedge.io", "names": {"plural": "devices"}}})
        };
        assert!(validate_crd_meta(&crd("devices.devices.kubeedge.io")).is_empty());
        let errs = validate_crd_meta(&crd("device.devices.kubeedge.io"));
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Invalid value: \"device.devices.kubeedge.io\": must be spec.names.plural+\".\"+spec.group"
        );
        assert_eq!(
            invalid_message(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                "device.devices.kubeedge.io",
                &errs
            ),
            format!(
                "CustomResourceDefinition.apiextensions.k8s.io \"device.devices.kubeedge.io\" is invalid: {}",
                errs[0]
            )
        );
    }

    #[test]
    fn several_errors_are_bracketed_and_deduplicated() {
        let errs = vec![
            FieldError::required("metadata.name", "name or generateName is required"),
            FieldError::required("metadata.namespace", ""),
            FieldError::required("metadata.namespace", ""),
        ];
        assert_eq!(
            invalid_message("apps", "Deployment", "", &errs),
            "Deployment.apps \"\" is invalid: [metadata.name: Required value: name or generateName is required, metadata.namespace: Required value]"
        );
        let details = invalid_status("apps", "Deployment", "", &errs)["details"].clone();
        assert_eq!(details["group"], "apps");
        assert_eq!(
            to_status_details("Deployment", "", &errs)["kind"],
            "Deployment"
        );
        assert!(details.get("name").is_none());
        assert_eq!(details["causes"].as_array().unwrap().len(), 3);
        assert_eq!(invalid_message("", "Pod", "p", &[]), "Pod \"p\" is invalid");
        assert_eq!(go_quote("a\"b\n\u{1}é"), "\"a\\\"b\\n\\x01é\"");
    }

    #[test]
    fn generated_names() {
        let mut i = 0u32;
        let name = generate_name_suffix("web-", || {
            i += 1;
            i
        });
        assert_eq!(name, "web-cdfgh");
        let long = "p".repeat(70);
        let mut zero = || 0;
        let name = generate_name_suffix(&long, &mut zero);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(&"p".repeat(58)) && name.ends_with("bbbbb"));
        assert!(
            validate_object_meta(&json!({"name": name}), NameRule::Subdomain, false).is_empty()
        );
        // Never splits a UTF-8 character.
        let wide = "é".repeat(40);
        assert_eq!(
            generate_name_suffix(&wide, || 26)
                .chars()
                .filter(|c| *c == '9')
                .count(),
            5
        );
        let a = generate_name("web-");
        assert!(a.starts_with("web-") && a.len() == 9);
        assert!(a[4..].bytes().all(|c| GENERATE_NAME_ALPHABET.contains(&c)));
        // Random: twenty more draws are not all equal to the first.
        assert!((0..20).map(|_| generate_name("web-")).any(|b| b != a));
    }
}
