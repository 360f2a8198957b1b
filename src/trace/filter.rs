//! `filter`: a small expression over an event's fields, checked against the gadget's fields
//! when the call is prepared and applied to every decoded event before it is counted,
//! grouped, ranked or kept.
//!
//! ```text
//! expr    := and ("||" and)*
//! and     := unary ("&&" unary)*
//! unary   := "!" unary | "(" expr ")" | compare
//! compare := FIELD OP VALUE | FIELD "in" "[" VALUE ("," VALUE)* "]"
//! OP      := "==" | "!=" | "<" | "<=" | ">" | ">=" | "~"   (~: glob on strings)
//! VALUE   := number | "string" | 'string' | true | false
//! ```
//!
//! A field holding a list (exec's `argv`) matches when any element does. A field an event
//! lacks compares as not equal to anything.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::glob::Glob;

/// Bytes of filter text accepted, and comparisons in one filter.
pub const MAX_LEN: usize = 1024;
pub const MAX_TERMS: usize = 64;

/// What a field holds, as far as comparisons go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Number,
    String,
    /// A list of strings: a comparison holds when it holds for any element.
    Strings,
    Bool,
    /// Not known before the event (compared by what the event holds).
    Any,
}

impl Kind {
    /// The kind of a gadget field's documented type (`u32`, `s64`, `string`, `string[]`…).
    pub fn of_type(ty: &str) -> Self {
        match ty {
            "string" | "time" => Self::String,
            "string[]" => Self::Strings,
            "bool" => Self::Bool,
            t if t.starts_with('u') || t.starts_with('s') => Self::Number,
            _ => Self::Any,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Glob,
}

#[derive(Debug, Clone)]
enum Literal {
    /// Compared exactly with integer fields (u64 ids do not fit an f64).
    Int(i128),
    Number(f64),
    String(String),
    Bool(bool),
}

#[derive(Debug)]
enum Node {
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Compare {
        field: String,
        op: Op,
        value: Literal,
        glob: Option<Glob>,
    },
    In {
        field: String,
        values: Vec<Literal>,
    },
}

/// A value a passing event must have (see [`Filter::required_equalities`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required<'a> {
    Int(i128),
    Str(&'a str),
}

/// A parsed filter.
#[derive(Debug)]
pub struct Filter {
    root: Node,
    text: String,
}

impl Filter {
    /// Parses `text` against `fields` (name and kind): an unknown field, an operator its
    /// kind does not allow, or a value of the wrong type is an error that says which.
    pub fn parse(text: &str, fields: &[(String, Kind)]) -> Result<Self, String> {
        if text.len() > MAX_LEN {
            return Err(format!("`filter` is at most {MAX_LEN} bytes"));
        }
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            at: 0,
            fields,
            terms: 0,
        };
        let root = p.expr(0)?;
        if let Some(t) = p.tokens.get(p.at) {
            return Err(format!(
                "unexpected {} after a complete expression",
                t.describe()
            ));
        }
        Ok(Self {
            root,
            text: text.to_owned(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The `field == value` terms every passing event satisfies (the filter itself, or
    /// terms of its top-level `&&`): the kernel can check these before an event is sent.
    pub fn required_equalities(&self) -> Vec<(&str, Required<'_>)> {
        let terms: Vec<&Node> = match &self.root {
            Node::And(nodes) => nodes.iter().collect(),
            other => vec![other],
        };
        terms
            .into_iter()
            .filter_map(|n| match n {
                Node::Compare {
                    field,
                    op: Op::Eq,
                    value,
                    ..
                } => match value {
                    Literal::Int(i) => Some((field.as_str(), Required::Int(*i))),
                    Literal::String(s) => Some((field.as_str(), Required::Str(s))),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Whether the filter is nothing but [`Self::required_equalities`].
    pub fn is_only_equalities(&self) -> bool {
        let terms = match &self.root {
            Node::And(nodes) => nodes.len(),
            _ => 1,
        };
        self.required_equalities().len() == terms
    }

    /// Whether the filter reads `field`.
    pub fn reads(&self, field: &str) -> bool {
        fn walk(node: &Node, field: &str) -> bool {
            match node {
                Node::Or(nodes) | Node::And(nodes) => nodes.iter().any(|n| walk(n, field)),
                Node::Not(n) => walk(n, field),
                Node::Compare { field: f, .. } | Node::In { field: f, .. } => f == field,
            }
        }
        walk(&self.root, field)
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Map<String, Value>) -> bool {
        eval(&self.root, event)
    }
}

fn eval(node: &Node, event: &Map<String, Value>) -> bool {
    match node {
        Node::Or(nodes) => nodes.iter().any(|n| eval(n, event)),
        Node::And(nodes) => nodes.iter().all(|n| eval(n, event)),
        Node::Not(n) => !eval(n, event),
        Node::Compare {
            field,
            op,
            value,
            glob,
        } => match event.get(field) {
            None | Some(Value::Null) => *op == Op::Ne,
            Some(Value::Array(items)) => items.iter().any(|v| holds(v, *op, value, glob.as_ref())),
            Some(v) => holds(v, *op, value, glob.as_ref()),
        },
        Node::In { field, values } => match event.get(field) {
            None | Some(Value::Null) => false,
            Some(Value::Array(items)) => items
                .iter()
                .any(|v| values.iter().any(|l| holds(v, Op::Eq, l, None))),
            Some(v) => values.iter().any(|l| holds(v, Op::Eq, l, None)),
        },
    }
}

fn holds(v: &Value, op: Op, literal: &Literal, glob: Option<&Glob>) -> bool {
    if op == Op::Glob {
        return matches!((v, glob), (Value::String(s), Some(g)) if g.matches(s));
    }
    let ordering = match (v, literal) {
        (Value::Number(n), Literal::Int(l)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some(i128::from(u).cmp(l)),
            (None, Some(i)) => Some(i128::from(i).cmp(l)),
            (None, None) => n.as_f64().and_then(|n| n.partial_cmp(&(*l as f64))),
        },
        (Value::Number(n), Literal::Number(l)) => n.as_f64().and_then(|n| n.partial_cmp(l)),
        (Value::String(s), Literal::String(l)) => Some(s.as_str().cmp(l.as_str())),
        (Value::Bool(b), Literal::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    };
    match (op, ordering) {
        (Op::Ne, None) => true,
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Glob, _) => false,
    }
}

// ------------------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Int(i128),
    Number(f64),
    Str(String),
    Op(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("`{s}`"),
            Token::Int(n) => format!("the number {n}"),
            Token::Number(n) => format!("the number {n}"),
            Token::Str(s) => format!("the string \"{s}\""),
            Token::Op(o) => format!("`{o}`"),
        }
    }
}

const OPERATORS: [&str; 15] = [
    "==", "!=", "<=", ">=", "&&", "||", "<", ">", "~", "!", "(", ")", "[", "]", ",",
];

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(out);
        };
        if let Some(op) = OPERATORS.iter().find(|o| rest.starts_with(**o)) {
            out.push(Token::Op(op));
            rest = &rest[op.len()..];
        } else if c == '"' || c == '\'' {
            let mut value = String::new();
            let mut chars = rest[1..].char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("a string starting {c} is not closed")),
                    Some((i, q)) if q == c => break i + 2,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, e)) => value.push(e),
                        None => return Err("a string ends in `\\`".into()),
                    },
                    Some((_, ch)) => value.push(ch),
                }
            };
            out.push(Token::Str(value));
            rest = &rest[end..];
        } else if c.is_ascii_digit()
            || (c == '-' && rest[1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            let end = rest[1..]
                .find(|d: char| !(d.is_ascii_alphanumeric() || d == '.'))
                .map_or(rest.len(), |i| i + 1);
            let word = &rest[..end];
            out.push(parse_number(word).ok_or_else(|| format!("`{word}` is not a number"))?);
            rest = &rest[end..];
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = rest
                .find(|d: char| !(d.is_ascii_alphanumeric() || d == '_' || d == '.'))
                .unwrap_or(rest.len());
            out.push(Token::Ident(rest[..end].to_owned()));
            rest = &rest[end..];
        } else {
            return Err(format!(
                "unexpected `{c}`; a filter is like `ret < 0 && comm ~ \"py*\"`"
            ));
        }
    }
}

fn parse_number(word: &str) -> Option<Token> {
    let (negative, digits) = match word.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, word),
    };
    let sign = |n: i128| if negative { -n } else { n };
    if let Some(hex) = digits.strip_prefix("0x") {
        return Some(Token::Int(sign(i128::from(
            u64::from_str_radix(hex, 16).ok()?,
        ))));
    }
    if let Ok(n) = digits.parse::<u64>() {
        return Some(Token::Int(sign(i128::from(n))));
    }
    let n = digits.parse::<f64>().ok().filter(|n| n.is_finite())?;
    Some(Token::Number(if negative { -n } else { n }))
}

// ------------------------------------------------------------------------- parsing

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    fields: &'a [(String, Kind)],
    terms: usize,
}

/// Nesting accepted: deeper is refused rather than recursed into.
const MAX_DEPTH: usize = 32;

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn eat(&mut self, op: &str) -> bool {
        if self.peek() == Some(&Token::Op(op_static(op))) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err(format!("`filter` nests deeper than {MAX_DEPTH} levels"));
        }
        let mut any = vec![self.and(depth)?];
        while self.eat("||") {
            any.push(self.and(depth)?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Node::Or(any)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Node, String> {
        let mut all = vec![self.unary(depth)?];
        while self.eat("&&") {
            all.push(self.unary(depth)?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Node::And(all)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err(format!("`filter` nests deeper than {MAX_DEPTH} levels"));
        }
        if self.eat("!") {
            return Ok(Node::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.eat("(") {
            let inner = self.expr(depth + 1)?;
            if !self.eat(")") {
                return Err(self.expected("`)`"));
            }
            return Ok(inner);
        }
        self.compare()
    }

    fn expected(&self, what: &str) -> String {
        match self.peek() {
            Some(t) => format!("expected {what}, found {}", t.describe()),
            None => format!("expected {what}, but the filter ends"),
        }
    }

    fn field_names(&self) -> String {
        self.fields
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn compare(&mut self) -> Result<Node, String> {
        let field = match self.next() {
            Some(Token::Ident(name)) => name,
            _ => {
                self.at -= 1;
                return Err(self.expected("a field name"));
            }
        };
        let Some(kind) = self
            .fields
            .iter()
            .find(|(n, _)| *n == field)
            .map(|(_, k)| *k)
        else {
            return Err(format!(
                "`{field}` is not a field of these events{}; fields: {}",
                crate::suggest::did_you_mean(&field, self.fields.iter().map(|(n, _)| n.as_str())),
                self.field_names()
            ));
        };
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(format!("`filter` has more than {MAX_TERMS} comparisons"));
        }
        if let Some(Token::Ident(word)) = self.peek()
            && word == "in"
        {
            self.at += 1;
            if !self.eat("[") {
                return Err(self.expected("`[` after `in`"));
            }
            let mut values = vec![self.value(&field, kind)?];
            while self.eat(",") {
                values.push(self.value(&field, kind)?);
            }
            if !self.eat("]") {
                return Err(self.expected("`,` or `]`"));
            }
            self.terms += values.len();
            if self.terms > MAX_TERMS {
                return Err(format!("`filter` has more than {MAX_TERMS} comparisons"));
            }
            return Ok(Node::In { field, values });
        }
        let op = match self.next() {
            Some(Token::Op("==")) => Op::Eq,
            Some(Token::Op("!=")) => Op::Ne,
            Some(Token::Op("<")) => Op::Lt,
            Some(Token::Op("<=")) => Op::Le,
            Some(Token::Op(">")) => Op::Gt,
            Some(Token::Op(">=")) => Op::Ge,
            Some(Token::Op("~")) => Op::Glob,
            _ => {
                self.at -= 1;
                return Err(self.expected(&format!(
                    "an operator after `{field}` (==, !=, <, <=, >, >=, ~, in)"
                )));
            }
        };
        if op == Op::Glob && !matches!(kind, Kind::String | Kind::Strings | Kind::Any) {
            return Err(format!("`~` matches strings; `{field}` is not one"));
        }
        let value = self.value(&field, kind)?;
        let glob = match (op, &value) {
            (Op::Glob, Literal::String(pattern)) => {
                Some(Glob::new(pattern).map_err(|e| format!("`{pattern}` is not a glob: {e}"))?)
            }
            (Op::Glob, _) => {
                return Err(format!(
                    "`~` takes a glob in quotes, e.g. {field} ~ \"py*\""
                ));
            }
            _ => None,
        };
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && kind == Kind::Bool {
            return Err(format!(
                "`{field}` is true or false: compare it with == or !="
            ));
        }
        Ok(Node::Compare {
            field,
            op,
            value,
            glob,
        })
    }

    fn value(&mut self, field: &str, kind: Kind) -> Result<Literal, String> {
        let literal = match self.next() {
            Some(Token::Int(n)) => Literal::Int(n),
            Some(Token::Number(n)) => Literal::Number(n),
            Some(Token::Str(s)) => Literal::String(s),
            Some(Token::Ident(w)) if w == "true" || w == "false" => Literal::Bool(w == "true"),
            Some(Token::Ident(w)) => {
                return Err(format!(
                    "`{w}` is not a value: put strings in quotes (`{field} == \"{w}\"`)"
                ));
            }
            _ => {
                self.at -= 1;
                return Err(self.expected(&format!("a value for `{field}`")));
            }
        };
        let fits = matches!(
            (kind, &literal),
            (Kind::Any, _)
                | (Kind::Number, Literal::Int(_) | Literal::Number(_))
                | (Kind::String | Kind::Strings, Literal::String(_))
                | (Kind::Bool, Literal::Bool(_))
        );
        if !fits {
            let wanted = match kind {
                Kind::Number => "a number",
                Kind::String | Kind::Strings => "a string in quotes",
                Kind::Bool => "true or false",
                Kind::Any => "a value",
            };
            return Err(format!("`{field}` takes {wanted}"));
        }
        Ok(literal)
    }
}

fn op_static(op: &str) -> &'static str {
    OPERATORS.iter().find(|o| **o == op).copied().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<(String, Kind)> {
        [
            ("pid", Kind::Number),
            ("comm", Kind::String),
            ("ret", Kind::Number),
            ("argv", Kind::Strings),
            ("argv_truncated", Kind::Bool),
            ("dport", Kind::Number),
            ("cgroup_id", Kind::Number),
        ]
        .map(|(n, k)| (n.to_owned(), k))
        .to_vec()
    }

    fn event(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn passes(filter: &str, e: &Value) -> bool {
        Filter::parse(filter, &fields())
            .unwrap()
            .matches(&event(e.clone()))
    }

    #[test]
    fn comparisons_logic_and_precedence() {
        let e = json!({"pid": 10, "comm": "python3", "ret": -2, "argv": ["ls", "-l"],
                       "argv_truncated": false, "cgroup_id": u64::MAX});
        for (filter, want) in [
            ("ret < 0", true),
            ("ret >= 0", false),
            ("ret == -2 && comm == \"python3\"", true),
            ("comm ~ \"py*\"", true),
            ("comm ~ 'x*' || pid == 10", true),
            ("!(pid == 10)", false),
            ("pid != 11 && !argv_truncated == true", true),
            ("pid in [1, 2, 10]", true),
            ("comm in [\"bash\", \"sh\"]", false),
            ("argv == \"-l\"", true),
            ("argv ~ \"-*\"", true),
            ("pid == 1 || pid == 2 && ret < 0", false),
            ("(pid == 1 || pid == 10) && ret < 0", true),
            ("pid == 0xa", true),
            ("dport == 47999", false),
            ("dport != 47999", true),
            ("cgroup_id == 18446744073709551615", true),
            ("cgroup_id == 18446744073709551614", false),
            ("cgroup_id > 1.5", true),
            ("ret > -2.5 && ret < -1.5", true),
        ] {
            assert_eq!(passes(filter, &e), want, "{filter}");
        }
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        for (filter, needle) in [
            (
                "port == 1",
                "`port` is not a field of these events; did you mean `dport`?; fields: pid, comm",
            ),
            ("comm == python3", "put strings in quotes"),
            ("pid == \"10\"", "`pid` takes a number"),
            ("pid ~ \"1*\"", "`~` matches strings"),
            ("argv_truncated > true", "compare it with =="),
            ("pid ==", "expected a value for `pid`, but the filter ends"),
            ("pid 10", "expected an operator after `pid`"),
            ("(pid == 1", "expected `)`"),
            ("pid == 1 pid", "unexpected `pid`"),
            ("comm == \"x", "not closed"),
            ("pid == 1 ; ls", "unexpected `;`"),
            ("comm ~ \"[\"", "not a glob"),
            ("pid in [1 2]", "expected `,` or `]`"),
            ("", "expected a field name"),
        ] {
            let err = Filter::parse(filter, &fields()).unwrap_err();
            assert!(err.contains(needle), "{filter}: {err}");
        }
    }

    #[test]
    fn top_level_equalities_are_what_the_kernel_can_check() {
        let f = Filter::parse("pid == 7 && comm == \"cat\" && ret < 0", &fields()).unwrap();
        assert_eq!(
            f.required_equalities(),
            [("pid", Required::Int(7)), ("comm", Required::Str("cat"))]
        );
        let one = Filter::parse("comm == \"cat\"", &fields()).unwrap();
        assert_eq!(one.required_equalities(), [("comm", Required::Str("cat"))]);
        for none in [
            "pid == 7 || comm == \"cat\"",
            "!(pid == 7)",
            "pid != 7",
            "pid in [7]",
        ] {
            let f = Filter::parse(none, &fields()).unwrap();
            assert!(f.required_equalities().is_empty(), "{none}");
        }
    }

    #[test]
    fn hostile_filters_are_bounded() {
        let deep = format!("{}pid == 1{}", "(".repeat(100), ")".repeat(100));
        assert!(
            Filter::parse(&deep, &fields())
                .unwrap_err()
                .contains("nests deeper")
        );
        let nots = format!("{}pid == 1", "!".repeat(100));
        assert!(
            Filter::parse(&nots, &fields())
                .unwrap_err()
                .contains("nests deeper")
        );
        let many = vec!["pid == 1"; 70].join(" || ");
        assert!(
            Filter::parse(&many, &fields())
                .unwrap_err()
                .contains("comparisons")
        );
        let long = "pid == 1 || ".repeat(200);
        assert!(
            Filter::parse(&long, &fields())
                .unwrap_err()
                .contains("at most")
        );
    }

    #[test]
    fn missing_fields_match_only_not_equal() {
        let e = json!({"pid": 1});
        assert!(!passes("dport == 5", &e) && passes("dport != 5", &e));
        assert!(!passes("dport in [5]", &e));
        let f = Filter::parse("pid == 1 || !(dport in [5])", &fields()).unwrap();
        assert!(f.reads("dport") && f.reads("pid") && !f.reads("comm"));
        assert_eq!(f.text(), "pid == 1 || !(dport in [5])");
    }
}
