//! The JSONPath subset CRD `additionalPrinterColumns` use, evaluated the way
//! `k8s.io/client-go/util/jsonpath` does with `AllowMissingKeys(true)`.
//!
//! Supported: `.a.b`, escaped dots (`.a\.b`), `['x.y']` / `["x"]` (and unions
//! of quoted keys), `.*` / `[*]`, `..` (recursive descent), `[0]`, `[-1]`,
//! `[1:3]`, `[::2]`, `[0,2]`, and filters `[?(@.type=="Ready")]` with `==`,
//! `!=`, `<`, `<=`, `>`, `>=` or bare existence `[?(@.x)]`.
//! Missing keys yield no result; out-of-range indexes and filters on
//! non-arrays are errors (the CRD printer turns both into an empty cell).

use serde_json::Value;

/// Why a JSONPath expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSONPath {path:?} at byte {at}: {reason}")]
pub struct JsonPathError {
    /// The expression as given.
    pub path: String,
    /// Byte offset where parsing failed.
    pub at: usize,
    /// What was expected there.
    pub reason: &'static str,
}

/// A parsed JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// One or more object keys (a union when more than one).
    Keys(Vec<String>),
    /// Every value of an object or element of an array.
    Wildcard,
    /// The current value and all values nested in it.
    Recursive,
    /// Array indexes and slices.
    Index(Vec<Slice>),
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Slice {
    One(i64),
    Range {
        start: Option<i64>,
        end: Option<i64>,
        step: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Operand,
    cmp: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// A path relative to the element (`@...`).
    Path(Vec<Step>),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Evaluation failed (index out of range, filter on a non-array).
#[derive(Debug)]
struct EvalError;

impl JsonPath {
    /// Parses a printer-column path such as `.status.conditions[?(@.type=="Ready")].status`.
    /// A surrounding `{...}` and a leading `$` are accepted too.
    pub fn parse(path: &str) -> Result<Self, JsonPathError> {
        let trimmed = path.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|p| p.strip_suffix('}'))
            .unwrap_or(trimmed);
        let inner = inner.strip_prefix('$').unwrap_or(inner);
        let mut p = Parser {
            src: path,
            text: inner.as_bytes(),
            pos: 0,
        };
        let steps = p.steps(false)?;
        if p.pos != p.text.len() {
            return Err(p.err("unexpected character"));
        }
        Ok(Self { steps })
    }

    /// Every value the path selects, in document order; `None` on an
    /// evaluation error.
    pub fn find<'a>(&self, root: &'a Value) -> Option<Vec<&'a Value>> {
        eval(&self.steps, vec![root]).ok()
    }

    /// The first value selected, as the CRD printer uses it.
    pub fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.find(root).and_then(|r| r.into_iter().next())
    }
}

struct Parser<'a> {
    src: &'a str,
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> JsonPathError {
        JsonPathError {
            path: self.src.to_owned(),
            at: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Parses steps until the end or, inside a filter, an operator or `)`.
    fn steps(&mut self, in_filter: bool) -> Result<Vec<Step>, JsonPathError> {
        let mut steps = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                b'.' => {
                    self.pos += 1;
                    if self.peek() == Some(b'.') {
                        self.pos += 1;
                        steps.push(Step::Recursive);
                        if self.peek() == Some(b'[') {
                            continue;
                        }
                    }
                    let name = self.field_name();
                    match name.as_str() {
                        "" => {}
                        "*" => steps.push(Step::Wildcard),
                        _ => steps.push(Step::Keys(vec![name])),
                    }
                }
                b'[' => {
                    self.pos += 1;
                    steps.push(self.bracket()?);
                }
                _ if in_filter => break,
                _ => return Err(self.err("expected '.' or '['")),
            }
        }
        Ok(steps)
    }

    /// A field name up to the next unescaped terminator; `\x` keeps `x`.
    fn field_name(&mut self) -> String {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                b'\\' => {
                    self.pos += 1;
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.pos += 1;
                    }
                }
                b'.' | b'[' | b']' | b',' | b'{' | b'}' | b'$' | b'@' | b'(' | b')' | b'='
                | b'!' | b'<' | b'>' => break,
                c if c.is_ascii_whitespace() => break,
                _ => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The inside of `[...]`, the opening bracket already consumed.
    fn bracket(&mut self) -> Result<Step, JsonPathError> {
        self.skip_ws();
        let step = match self.peek() {
            Some(b'?') => {
                self.pos += 1;
                self.expect(b'(')?;
                let f = self.filter()?;
                self.expect(b')')?;
                Step::Filter(Box::new(f))
            }
            Some(b'*') => {
                self.pos += 1;
                Step::Wildcard
            }
            Some(b'\'' | b'"') => {
                let mut keys = vec![self.quoted()?];
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b',') {
                        break;
                    }
                    self.pos += 1;
                    self.skip_ws();
                    keys.push(self.quoted()?);
                }
                Step::Keys(keys)
            }
            _ => Step::Index(self.slices()?),
        };
        self.skip_ws();
        self.expect(b']')?;
        Ok(step)
    }

    fn expect(&mut self, c: u8) -> Result<(), JsonPathError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(match c {
                b']' => "expected ']'",
                b'(' => "expected '('",
                b')' => "expected ')'",
                _ => "unexpected character",
            }))
        }
    }

    fn quoted(&mut self) -> Result<String, JsonPathError> {
        let Some(q) = self.peek().filter(|c| *c == b'\'' || *c == b'"') else {
            return Err(self.err("expected a quoted string"));
        };
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'\\') => {
                    self.pos += 1;
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.pos += 1;
                    }
                }
                Some(c) if c == q => {
                    self.pos += 1;
                    break;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn number(&mut self) -> Option<i64> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.text[start..self.pos])
            .ok()
            .and_then(|s| s.parse().ok())
    }

    fn slices(&mut self) -> Result<Vec<Slice>, JsonPathError> {
        let mut out = Vec::new();
        loop {
            let first = self.number();
            self.skip_ws();
            if self.peek() == Some(b':') {
                self.pos += 1;
                let end = self.number();
                self.skip_ws();
                let step = if self.peek() == Some(b':') {
                    self.pos += 1;
                    self.number()
                } else {
                    None
                };
                out.push(Slice::Range {
                    start: first,
                    end,
                    step,
                });
            } else {
                let Some(i) = first else {
                    return Err(self.err("expected an index"));
                };
                out.push(Slice::One(i));
            }
            self.skip_ws();
            if self.peek() != Some(b',') {
                return Ok(out);
            }
            self.pos += 1;
        }
    }

    fn filter(&mut self) -> Result<Filter, JsonPathError> {
        let left = self.operand()?;
        self.skip_ws();
        let op = match (self.peek(), self.text.get(self.pos + 1).copied()) {
            (Some(b'='), Some(b'=')) => Some((Op::Eq, 2)),
            (Some(b'!'), Some(b'=')) => Some((Op::Ne, 2)),
            (Some(b'<'), Some(b'=')) => Some((Op::Le, 2)),
            (Some(b'>'), Some(b'=')) => Some((Op::Ge, 2)),
            (Some(b'<'), _) => Some((Op::Lt, 1)),
            (Some(b'>'), _) => Some((Op::Gt, 1)),
            (Some(b')'), _) => None,
            _ => return Err(self.err("expected a comparison operator or ')'")),
        };
        let cmp = match op {
            Some((op, width)) => {
                self.pos += width;
                Some((op, self.operand()?))
            }
            None => None,
        };
        Ok(Filter { left, cmp })
    }

    fn operand(&mut self) -> Result<Operand, JsonPathError> {
        self.skip_ws();
        match self.peek() {
            Some(b'@') => {
                self.pos += 1;
                Ok(Operand::Path(self.steps(true)?))
            }
            Some(b'\'' | b'"') => Ok(Operand::Literal(Value::String(self.quoted()?))),
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
                {
                    self.pos += 1;
                }
                let word = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or("");
                match word {
                    "true" => Ok(Operand::Literal(Value::Bool(true))),
                    "false" => Ok(Operand::Literal(Value::Bool(false))),
                    "nil" | "null" => Ok(Operand::Literal(Value::Null)),
                    _ => serde_json::from_str::<serde_json::Number>(word)
                        .map(|n| Operand::Literal(Value::Number(n)))
                        .map_err(|_| self.err("expected '@', a quoted string, a number or a bool")),
                }
            }
        }
    }
}

fn eval<'a>(steps: &[Step], mut cur: Vec<&'a Value>) -> Result<Vec<&'a Value>, EvalError> {
    for step in steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Keys(keys) => {
                    if let Value::Object(m) = v {
                        next.extend(keys.iter().filter_map(|k| m.get(k)));
                    }
                }
                Step::Wildcard => match v {
                    Value::Object(m) => next.extend(m.values()),
                    Value::Array(a) => next.extend(a.iter()),
                    _ => {}
                },
                Step::Recursive => descend(v, &mut next),
                Step::Index(slices) => {
                    let Value::Array(a) = v else {
                        return Err(EvalError);
                    };
                    for sl in slices {
                        index(a, *sl, &mut next)?;
                    }
                }
                Step::Filter(f) => {
                    let Value::Array(a) = v else {
                        return Err(EvalError);
                    };
                    for item in a {
                        if f.matches(item)? {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    Ok(cur)
}

fn descend<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(v);
    match v {
        Value::Object(m) => m.values().for_each(|c| descend(c, out)),
        Value::Array(a) => a.iter().for_each(|c| descend(c, out)),
        _ => {}
    }
}

fn index<'a>(a: &'a [Value], sl: Slice, out: &mut Vec<&'a Value>) -> Result<(), EvalError> {
    let len = i64::try_from(a.len()).map_err(|_| EvalError)?;
    let at = |i: i64| usize::try_from(i).ok().and_then(|i| a.get(i));
    match sl {
        Slice::One(i) => {
            let i = if i < 0 { i + len } else { i };
            out.push(at(i).ok_or(EvalError)?);
        }
        Slice::Range { start, end, step } => {
            let mut start = start.unwrap_or(0);
            if start < 0 {
                start += len;
            }
            let end = match end {
                Some(e) if e < 0 => e + len,
                Some(e) => e.min(len),
                None => len,
            };
            if start == end {
                return Ok(());
            }
            if start < 0 || start >= len || end < 0 || start > end {
                return Err(EvalError);
            }
            let step = usize::try_from(step.unwrap_or(1).max(1)).map_err(|_| EvalError)?;
            let (s, e) = (
                usize::try_from(start).map_err(|_| EvalError)?,
                usize::try_from(end).map_err(|_| EvalError)?,
            );
            out.extend(a.get(s..e).unwrap_or_default().iter().step_by(step));
        }
    }
    Ok(())
}

impl Filter {
    fn matches(&self, item: &Value) -> Result<bool, EvalError> {
        let left = operand_values(&self.left, item)?;
        let Some((op, right)) = &self.cmp else {
            return Ok(!left.is_empty());
        };
        let right = operand_values(right, item)?;
        let (Some(l), Some(r)) = (left.first(), right.first()) else {
            return Ok(false);
        };
        Ok(compare(l, *op, r))
    }
}

fn operand_values<'a>(o: &'a Operand, item: &'a Value) -> Result<Vec<&'a Value>, EvalError> {
    match o {
        Operand::Path(steps) => eval(steps, vec![item]),
        Operand::Literal(v) => Ok(vec![v]),
    }
}

fn compare(l: &Value, op: Op, r: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (_, None) => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "metadata": {"name": "d1", "labels": {"app.kubernetes.io/name": "sensor"}},
            "spec": {"protocol": {"modbus": {"slaveID": 1}}, "items": [1, 2, 3, 4]},
            "status": {
                "conditions": [
                    {"type": "Synced", "status": "False"},
                    {"type": "Ready", "status": "True", "count": 3}
                ],
                "twins": [{"propertyName": "temp"}, {"propertyName": "hum"}]
            }
        })
    }

    fn first(path: &str) -> Option<Value> {
        let d = doc();
        JsonPath::parse(path).unwrap().first(&d).cloned()
    }

    #[test]
    fn dotted_and_quoted_fields() {
        assert_eq!(first(".metadata.name"), Some(json!("d1")));
        assert_eq!(first(".spec.protocol.modbus.slaveID"), Some(json!(1)));
        assert_eq!(
            first(".metadata.labels['app.kubernetes.io/name']"),
            Some(json!("sensor"))
        );
        assert_eq!(
            first(r".metadata.labels.app\.kubernetes\.io/name"),
            Some(json!("sensor"))
        );
        assert_eq!(first("{.metadata.name}"), Some(json!("d1")));
        assert_eq!(first("$.metadata.name"), Some(json!("d1")));
        assert_eq!(first(".metadata.missing.deeper"), None);
        assert_eq!(first(".metadata.name.deeper"), None);
    }

    #[test]
    fn indexes_slices_and_wildcards() {
        assert_eq!(first(".status.twins[0].propertyName"), Some(json!("temp")));
        assert_eq!(first(".status.twins[-1].propertyName"), Some(json!("hum")));
        assert_eq!(first(".status.twins[*].propertyName"), Some(json!("temp")));
        assert_eq!(first(".status.twins[5].propertyName"), None);
        let d = doc();
        let all = |p: &str| JsonPath::parse(p).unwrap().find(&d).unwrap();
        assert_eq!(
            all(".status.twins[*].propertyName"),
            [&json!("temp"), &json!("hum")]
        );
        assert_eq!(all(".spec.items[1:3]"), [&json!(2), &json!(3)]);
        assert_eq!(all(".spec.items[::2]"), [&json!(1), &json!(3)]);
        assert_eq!(all(".spec.items[0,3]"), [&json!(1), &json!(4)]);
        assert_eq!(all("..propertyName"), [&json!("temp"), &json!("hum")]);
        assert_eq!(all(".spec.protocol.*.slaveID"), [&json!(1)]);
    }

    #[test]
    fn filters() {
        assert_eq!(
            first(r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(json!("True"))
        );
        assert_eq!(
            first(".status.conditions[?(@.type == 'Synced')].status"),
            Some(json!("False"))
        );
        assert_eq!(
            first(r#".status.conditions[?(@.type!="Ready")].type"#),
            Some(json!("Synced"))
        );
        assert_eq!(
            first(".status.conditions[?(@.count)].type"),
            Some(json!("Ready"))
        );
        assert_eq!(
            first(".status.conditions[?(@.count>=3)].type"),
            Some(json!("Ready"))
        );
        assert_eq!(first(".status.conditions[?(@.count<3)].type"), None);
        assert_eq!(
            first(r#".status.conditions[?(@.type=="Gone")].status"#),
            None
        );
        // Filtering a map is an evaluation error: no value.
        assert_eq!(first(r#".metadata[?(@.x=="y")]"#), None);
    }

    #[test]
    fn parse_errors_are_reported() {
        for bad in [
            ".a[",
            ".a[?(@.b==)]",
            ".a['x",
            "a.b",
            ".a[x]",
            ".a[?(@.b=1)]",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
