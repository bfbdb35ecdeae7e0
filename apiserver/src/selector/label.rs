//! Label selectors: the `labelSelector` grammar (Kubernetes' `labels.Parse`), the
//! `metav1.LabelSelector` object form and matching. Start at [`LabelSelector::parse`].

use super::{SelectorError, validate_label_key, validate_label_value};
use serde_json::{Map, Value};
use std::fmt;

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOp {
    /// `k=v` or `k==v`: the label is present with that value.
    Equals,
    /// `k!=v`: the label is absent or has another value.
    NotEquals,
    /// `k in (a,b)`: the label is present with one of the values.
    In,
    /// `k notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `k`: the label is present.
    Exists,
    /// `!k`: the label is absent.
    DoesNotExist,
    /// `k>n`: the label is an integer greater than `n`.
    GreaterThan,
    /// `k<n`: the label is an integer less than `n`.
    LessThan,
}

/// One requirement of a label selector (all requirements must hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the label is tested.
    pub op: LabelOp,
    /// The values, sorted and without duplicates; empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, validating the key, the values and their number as Kubernetes'
    /// `labels.NewRequirement` does.
    pub fn new(key: &str, op: LabelOp, mut values: Vec<String>) -> Result<Self, SelectorError> {
        validate_label_key(key)?;
        let bad = |m: &str| Err(SelectorError::Requirement(m.to_owned()));
        match op {
            LabelOp::In | LabelOp::NotIn if values.is_empty() => {
                return bad("for 'in', 'notin' operators, values set can't be empty");
            }
            LabelOp::Equals | LabelOp::NotEquals if values.len() != 1 => {
                return bad("exact-match compatibility requires one single value");
            }
            LabelOp::Exists | LabelOp::DoesNotExist if !values.is_empty() => {
                return bad("values set must be empty for exists and does not exist");
            }
            LabelOp::GreaterThan | LabelOp::LessThan => {
                if values.len() != 1 {
                    return bad("for 'Gt', 'Lt' operators, exactly one value is required");
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return bad("for 'Gt', 'Lt' operators, the value must be an integer");
                }
            }
            _ => {}
        }
        for v in &values {
            validate_label_value(v)?;
        }
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.to_owned(),
            op,
            values,
        })
    }

    /// Whether a label set (read through `get`) satisfies this requirement.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        let int = |v: &str| v.parse::<i64>().ok();
        let bound = || self.values.first().and_then(|v| int(v));
        match (self.op, get(&self.key)) {
            (LabelOp::Exists, v) => v.is_some(),
            (LabelOp::DoesNotExist, v) => v.is_none(),
            (LabelOp::Equals | LabelOp::In, Some(v)) => has(v),
            (LabelOp::NotEquals | LabelOp::NotIn, Some(v)) => !has(v),
            (LabelOp::NotEquals | LabelOp::NotIn, None) => true,
            (LabelOp::GreaterThan, Some(v)) => {
                matches!((int(v), bound()), (Some(a), Some(b)) if a > b)
            }
            (LabelOp::LessThan, Some(v)) => {
                matches!((int(v), bound()), (Some(a), Some(b)) if a < b)
            }
            (_, None) => false,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (k, v) = (&self.key, self.values.join(","));
        match self.op {
            LabelOp::Equals => write!(f, "{k}={v}"),
            LabelOp::NotEquals => write!(f, "{k}!={v}"),
            LabelOp::In => write!(f, "{k} in ({v})"),
            LabelOp::NotIn => write!(f, "{k} notin ({v})"),
            LabelOp::Exists => write!(f, "{k}"),
            LabelOp::DoesNotExist => write!(f, "!{k}"),
            LabelOp::GreaterThan => write!(f, "{k}>{v}"),
            LabelOp::LessThan => write!(f, "{k}<{v}"),
        }
    }
}

/// A parsed label selector: a conjunction of [`Requirement`]s. The default selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Set by [`LabelSelector::nothing`]: a null `metav1.LabelSelector` selects no object.
    nothing: bool,
}

/// Lexer tokens of the label selector grammar (Kubernetes `labels.Lexer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Ident,
    In,
    NotIn,
    Bang,
    NotEq,
    Eq,
    DoubleEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

fn lex(input: &str) -> Vec<(Tok, &str)> {
    const SYMBOLS: [(&str, Tok); 9] = [
        ("!=", Tok::NotEq),
        ("==", Tok::DoubleEq),
        ("!", Tok::Bang),
        ("=", Tok::Eq),
        (">", Tok::Gt),
        ("<", Tok::Lt),
        ("(", Tok::Open),
        (")", Tok::Close),
        (",", Tok::Comma),
    ];
    let special = |c: char| "=!(),><".contains(c);
    let mut out = Vec::new();
    let mut rest = input.trim_start();
    while !rest.is_empty() {
        if let Some((sym, tok)) = SYMBOLS.iter().find(|(s, _)| rest.starts_with(s)) {
            out.push((*tok, *sym));
            rest = &rest[sym.len()..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || special(c))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            let tok = match word {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident,
            };
            out.push((tok, word));
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    out.push((Tok::End, ""));
    out
}

struct Parser<'a> {
    toks: Vec<(Tok, &'a str)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    /// The next token, with `in`/`notin` read as identifiers (Kubernetes' `Values` context).
    fn peek(&self) -> (Tok, &'a str) {
        match self.toks.get(self.pos).copied().unwrap_or((Tok::End, "")) {
            (Tok::In | Tok::NotIn, lit) => (Tok::Ident, lit),
            t => t,
        }
    }
    fn next(&mut self) -> (Tok, &'a str) {
        let t = self.peek();
        self.pos += 1;
        t
    }
    /// The next token with keywords kept (Kubernetes' `KeyAndOperator` context).
    fn next_operator(&mut self) -> (Tok, &'a str) {
        let t = self.toks.get(self.pos).copied().unwrap_or((Tok::End, ""));
        self.pos += 1;
        t
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            match self.peek() {
                (Tok::Ident | Tok::Bang, _) => {
                    reqs.push(self.requirement()?);
                    match self.next() {
                        (Tok::End, _) => return Ok(reqs),
                        (Tok::Comma, _) => {
                            let (t, lit) = self.peek();
                            if !matches!(t, Tok::Ident | Tok::Bang) {
                                let m = format!("found '{lit}', expected: identifier after ','");
                                return Err(SelectorError::LabelSyntax(m));
                            }
                        }
                        (_, lit) => {
                            let m = format!("found '{lit}', expected: ',' or 'end of string'");
                            return Err(SelectorError::LabelSyntax(m));
                        }
                    }
                }
                (Tok::End, _) => return Ok(reqs),
                (_, lit) => {
                    let m = format!("found '{lit}', expected: !, identifier, or 'end of string'");
                    return Err(SelectorError::LabelSyntax(m));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let syntax = |m: String| SelectorError::Requirement(m);
        let in_req = |e: SelectorError| match e {
            e @ SelectorError::Requirement(_) => e,
            e => SelectorError::Requirement(e.to_string()),
        };
        let (mut tok, mut key) = self.next();
        let negated = tok == Tok::Bang;
        if negated {
            (tok, key) = self.next();
        }
        if tok != Tok::Ident {
            return Err(syntax(format!("found '{key}', expected: identifier")));
        }
        validate_label_key(key).map_err(in_req)?;
        if negated || matches!(self.peek().0, Tok::End | Tok::Comma) {
            let op = if negated {
                LabelOp::DoesNotExist
            } else {
                LabelOp::Exists
            };
            return Requirement::new(key, op, Vec::new()).map_err(in_req);
        }
        let op = match self.next_operator() {
            (Tok::Eq | Tok::DoubleEq, _) => LabelOp::Equals,
            (Tok::NotEq, _) => LabelOp::NotEquals,
            (Tok::In, _) => LabelOp::In,
            (Tok::NotIn, _) => LabelOp::NotIn,
            (Tok::Gt, _) => LabelOp::GreaterThan,
            (Tok::Lt, _) => LabelOp::LessThan,
            (_, lit) => {
                return Err(syntax(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                )));
            }
        };
        let values = if matches!(op, LabelOp::In | LabelOp::NotIn) {
            self.value_list()?
        } else {
            match self.peek() {
                (Tok::End | Tok::Comma, _) => vec![String::new()],
                (Tok::Ident, lit) => {
                    self.pos += 1;
                    vec![lit.to_owned()]
                }
                (_, lit) => return Err(syntax(format!("found '{lit}', expected: identifier"))),
            }
        };
        Requirement::new(key, op, values).map_err(in_req)
    }

    /// `( v1, v2 )`; empty entries (`(,a)`, `()`) stand for the empty value, as in Kubernetes.
    fn value_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let err = |m: String| Err(SelectorError::Requirement(m));
        match self.next() {
            (Tok::Open, _) => {}
            (_, lit) => return err(format!("found '{lit}', expected: '('")),
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                (Tok::Ident, lit) if expect_value => {
                    values.push(lit.to_owned());
                    expect_value = false;
                }
                (Tok::Comma, _) => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                (Tok::Close, _) => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                (_, lit) if expect_value => {
                    return err(format!("found '{lit}', expected: ',', ')' or identifier"));
                }
                (_, lit) => return err(format!("found '{lit}', expected: ',' or ')'")),
            }
        }
    }
}

impl LabelSelector {
    /// Parses a `labelSelector` query parameter: comma-separated requirements `k=v`, `k==v`,
    /// `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`; whitespace is ignored
    /// between tokens. The empty string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            toks: lex(input),
            pos: 0,
        };
        let requirements = parser.selector()?;
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// A selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector that matches no object (what a null `metav1.LabelSelector` means).
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions` with
    /// `In`/`NotIn`/`Exists`/`DoesNotExist`) as `metav1.LabelSelectorAsSelector` does: `null`
    /// selects nothing, `{}` selects everything.
    pub fn from_metav1(value: &Value) -> Result<Self, SelectorError> {
        let bad = |m: String| SelectorError::LabelSelectorObject(m);
        let obj = match value {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(obj) => obj,
            other => {
                return Err(bad(format!(
                    "label selector must be an object, got {other}"
                )));
            }
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (k, v) in labels {
                    let v = v
                        .as_str()
                        .ok_or_else(|| bad(format!("matchLabels[{k}] must be a string")))?;
                    requirements.push(Requirement::new(k, LabelOp::Equals, vec![v.to_owned()])?);
                }
            }
            Some(_) => return Err(bad("matchLabels must be an object".into())),
        }
        let exprs = match obj.get("matchExpressions") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(exprs)) => exprs.as_slice(),
            Some(_) => return Err(bad("matchExpressions must be a list".into())),
        };
        for expr in exprs {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
            let op = match expr
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => LabelOp::In,
                "NotIn" => LabelOp::NotIn,
                "Exists" => LabelOp::Exists,
                "DoesNotExist" => LabelOp::DoesNotExist,
                other => {
                    return Err(bad(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            let values = match expr.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(vs)) => vs
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(format!("values of {key:?} must be strings")))?,
                Some(_) => return Err(bad(format!("values of {key:?} must be a list"))),
            };
            requirements.push(Requirement::new(key, op, values)?);
        }
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// True when the selector has no requirement and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.nothing
    }

    /// The requirements, all of which must hold.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a label set read through `get` (key to value) is selected.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(&get))
    }

    /// Whether a `metadata.labels` map is selected; non-string values count as absent.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.matches_with(|k| labels.get(k).and_then(Value::as_str))
    }

    /// Whether an object (by its `metadata.labels`) is selected.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.matches_with(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form, parseable by [`LabelSelector::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap()
    }

    fn err(s: &str) -> String {
        LabelSelector::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn label_grammar_parses_every_operator() {
        let s = sel(" a=b, c==d ,e!=f,g in (x, y,x), h notin(z),i,!j , k>5,l<10");
        let ops: Vec<_> = s.requirements().iter().map(|r| r.op).collect();
        use LabelOp::*;
        assert_eq!(
            ops,
            [
                Equals,
                Equals,
                NotEquals,
                In,
                NotIn,
                Exists,
                DoesNotExist,
                GreaterThan,
                LessThan
            ]
        );
        assert_eq!(s.requirements()[3].values, ["x", "y"]);
        assert_eq!(
            s.to_string(),
            "a=b,c=d,e!=f,g in (x,y),h notin (z),i,!j,k>5,l<10"
        );
        assert_eq!(sel(&s.to_string()), s);
        assert!(sel("").is_empty() && sel("  ").is_empty() && !s.is_empty());
        assert_eq!(sel("a=").requirements()[0].values, [""]);
        assert_eq!(sel("a in ()").requirements()[0].values, [""]);
        assert_eq!(sel("a in (,b)").requirements()[0].values, ["", "b"]);
        assert_eq!(sel("in=notin").requirements()[0].values, ["notin"]);
        assert_eq!(
            sel("example.com/app-name=v1.2_x").requirements()[0].key,
            "example.com/app-name"
        );
    }

    #[test]
    fn label_grammar_errors_read_like_kubernetes() {
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b', expected: '('"
        );
        assert_eq!(err("a=b=c"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(
            err(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err("a in (x y)"),
            "unable to parse requirement: found 'y', expected: ',' or ')'"
        );
        assert_eq!(
            err("a in (x"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
        assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert!(err("a>x").contains("the value must be an integer"));
        assert!(
            err("-a=b")
                .starts_with("unable to parse requirement: key: Invalid value: \"-a\": name part")
        );
        assert!(err("Example.com/a").contains("prefix part a lowercase RFC 1123 subdomain"));
        assert!(err("/a").contains("prefix part must be non-empty"));
        assert!(err("a/b/c").contains("name part must consist"));
        assert!(err(&"k".repeat(64)).contains("no more than 63 characters"));
        assert!(err(&format!("{}/a", "p".repeat(254))).contains("no more than 253"));
        assert!(err("a=-x").contains("values: Invalid value: \"-x\": a valid label must be"));
        assert!(err(&format!("a={}", "v".repeat(64))).contains("must be no more than 63"));
    }

    #[test]
    fn label_matching() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "7", "bad": 3}));
        let m = |s: &str| sel(s).matches(&l);
        assert!(m("") && m("app=web") && m("app==web") && m("app!=db") && m("zone!=x"));
        assert!(m("app in (db,web)") && m("app notin (db)") && m("zone notin (a)"));
        assert!(m("app,!zone") && m("n>6") && m("n<8") && m("app=web,tier=front"));
        assert!(!m("app=db") && !m("app!=web") && !m("zone") && !m("!app") && !m("zone=x"));
        assert!(!m("app notin (web)") && !m("n>7") && !m("app>1") && !m("missing<9"));
        assert!(
            !m("bad") && m("!bad"),
            "non-string label values count as absent"
        );
        let pod = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(sel("app=web").matches_object(&pod) && !sel("app").matches_object(&json!({})));
        assert!(sel("!app").matches_object(&json!({"metadata": {}})));
    }

    #[test]
    fn metav1_label_selector_converts() {
        let s = LabelSelector::from_metav1(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        }))
        .unwrap();
        assert_eq!(s.to_string(), "app=web,tier in (back,front),!canary");
        assert!(s.matches(&labels(json!({"app": "web", "tier": "back"}))));
        assert!(!s.matches(&labels(
            json!({"app": "web", "tier": "back", "canary": "1"})
        )));
        let everything = LabelSelector::from_metav1(&json!({})).unwrap();
        assert!(everything.is_empty() && everything.matches(&Map::new()));
        let nothing = LabelSelector::from_metav1(&Value::Null).unwrap();
        assert!(!nothing.is_empty() && !nothing.matches(&Map::new()));
        let bad = |v: Value| LabelSelector::from_metav1(&v).unwrap_err().to_string();
        let op = json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]});
        assert_eq!(bad(op), "\"Gt\" is not a valid label selector operator");
        let empty_in = json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]});
        assert!(bad(empty_in).contains("values set can't be empty"));
        assert!(bad(json!({"matchLabels": {"a": 1}})).contains("must be a string"));
        assert!(bad(json!({"matchLabels": {"a b": "x"}})).contains("name part must consist"));
    }
}
