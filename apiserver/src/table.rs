//! Server-side `meta.k8s.io` Table responses: what `kubectl get` prints.
//!
//! kubectl asks for tables with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`. The handler
//! checks the header with [`parse_table_accept`], reads `?includeObject=` with
//! [`parse_include_object`] and renders the objects with [`table`] (lists and
//! gets) or [`watch_table`] (one table per watch event, headers only on the
//! first). Which columns a resource gets is a [`Columns`]:
//!
//! - [`Columns::Builtin`]: the printer Kubernetes has for that group/kind
//!   (`builtin` and its siblings port `pkg/printers/internalversion`). Kinds
//!   with no printer there fall back to [`Columns::Default`].
//! - [`Columns::Custom`]: a CRD version's `additionalPrinterColumns`
//!   ([`PrinterColumn`]), evaluated with the JSONPath subset in
//!   [`JsonPath`]. An empty list means `Name` + `Age`, as apiextensions
//!   serves CRDs without columns.
//! - [`Columns::Default`]: `Name` + `Created At` (RFC 3339), Kubernetes'
//!   default table convertor (roles, CRDs themselves, ...).
//!
//! Everything here is pure: objects in, JSON out, "now" passed in
//! [`TableOptions`] so ages are testable.

mod builtin;
mod format;
mod jsonpath;
mod network;
mod pod;
mod storage;
mod workload;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use format::human_duration;
pub use jsonpath::{JsonPath, JsonPathError};

use builtin::{CREATED_DESC, Col, NAME_DESC, Row};
use format::{get, parse_time, s};

/// Why a table request or column definition was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// `?includeObject=` had a value other than `None`, `Metadata`, `Object`
    /// (Kubernetes answers 400 Bad Request with this message).
    #[error("unrecognized includeObject value: {0:?}")]
    UnrecognizedIncludeObject(String),
    /// A printer column's `jsonPath` does not parse.
    #[error("unrecognized column definition {json_path:?}")]
    InvalidPrinterColumn {
        /// The offending path.
        json_path: String,
        /// The parse error.
        #[source]
        source: JsonPathError,
    },
}

/// Which `meta.k8s.io` version of Table the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableVersion {
    /// `meta.k8s.io/v1` (kubectl's first choice).
    V1,
    /// `meta.k8s.io/v1beta1`.
    V1Beta1,
}

impl TableVersion {
    /// The `apiVersion` of the Table (and of `PartialObjectMetadata` rows).
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1 => "meta.k8s.io/v1",
            Self::V1Beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `None`: `object` is `null`.
    None,
    /// `Metadata` (the default, what kubectl uses): a `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `Object`: the full object.
    Object,
}

/// One CRD `additionalPrinterColumns` entry (apiextensions.k8s.io/v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Optional OpenAPI format hint (`int32`, `date-time`, ...).
    #[serde(default)]
    pub format: String,
    /// Human description; defaults to the JSONPath.
    #[serde(default)]
    pub description: String,
    /// 0 = always shown, >0 = only with `-o wide`.
    #[serde(default)]
    pub priority: i32,
    /// Simple JSONPath evaluated against each object.
    pub json_path: String,
}

/// The columns to render for a resource.
#[derive(Debug, Clone, Copy)]
pub enum Columns<'a> {
    /// A built-in kind, e.g. `{ group: "", kind: "Pod" }`, `{ group: "apps", kind: "Deployment" }`.
    Builtin {
        /// API group (`""` for core).
        group: &'a str,
        /// Kind.
        kind: &'a str,
    },
    /// A custom resource: the served version's `additionalPrinterColumns`.
    Custom(&'a [PrinterColumn]),
    /// Name and creation time only.
    Default,
}

/// Everything besides the objects that shapes a Table response.
#[derive(Debug, Clone)]
pub struct TableOptions<'a> {
    /// Table API version to answer with.
    pub version: TableVersion,
    /// What each row's `object` holds.
    pub include_object: IncludeObject,
    /// `metadata.resourceVersion` of the Table (omitted when empty).
    pub resource_version: &'a str,
    /// `metadata.continue` for paginated lists.
    pub continue_token: Option<&'a str>,
    /// `metadata.remainingItemCount` for paginated lists.
    pub remaining_item_count: Option<i64>,
    /// Include `columnDefinitions` (false for watch events after the first).
    pub headers: bool,
    /// The instant ages are computed against.
    pub now: DateTime<Utc>,
}

impl<'a> TableOptions<'a> {
    /// v1 Table with headers, computed against the current time.
    pub fn new(include_object: IncludeObject, resource_version: &'a str) -> Self {
        Self {
            version: TableVersion::V1,
            include_object,
            resource_version,
            continue_token: None,
            remaining_item_count: None,
            headers: true,
            now: Utc::now(),
        }
    }
}

/// Renders `objects` as a `meta.k8s.io/v1` Table (one row per object).
pub fn table(
    columns: Columns<'_>,
    objects: &[Value],
    include_object: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let mut opts = TableOptions::new(include_object, resource_version);
    opts.continue_token = continue_token;
    table_with(columns, objects, &opts)
}

/// The Table for one watch event: one row, `metadata.resourceVersion` from
/// the object, column definitions only when `first_event` (later events send
/// `null`, as Kubernetes does; kubectl reuses the previous columns). ERROR
/// events carry a `Status`, which is sent as is, not as a table.
pub fn watch_table(
    columns: Columns<'_>,
    object: &Value,
    version: TableVersion,
    include_object: IncludeObject,
    first_event: bool,
) -> Value {
    let mut opts = TableOptions::new(include_object, s(object, &["metadata", "resourceVersion"]));
    opts.version = version;
    opts.headers = first_event;
    table_with(columns, std::slice::from_ref(object), &opts)
}

/// Renders `objects` as a Table with full control over the envelope.
pub fn table_with(columns: Columns<'_>, objects: &[Value], opts: &TableOptions<'_>) -> Value {
    let (rows, mut envelope) = TableRows::new(columns, opts);
    let rendered: Vec<Value> = objects.iter().map(|obj| rows.row(obj)).collect();
    envelope["rows"] = Value::Array(rendered);
    envelope
}

/// A Table rendered piecewise, for streamed list responses: the envelope (with empty
/// `rows`, its last key) from [`TableRows::new`], then each row from [`TableRows::row`].
pub struct TableRows {
    resolved: Resolved,
    include_object: IncludeObject,
    version: TableVersion,
    now: DateTime<Utc>,
}

impl std::fmt::Debug for TableRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRows").finish_non_exhaustive()
    }
}

impl TableRows {
    /// The row renderer and the envelope (`rows` is `[]` and comes last).
    pub fn new(columns: Columns<'_>, opts: &TableOptions<'_>) -> (Self, Value) {
        let resolved = Resolved::new(columns);
        let mut metadata = Map::new();
        if !opts.resource_version.is_empty() {
            metadata.insert("resourceVersion".into(), json!(opts.resource_version));
        }
        if let Some(c) = opts.continue_token.filter(|c| !c.is_empty()) {
            metadata.insert("continue".into(), json!(c));
        }
        if let Some(n) = opts.remaining_item_count {
            metadata.insert("remainingItemCount".into(), json!(n));
        }
        let column_definitions = if opts.headers {
            resolved.definitions()
        } else {
            Value::Null
        };
        let envelope = json!({
            "kind": "Table",
            "apiVersion": opts.version.api_version(),
            "metadata": metadata,
            "columnDefinitions": column_definitions,
            "rows": [],
        });
        let rows = Self {
            resolved,
            include_object: opts.include_object,
            version: opts.version,
            now: opts.now,
        };
        (rows, envelope)
    }

    /// One row: cells, conditions and the object as `includeObject` asks.
    pub fn row(&self, obj: &Value) -> Value {
        let row = self.resolved.row(obj, self.now);
        let mut out = Map::new();
        out.insert("cells".into(), Value::Array(row.cells));
        if let Some(c) = row.conditions {
            out.insert("conditions".into(), c);
        }
        out.insert(
            "object".into(),
            row_object(obj, self.include_object, self.version),
        );
        Value::Object(out)
    }
}

/// The `PartialObjectMetadata` of an object: its whole `metadata`.
pub fn partial_object_metadata(object: &Value, version: TableVersion) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": version.api_version(),
        "metadata": get(object, &["metadata"]).cloned().unwrap_or_else(|| json!({})),
    })
}

fn row_object(obj: &Value, include: IncludeObject, version: TableVersion) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => partial_object_metadata(obj, version),
        IncludeObject::Object => obj.clone(),
    }
}

/// Parses `?includeObject=` (`None` when the parameter is absent).
pub fn parse_include_object(value: Option<&str>) -> Result<IncludeObject, TableError> {
    match value.unwrap_or("") {
        "" | "Metadata" => Ok(IncludeObject::Metadata),
        "None" => Ok(IncludeObject::None),
        "Object" => Ok(IncludeObject::Object),
        other => Err(TableError::UnrecognizedIncludeObject(other.to_owned())),
    }
}

/// Checks that every column's JSONPath parses (CRD create/update).
pub fn validate_printer_columns(columns: &[PrinterColumn]) -> Result<(), TableError> {
    for c in columns {
        JsonPath::parse(&c.json_path).map_err(|source| TableError::InvalidPrinterColumn {
            json_path: c.json_path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Whether an `Accept` header asks for a Table, and which version.
///
/// Clauses are ranked like Kubernetes' negotiation (q-value, then
/// specificity, then order); the best clause this server can serve as JSON
/// decides: a `as=Table;g=meta.k8s.io;v=v1|v1beta1` clause gives
/// `Some`, a plain JSON clause gives `None`. Clauses asking for other
/// conversions (e.g. `as=PartialObjectMetadata`) are skipped here.
pub fn parse_table_accept(accept: &str) -> Option<TableVersion> {
    struct Clause<'h> {
        q: f64,
        specificity: u8,
        n_params: usize,
        order: usize,
        params: Vec<(String, &'h str)>,
    }
    let mut clauses: Vec<Clause<'_>> = Vec::new();
    for (order, raw) in accept.split(',').enumerate() {
        let mut parts = raw.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let specificity = match media.as_str() {
            "application/json" => 2,
            "application/*" => 1,
            "*/*" => 0,
            _ => continue,
        };
        let mut q = 1.0;
        let mut params = Vec::new();
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().trim_matches('"');
            if k == "q" {
                q = v.parse().unwrap_or(0.0);
            } else if !k.is_empty() {
                params.push((k, v));
            }
        }
        if q > 0.0 {
            let n_params = params.len();
            clauses.push(Clause {
                q,
                specificity,
                n_params,
                order,
                params,
            });
        }
    }
    clauses.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then(b.specificity.cmp(&a.specificity))
            .then(b.n_params.cmp(&a.n_params))
            .then(a.order.cmp(&b.order))
    });
    for c in &clauses {
        let param = |k: &str| c.params.iter().find(|(pk, _)| pk == k).map(|(_, v)| *v);
        match param("as") {
            None => return None,
            Some("Table") if param("g") == Some("meta.k8s.io") => match param("v") {
                Some("v1") => return Some(TableVersion::V1),
                Some("v1beta1") => return Some(TableVersion::V1Beta1),
                _ => {}
            },
            Some(_) => {}
        }
    }
    None
}

/// A [`Columns`] with its printer looked up or its paths parsed.
enum Resolved {
    Builtin(builtin::Printer),
    Custom(Vec<(PrinterColumn, Option<JsonPath>)>),
    Default,
}

impl Resolved {
    fn new(columns: Columns<'_>) -> Self {
        match columns {
            Columns::Builtin { group, kind } => {
                builtin::lookup(group, kind).map_or(Self::Default, Self::Builtin)
            }
            Columns::Custom(cols) => {
                let cols: Vec<PrinterColumn> = if cols.is_empty() {
                    vec![PrinterColumn {
                        name: "Age".into(),
                        type_: "date".into(),
                        format: String::new(),
                        description: CREATED_DESC.into(),
                        priority: 0,
                        json_path: ".metadata.creationTimestamp".into(),
                    }]
                } else {
                    cols.to_vec()
                };
                Self::Custom(
                    cols.into_iter()
                        .map(|c| {
                            let path = JsonPath::parse(&c.json_path).ok();
                            (c, path)
                        })
                        .collect(),
                )
            }
            Columns::Default => Self::Default,
        }
    }

    fn definitions(&self) -> Value {
        let def = |name: &str, ty: &str, format: &str, desc: &str, priority: i32| json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority});
        let defs: Vec<Value> = match self {
            Self::Builtin(p) => p
                .columns
                .iter()
                .map(|c: &Col| def(c.name, c.ty, c.format, c.desc, c.priority))
                .collect(),
            Self::Custom(cols) => std::iter::once(def("Name", "string", "name", NAME_DESC, 0))
                .chain(cols.iter().map(|(c, _)| {
                    let desc = if c.description.is_empty() {
                        format!(
                            "Custom resource definition column (in JSONPath format): {}",
                            c.json_path
                        )
                    } else {
                        c.description.clone()
                    };
                    def(&c.name, &c.type_, &c.format, &desc, c.priority)
                }))
                .collect(),
            Self::Default => vec![
                def("Name", "string", "name", NAME_DESC, 0),
                def("Created At", "date", "", CREATED_DESC, 0),
            ],
        };
        Value::Array(defs)
    }

    fn row(&self, obj: &Value, now: DateTime<Utc>) -> Row {
        let name = json!(s(obj, &["metadata", "name"]));
        match self {
            Self::Builtin(p) => (p.row)(obj, now),
            Self::Custom(cols) => std::iter::once(name)
                .chain(cols.iter().map(|(c, path)| {
                    let value = path.as_ref().and_then(|p| p.first(obj));
                    custom_cell(&c.type_, value, now)
                }))
                .collect::<Vec<_>>()
                .into(),
            Self::Default => {
                // Go formats a missing creationTimestamp as the zero time.
                let created = get(obj, &["metadata", "creationTimestamp"])
                    .and_then(Value::as_str)
                    .and_then(parse_time)
                    .map_or_else(
                        || "0001-01-01T00:00:00Z".to_owned(),
                        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
                    );
                vec![name, json!(created)].into()
            }
        }
    }
}

/// A CRD printer cell (`cellForJSONValue` in apiextensions' tableconvertor):
/// `string` columns print any value like the JSONPath printer does, the
/// others keep matching JSON types only; `date` becomes an age.
fn custom_cell(ty: &str, value: Option<&Value>, now: DateTime<Utc>) -> Value {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Value::Null;
    };
    match (ty, value) {
        ("string", Value::String(s)) => json!(s),
        ("string", Value::Number(n)) => json!(go_number(n)),
        ("string", Value::Bool(b)) => json!(b.to_string()),
        ("string", v) => json!(sorted_json(v).to_string()),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => json!(i),
            None => n.as_f64().map_or(Value::Null, |f| json!(f as i64)),
        },
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(ts)) => match ts.as_str() {
            "" | "null" => json!("<unknown>"),
            ts => parse_time(ts)
                .map_or_else(|| json!("<invalid>"), |t| json!(human_duration(now - t))),
        },
        _ => Value::Null,
    }
}

/// A JSON number as Go's `fmt.Print` shows the int64/float64 it decodes to.
fn go_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        // Go: 1e-05, 1.5e+21 (sign always, at least two exponent digits).
        let sci = format!("{f:e}");
        let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
        format!("{mant}e{sign}{digits:0>2}")
    } else if f.fract() == 0.0 {
        format!("{f:.0}")
    } else {
        f.to_string()
    }
}

/// `v` with object keys sorted, as Go's `json.Marshal` of a map prints them.
fn sorted_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted_json(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted_json).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
