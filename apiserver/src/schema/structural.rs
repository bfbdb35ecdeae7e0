//! Is a CRD's `openAPIV3Schema` structural? Checked when a CRD is created or updated.
//!
//! The rules of `apiextensions-apiserver/pkg/apiserver/schema` (structural schemas, which
//! every `apiextensions.k8s.io/v1` CRD must have): every field has a `type` unless it is
//! `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields`; the root is an
//! object; `properties` and `additionalProperties` exclude each other; no `$ref`, no
//! `uniqueItems`; `allOf`/`anyOf`/`oneOf`/`not` only add value validations to fields that
//! the structural part already declares; root `metadata` may only restrict `name` and
//! `generateName`; list types are well formed. Each finding is `<path>: <error body>` with
//! the path relative to the schema (`properties[spec].type: Required value: …`); prefix it
//! with `spec.versions[i].schema.openAPIV3Schema.` for the 422.

use serde_json::{Map, Value};

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

/// The reasons `schema` is not a valid structural schema; empty when it is.
pub fn check_structural(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(root) = schema.as_object() else {
        out.push("openAPIV3Schema: Invalid value: must be an object".to_owned());
        return out;
    };
    match root.get("type").and_then(Value::as_str) {
        None => out.push("type: Required value: must not be empty at the root".to_owned()),
        Some("object") => {}
        Some(other) => out.push(format!(
            "type: Invalid value: \"{other}\": must be object at the root"
        )),
    }
    if let Some(meta) = root
        .get("properties")
        .and_then(|p| p.get("metadata"))
        .and_then(Value::as_object)
    {
        let extra = meta
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| p.keys().any(|k| k != "name" && k != "generateName"));
        let only_allowed = meta
            .keys()
            .all(|k| matches!(k.as_str(), "type" | "properties" | "description"));
        if extra || !only_allowed {
            out.push(
                "properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
                    .to_owned(),
            );
        }
    }
    structural_node(root, "", Position::Root, &mut out);
    out
}

/// Where a structural node sits (decides the message for a missing type).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Root,
    Field,
    Items,
}

fn join(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_owned()
    } else {
        format!("{path}.{child}")
    }
}

fn flag(node: &Map<String, Value>, key: &str) -> bool {
    node.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn structural_node(node: &Map<String, Value>, path: &str, pos: Position, out: &mut Vec<String>) {
    let at = |k: &str| join(path, k);
    let ty = node.get("type").and_then(Value::as_str);
    let int_or_string = flag(node, "x-kubernetes-int-or-string");
    let preserve = flag(node, "x-kubernetes-preserve-unknown-fields");
    if node.contains_key("$ref") {
        out.push(format!("{}: Forbidden: $ref is not supported", at("$ref")));
    }
    match (ty, pos) {
        (Some(t), _) if !TYPES.contains(&t) => out.push(format!(
            "{}: Unsupported value: \"{t}\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
            at("type")
        )),
        (Some(t), _) if int_or_string => out.push(format!(
            "{}: Invalid value: \"{t}\": must be empty if x-kubernetes-int-or-string is true",
            at("type")
        )),
        (None, Position::Field) if !int_or_string && !preserve => {
            out.push(format!("{}: Required value: must not be empty for specified object fields", at("type")));
        }
        (None, Position::Items) if !int_or_string && !preserve => {
            out.push(format!("{}: Required value: must not be empty for specified array items", at("type")));
        }
        _ => {}
    }
    if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push(format!(
            "{}: Invalid value: false: must be true or undefined",
            at("x-kubernetes-preserve-unknown-fields")
        ));
    }
    if flag(node, "x-kubernetes-embedded-resource") {
        if ty != Some("object") {
            out.push(format!(
                "{}: Invalid value: {}: must be object if x-kubernetes-embedded-resource is true",
                at("type"),
                quote(ty)
            ));
        }
        if !preserve && !node.contains_key("properties") {
            out.push(format!(
                "{}: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
                at("properties")
            ));
        }
    }
    if node.get("uniqueItems") == Some(&Value::Bool(true)) {
        out.push(format!(
            "{}: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            at("uniqueItems")
        ));
    }
    check_value_keywords(node, path, out);
    if let Some(props) = node.get("properties") {
        match props.as_object() {
            Some(props) => {
                if node.contains_key("additionalProperties") {
                    out.push(format!(
                        "{}: Forbidden: additionalProperties and properties are mutual exclusive",
                        at("additionalProperties")
                    ));
                }
                if ty.is_some_and(|t| t != "object") {
                    out.push(format!(
                        "{}: Forbidden: must only be used with type object",
                        at("properties")
                    ));
                }
                for (name, child) in props {
                    let child_path = join(path, &format!("properties[{name}]"));
                    match child.as_object() {
                        Some(c) => structural_node(c, &child_path, Position::Field, out),
                        None => out.push(format!(
                            "{child_path}: Invalid value: must be a schema object"
                        )),
                    }
                }
            }
            None => out.push(format!(
                "{}: Invalid value: must be an object",
                at("properties")
            )),
        }
    }
    match node.get("additionalProperties") {
        Some(Value::Bool(false)) => out.push(format!(
            "{}: Forbidden: must not be false",
            at("additionalProperties")
        )),
        Some(Value::Object(ap)) => {
            structural_node(ap, &at("additionalProperties"), Position::Field, out)
        }
        _ => {}
    }
    match node.get("items") {
        Some(Value::Object(items)) => structural_node(items, &at("items"), Position::Items, out),
        Some(Value::Array(_)) => out.push(format!(
            "{}: Forbidden: items must be a schema object and not an array",
            at("items")
        )),
        Some(_) => out.push(format!(
            "{}: Invalid value: must be a schema object",
            at("items")
        )),
        None if ty == Some("array") => out.push(format!(
            "{}: Required value: must be specified",
            at("items")
        )),
        None => {}
    }
    check_list_type(node, path, out);
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = node.get(junctor) {
            let Some(branches) = branches.as_array() else {
                out.push(format!("{}: Invalid value: must be an array", at(junctor)));
                continue;
            };
            for (i, b) in branches.iter().enumerate() {
                junctor_node(
                    b,
                    &join(path, &format!("{junctor}[{i}]")),
                    node,
                    int_or_string,
                    out,
                );
            }
        }
    }
    if let Some(not) = node.get("not") {
        junctor_node(not, &at("not"), node, int_or_string, out);
    }
}

fn quote(t: Option<&str>) -> String {
    t.map_or_else(|| "\"\"".to_owned(), |t| format!("\"{t}\""))
}

/// Keywords whose values must be well formed wherever they appear.
fn check_value_keywords(node: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    if let Some(p) = node.get("pattern") {
        match p.as_str() {
            Some(p) if regex::Regex::new(p).is_ok() => {}
            _ => out.push(format!(
                "{}: Invalid value: {p}: must be a valid regular expression",
                join(path, "pattern")
            )),
        }
    }
    if node.get("enum").is_some_and(|e| !e.is_array()) {
        out.push(format!(
            "{}: Invalid value: must be an array",
            join(path, "enum")
        ));
    }
    if let Some(req) = node.get("required")
        && !req
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string))
    {
        out.push(format!(
            "{}: Invalid value: must be an array of strings",
            join(path, "required")
        ));
    }
}

fn check_list_type(node: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let Some(lt) = node.get("x-kubernetes-list-type") else {
        return;
    };
    let at = join(path, "x-kubernetes-list-type");
    let items = node.get("items").and_then(Value::as_object);
    let item_type = items.and_then(|i| i.get("type")).and_then(Value::as_str);
    match lt.as_str() {
        Some("atomic") => {}
        Some("set") => {
            if item_type == Some("object") || item_type == Some("array") {
                out.push(format!("{}: Invalid value: \"{}\": must only be used with scalar items when x-kubernetes-list-type is set", join(path, "items.type"), item_type.unwrap_or_default()));
            }
        }
        Some("map") => {
            if item_type != Some("object") {
                out.push(format!("{}: Invalid value: {}: must be object if parent array's x-kubernetes-list-type is map", join(path, "items.type"), quote(item_type)));
            }
            let keys: Vec<&str> = node
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if keys.is_empty() {
                out.push(format!(
                    "{}: Required value: must not be empty if x-kubernetes-list-type is map",
                    join(path, "x-kubernetes-list-map-keys")
                ));
            }
            let required: Vec<&str> = items
                .and_then(|i| i.get("required"))
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for key in keys {
                let prop = items
                    .and_then(|i| i.get("properties"))
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_object);
                let Some(prop) = prop else {
                    out.push(format!("{}: Invalid value: \"{key}\": entries must all be names of item properties", join(path, "x-kubernetes-list-map-keys")));
                    continue;
                };
                if !required.contains(&key) && !prop.contains_key("default") {
                    out.push(format!("{}: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property", join(path, &format!("items.properties[{key}]"))));
                }
                if matches!(
                    prop.get("type").and_then(Value::as_str),
                    Some("object" | "array")
                ) {
                    out.push(format!("{}: Invalid value: must be a scalar type if parent array's x-kubernetes-list-type is map", join(path, &format!("items.properties[{key}].type"))));
                }
            }
        }
        _ => out.push(format!(
            "{at}: Unsupported value: {lt}: supported values: \"atomic\", \"map\", \"set\""
        )),
    }
}

/// A branch of a junctor: value validations only, on fields the structural part declares.
fn junctor_node(
    node: &Value,
    path: &str,
    structural: &Map<String, Value>,
    int_or_string: bool,
    out: &mut Vec<String>,
) {
    let Some(node) = node.as_object() else {
        out.push(format!("{path}: Invalid value: must be a schema object"));
        return;
    };
    for key in ["additionalProperties", "nullable", "default", "$ref"] {
        if node.contains_key(key) {
            out.push(format!(
                "{}: Forbidden: must not be used inside of resource validation junctors",
                join(path, key)
            ));
        }
    }
    if let Some(t) = node.get("type") {
        let allowed = int_or_string && matches!(t.as_str(), Some("integer" | "string"));
        if !allowed {
            out.push(format!(
                "{}: Forbidden: must be empty to be structural",
                join(path, "type")
            ));
        }
    }
    for key in node.keys().filter(|k| k.starts_with("x-kubernetes-")) {
        out.push(format!(
            "{}: Forbidden: must be false to be structural",
            join(path, key)
        ));
    }
    check_value_keywords(node, path, out);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        let declared = structural.get("properties").and_then(Value::as_object);
        for (name, child) in props {
            let child_path = join(path, &format!("properties[{name}]"));
            match declared.and_then(|d| d.get(name)).and_then(Value::as_object) {
                Some(s) => junctor_node(child, &child_path, s, flag(s, "x-kubernetes-int-or-string"), out),
                None => out.push(format!("{child_path}: Forbidden: must not be specified in a junctor unless it is specified outside of junctors")),
            }
        }
    }
    if let Some(items) = node.get("items") {
        match structural.get("items").and_then(Value::as_object) {
            Some(s) => junctor_node(items, &join(path, "items"), s, flag(s, "x-kubernetes-int-or-string"), out),
            None => out.push(format!("{}: Forbidden: must not be specified in a junctor unless it is specified outside of junctors", join(path, "items"))),
        }
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = node.get(junctor).and_then(Value::as_array) {
            for (i, b) in branches.iter().enumerate() {
                junctor_node(
                    b,
                    &join(path, &format!("{junctor}[{i}]")),
                    structural,
                    int_or_string,
                    out,
                );
            }
        }
    }
    if let Some(not) = node.get("not") {
        junctor_node(not, &join(path, "not"), structural, int_or_string, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structural_check_finds_problems() {
        let bad = json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {"properties": {"x": {"type": "strin"}, "l": {"type": "array"}}, "additionalProperties": {"type": "string"}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": false,
                "anyOf": [{"type": "object", "properties": {"nope": {"type": "string"}}}]},
            "m": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object", "properties": {"k": {"type": "string"}}}, "x-kubernetes-list-map-keys": ["k"]},
            "p": {"type": "string", "pattern": "(("},
            "r": {"$ref": "#/definitions/x"},
        }});
        let got = check_structural(&bad);
        let want = [
            "properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
            "properties[spec].type: Required value: must not be empty for specified object fields",
            "properties[spec].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive",
            r#"properties[spec].properties[x].type: Unsupported value: "strin": supported values: "array", "boolean", "integer", "number", "object", "string""#,
            "properties[spec].properties[l].items: Required value: must be specified",
            "properties[status].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined",
            "properties[status].anyOf[0].type: Forbidden: must be empty to be structural",
            "properties[status].anyOf[0].properties[nope]: Forbidden: must not be specified in a junctor unless it is specified outside of junctors",
            "properties[m].items.properties[k]: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
            r#"properties[p].pattern: Invalid value: "((": must be a valid regular expression"#,
            "properties[r].$ref: Forbidden: $ref is not supported",
            "properties[r].type: Required value: must not be empty for specified object fields",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
        assert_eq!(
            check_structural(&json!({"type": "string"})),
            vec![r#"type: Invalid value: "string": must be object at the root"#]
        );
        assert!(
            check_structural(
                &json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
            )
            .is_empty()
        );
    }
}
