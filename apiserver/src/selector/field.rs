//! Field selectors (`fieldSelector`), the field names each built-in resource can be selected
//! by, and how a field's value is read from an object. Start at [`FieldSelector::parse`].

use super::SelectorError;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field name, e.g. `spec.nodeName`.
    pub field: String,
    /// `true` for `!=`, `false` for `=` and `==`.
    pub negated: bool,
    /// The unescaped value.
    pub value: String,
}

/// A parsed field selector: a conjunction of [`FieldRequirement`]s. The default selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// Reverses the `\\`, `\,`, `\=` escapes of a field selector value (`fields.UnescapeValue`).
fn unescape_field_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => return Err(SelectorError::FieldEscape(format!("\\{e}"))),
                None => return Err(SelectorError::FieldEscape("\\".into())),
            },
            ',' | '=' => return Err(SelectorError::FieldUnescaped(c)),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn escape_field_value(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace(',', r"\,")
        .replace('=', r"\=")
}

impl FieldSelector {
    /// Parses a `fieldSelector` query parameter: comma-separated `k=v`, `k==v`, `k!=v`, where
    /// `\,`, `\=` and `\\` escape those characters in values (`fields.ParseSelector`). The
    /// empty string selects everything. Field names are not checked here; see [`Self::validate`].
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        let (mut start, mut escaped) = (0, false);
        for (i, c) in input.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                ',' => {
                    terms.push(&input[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&input[start..]);
        let mut requirements = Vec::new();
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let split = term.char_indices().find_map(|(i, _)| {
                let rest = &term[i..];
                ["!=", "==", "="]
                    .into_iter()
                    .find(|op| rest.starts_with(op))
                    .map(|op| (i, op))
            });
            let Some((i, op)) = split else {
                let (selector, term) = (input.to_owned(), term.to_owned());
                return Err(SelectorError::FieldSyntax { selector, term });
            };
            requirements.push(FieldRequirement {
                field: term[..i].to_owned(),
                negated: op == "!=",
                value: unescape_field_value(&term[i + op.len()..])?,
            });
        }
        Ok(Self { requirements })
    }

    /// True when the selector has no term and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms, all of which must hold.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Refuses a selector naming a field outside `supported` with Kubernetes' 400
    /// `field label not supported: <name>`.
    pub fn validate(&self, supported: &[&str]) -> Result<(), SelectorError> {
        match self
            .requirements
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            Some(r) => Err(SelectorError::FieldLabelNotSupported(r.field.clone())),
            None => Ok(()),
        }
    }

    /// The value of an equality term (`=`/`==`) on `field`, if there is one: the store's fast
    /// path for `metadata.name=x` or `spec.nodeName=y`. The other terms still have to be
    /// matched.
    pub fn exact_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| !r.negated && r.field == field)
            .map(|r| r.value.as_str())
    }

    /// Whether an object whose fields are read through `get` (field name to rendered value,
    /// `""` when absent) is selected.
    pub fn matches_with<'o>(&self, get: impl Fn(&str) -> Cow<'o, str>) -> bool {
        self.requirements
            .iter()
            .all(|r| (get(&r.field) == r.value.as_str()) != r.negated)
    }

    /// Whether an object is selected, reading each field by its dotted path (what CRD
    /// `selectableFields` mean).
    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_with(|f| field_value(obj, f))
    }

    /// Whether an object of a built-in resource is selected, with that resource's field
    /// aliases and defaults (see [`builtin_field_value`]); other resources read dotted paths.
    pub fn matches_resource(&self, obj: &Value, group: &str, plural: &str) -> bool {
        self.matches_with(|f| builtin_field_value(obj, group, plural, f))
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string form, parseable by [`FieldSelector::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            let op = if r.negated { "!=" } else { "=" };
            let sep = if i > 0 { "," } else { "" };
            write!(f, "{sep}{}{op}{}", r.field, escape_field_value(&r.value))?;
        }
        Ok(())
    }
}

/// Reads a field by dotted path (`spec.nodeName`) as a field selector sees it: strings as they
/// are, booleans and numbers rendered (`true`, `3`), anything absent, null or structured as `""`.
pub fn field_value<'o>(obj: &'o Value, path: &str) -> Cow<'o, str> {
    let found = path.split('.').try_fold(obj, |v, part| v.get(part));
    match found {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Bool(b)) => Cow::Owned(b.to_string()),
        Some(Value::Number(n)) => Cow::Owned(n.to_string()),
        _ => Cow::Borrowed(""),
    }
}

/// The field names each built-in resource can be selected by (`metadata.name` and
/// `metadata.namespace` always). Unknown resources (e.g. CRDs) get just those two; append a
/// CRD's `selectableFields` (JSONPath `.spec.x` given as `spec.x`).
pub fn builtin_fields(group: &str, plural: &str) -> &'static [&'static str] {
    const META: &[&str] = &["metadata.name", "metadata.namespace"];
    match (group, plural) {
        ("", "pods") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["metadata.name", "metadata.namespace", "type"],
        ("", "nodes") => &["metadata.name", "metadata.namespace", "spec.unschedulable"],
        ("", "namespaces") => &["metadata.name", "metadata.namespace", "status.phase"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("batch", "jobs") => &["metadata.name", "metadata.namespace", "status.successful"],
        ("certificates.k8s.io", "certificatesigningrequests") => {
            &["metadata.name", "metadata.namespace", "spec.signerName"]
        }
        _ => META,
    }
}

/// The resources [`builtin_fields`] has a table for, as `(group, plural)`.
const WITH_FIELDS: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "events"),
    ("", "secrets"),
    ("", "nodes"),
    ("", "namespaces"),
    ("", "replicationcontrollers"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("certificates.k8s.io", "certificatesigningrequests"),
];

/// `(group, plural)` as static strings when [`builtin_fields`] has a table for the resource
/// (selectable fields beyond `metadata.name` and `metadata.namespace`).
pub fn builtin_resource(group: &str, plural: &str) -> Option<(&'static str, &'static str)> {
    WITH_FIELDS
        .iter()
        .copied()
        .find(|(g, p)| *g == group && *p == plural)
}

/// Reads field `name` of a built-in resource's object as Kubernetes' `GetAttrs` does: events'
/// `source` is `source.component`, and fields Kubernetes renders from a Go bool or int read as
/// `false`/`0` when absent. Everything else (and every other resource) is [`field_value`].
pub fn builtin_field_value<'o>(
    obj: &'o Value,
    group: &str,
    plural: &str,
    name: &str,
) -> Cow<'o, str> {
    let default = match (group, plural, name) {
        ("", "events", "source") => return field_value(obj, "source.component"),
        ("", "nodes", "spec.unschedulable") | ("", "pods", "spec.hostNetwork") => "false",
        ("", "replicationcontrollers", "status.replicas")
        | ("apps", "replicasets", "status.replicas")
        | ("batch", "jobs", "status.successful") => "0",
        _ => "",
    };
    match field_value(obj, name) {
        v if v.is_empty() => Cow::Borrowed(default),
        v => v,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_grammar_and_escapes() {
        let f = FieldSelector::parse(
            r"metadata.name=a\,b\=c\\d,spec.nodeName!=,status.phase==Running,",
        )
        .unwrap();
        let r = f.requirements();
        assert_eq!(
            (r[0].field.as_str(), r[0].value.as_str(), r[0].negated),
            ("metadata.name", r"a,b=c\d", false)
        );
        assert_eq!((r[1].value.as_str(), r[1].negated), ("", true));
        assert_eq!((r[2].value.as_str(), r[2].negated), ("Running", false));
        assert_eq!(FieldSelector::parse(&f.to_string()).unwrap(), f);
        assert_eq!(f.exact_value("status.phase"), Some("Running"));
        assert_eq!(f.exact_value("spec.nodeName"), None);
        assert!(FieldSelector::parse("").unwrap().is_empty());
        let e = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
        assert_eq!(
            e("a=b,nonsense"),
            "invalid selector: 'a=b,nonsense'; can't understand 'nonsense'"
        );
        assert_eq!(
            e(r"a=\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            e(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            e("a=b=c"),
            "invalid field selector: unescaped character in value: ="
        );
    }

    #[test]
    fn resources_with_field_tables_are_known() {
        for (g, p) in WITH_FIELDS {
            assert!(builtin_fields(g, p).len() > 2, "{g}/{p}");
        }
        assert_eq!(builtin_resource("", "pods"), Some(("", "pods")));
        assert_eq!(builtin_resource("", "configmaps"), None);
    }

    #[test]
    fn field_validation_uses_resource_tables() {
        let f = FieldSelector::parse("spec.nodeName=n1,metadata.namespace=default").unwrap();
        assert!(f.validate(builtin_fields("", "pods")).is_ok());
        let err = f.validate(builtin_fields("", "configmaps")).unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: spec.nodeName");
        let crd = FieldSelector::parse("spec.color=red").unwrap();
        let mut supported = builtin_fields("example.com", "widgets").to_vec();
        assert!(crd.validate(&supported).is_err());
        supported.push("spec.color");
        assert!(crd.validate(&supported).is_ok());
        assert!(builtin_fields("", "events").contains(&"involvedObject.uid"));
        assert!(builtin_fields("", "secrets").contains(&"type"));
    }

    #[test]
    fn field_matching_follows_kubernetes_semantics() {
        let unbound =
            json!({"metadata": {"name": "p", "namespace": "d"}, "status": {"phase": "Pending"}});
        let bound = json!({"metadata": {"name": "q"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let m = |s: &str, o: &Value| {
            FieldSelector::parse(s)
                .unwrap()
                .matches_resource(o, "", "pods")
        };
        assert!(m("spec.nodeName=", &unbound) && !m("spec.nodeName=", &bound));
        assert!(m("spec.nodeName=n1,status.phase!=Pending", &bound));
        assert!(!m("spec.nodeName!=n1", &bound) && m("spec.nodeName!=n1", &unbound));
        assert!(m("metadata.name=p,metadata.namespace=d", &unbound) && m("", &bound));
        assert!(m("spec.hostNetwork=false", &unbound));
        let node = json!({"metadata": {"name": "n"}});
        let nm = |s: &str, o: &Value| {
            FieldSelector::parse(s)
                .unwrap()
                .matches_resource(o, "", "nodes")
        };
        assert!(nm("spec.unschedulable=false", &node));
        assert!(nm(
            "spec.unschedulable=true",
            &json!({"spec": {"unschedulable": true}})
        ));
        let ev = json!({"source": {"component": "kubelet"}, "involvedObject": {"kind": "Pod"}, "type": "Normal"});
        let em = |s: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .matches_resource(&ev, "", "events")
        };
        assert!(em("source=kubelet,involvedObject.kind=Pod,type=Normal") && !em("source=x"));
        let cr = json!({"spec": {"replicas": 3, "ratio": 1.5, "obj": {"a": 1}}});
        let cm = |s: &str| FieldSelector::parse(s).unwrap().matches(&cr);
        assert!(
            cm("spec.replicas=3") && cm("spec.ratio=1.5") && cm("spec.obj=") && cm("spec.none=")
        );
    }
}
