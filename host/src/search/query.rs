//! The query language of `cairn list --query`:
//!
//! ```text
//! query      := and ("or" and)*
//! and        := condition ("and" condition)*
//! condition  := field op value | "(" query ")"
//! op         := "=" | "!=" | "<" | "<=" | ">" | ">="
//! value      := "string" | integer | true | false
//! ```
//!
//! Fields are the runs' own (`id`, `workflow`, `status`, `version`,
//! `created`, `updated`, `concurrency_key`) or search attributes. Times
//! (`created`, `updated`, time attributes) compare with RFC 3339 strings.

use super::SearchValue;
use crate::store::{RunMeta, RunStatus};
use std::cmp::Ordering;
use thiserror::Error;

/// The fields every run has.
pub(crate) const BUILT_IN: &[&str] = &["id", "workflow", "status", "version", "created", "updated", "concurrency_key"];

/// A query that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid query at character {at}: {message}")]
pub struct QueryError {
    /// Where (0-based, in characters).
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Int(i64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Or(Vec<Node>),
    And(Vec<Node>),
    Cond { field: String, op: Op, value: Literal },
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Int(i64),
    Op(Op),
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<(usize, Token)>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| QueryError { at, message };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push((start, Token::Open));
                i += 1;
            }
            ')' => {
                out.push((start, Token::Close));
                i += 1;
            }
            '"' | '\'' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "a string is not closed".into())),
                        Some('\\') if chars.get(i + 1).is_some() => {
                            s.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(q) if *q == c => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Token::Text(s)));
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1) == Some(&'=');
                let (op, width) = match (c, next) {
                    ('=', true) => (Op::Eq, 2),
                    ('=', false) => (Op::Eq, 1),
                    ('!', true) => (Op::Ne, 2),
                    ('<', true) => (Op::Le, 2),
                    ('<', false) => (Op::Lt, 1),
                    ('>', true) => (Op::Ge, 2),
                    ('>', false) => (Op::Gt, 1),
                    _ => return Err(err(start, "`!` must be followed by `=`".into())),
                };
                i += width;
                out.push((start, Token::Op(op)));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let mut s = String::from(c);
                i += 1;
                while let Some(d) = chars.get(i).filter(|d| d.is_ascii_digit()) {
                    s.push(*d);
                    i += 1;
                }
                let n = s.parse().map_err(|_| err(start, format!("{s:?} is not an integer")))?;
                out.push((start, Token::Int(n)));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut s = String::new();
                while let Some(w) = chars.get(i).filter(|w| w.is_ascii_alphanumeric() || matches!(w, '_' | '-' | '.')) {
                    s.push(*w);
                    i += 1;
                }
                out.push((start, Token::Word(s)));
            }
            other => return Err(err(start, format!("unexpected {other:?}"))),
        }
    }
    Ok(out)
}

/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;

/// Deepest nesting of parentheses.
const MAX_DEPTH: usize = 32;

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
    depth: usize,
}

impl Parser {
    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.len, |(at, _)| *at)
    }

    fn err(&self, message: impl Into<String>) -> QueryError {
        QueryError { at: self.at(), message: message.into() }
    }

    fn keyword(&mut self, word: &str) -> bool {
        match self.tokens.get(self.pos) {
            Some((_, Token::Word(w))) if w.eq_ignore_ascii_case(word) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    fn or(&mut self) -> Result<Node, QueryError> {
        let mut parts = vec![self.and()?];
        while self.keyword("or") {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Node::Or(parts) })
    }

    fn and(&mut self) -> Result<Node, QueryError> {
        let mut parts = vec![self.condition()?];
        while self.keyword("and") {
            parts.push(self.condition()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Node::And(parts) })
    }

    fn condition(&mut self) -> Result<Node, QueryError> {
        let token = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        match token {
            Some(Token::Open) => {
                if self.depth == MAX_DEPTH {
                    return Err(self.err(format!("parentheses nest deeper than {MAX_DEPTH}")));
                }
                self.pos += 1;
                self.depth += 1;
                let inner = self.or()?;
                self.depth -= 1;
                match self.tokens.get(self.pos) {
                    Some((_, Token::Close)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => Err(self.err("expected `)`")),
                }
            }
            Some(Token::Word(field)) => {
                self.pos += 1;
                let op = match self.tokens.get(self.pos) {
                    Some((_, Token::Op(op))) => *op,
                    _ => return Err(self.err(format!("expected an operator (=, !=, <, <=, >, >=) after {field}"))),
                };
                self.pos += 1;
                let value = match self.tokens.get(self.pos).map(|(_, t)| t.clone()) {
                    Some(Token::Text(s)) => Literal::Text(s),
                    Some(Token::Int(n)) => Literal::Int(n),
                    Some(Token::Word(w)) if w == "true" || w == "false" => Literal::Bool(w == "true"),
                    _ => return Err(self.err("expected a value: \"text\", an integer, true or false")),
                };
                self.pos += 1;
                Ok(Node::Cond { field, op, value })
            }
            _ => Err(self.err("expected a condition such as workflow = \"order\"")),
        }
    }
}

impl Query {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(QueryError { at: 0, message: format!("the query is over {MAX_QUERY_BYTES} bytes") });
        }
        let tokens = tokens(text)?;
        let mut parser = Parser { tokens, pos: 0, len: text.chars().count(), depth: 0 };
        let root = parser.or()?;
        if parser.pos < parser.tokens.len() {
            return Err(parser.err("expected `and`, `or` or the end of the query"));
        }
        let query = Query { root };
        query.check(&query.root)?;
        Ok(query)
    }

    /// Refuses what can never match sensibly: a status that does not exist,
    /// a time that does not parse.
    fn check(&self, node: &Node) -> Result<(), QueryError> {
        match node {
            Node::Or(parts) | Node::And(parts) => parts.iter().try_for_each(|p| self.check(p)),
            Node::Cond { field, value, .. } => {
                let bad = |message: String| Err(QueryError { at: 0, message });
                match (field.as_str(), value) {
                    ("status", Literal::Text(s)) if RunStatus::parse(s).is_none() => bad(format!(
                        "unknown status {s:?}: use running, queued, paused, completed, failed, diverged or terminated"
                    )),
                    ("created" | "updated", Literal::Text(s)) if time(s).is_none() => {
                        bad(format!("{field} compares with an RFC 3339 time, not {s:?}"))
                    }
                    ("version", Literal::Text(_)) | ("created" | "updated", Literal::Int(_) | Literal::Bool(_)) => {
                        bad(format!("{field} does not compare with that value"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Whether `run` matches.
    pub fn matches(&self, run: &RunMeta) -> bool {
        eval(&self.root, run)
    }

    /// The workflow and status every match has, when the query pins them
    /// (a top-level `and` of equalities): where to read pages from.
    pub fn pinned(&self) -> (Option<String>, Option<RunStatus>) {
        let conds: Vec<&Node> = match &self.root {
            Node::And(parts) => parts.iter().collect(),
            other => vec![other],
        };
        let mut workflow = None;
        let mut status = None;
        for c in conds {
            if let Node::Cond { field, op: Op::Eq, value: Literal::Text(v) } = c {
                match field.as_str() {
                    "workflow" => workflow = Some(v.clone()),
                    "status" => status = RunStatus::parse(v),
                    _ => {}
                }
            }
        }
        (workflow, status)
    }
}

impl Query {
    /// A search attribute every match has with one value, when the query
    /// pins one (a top-level `and` with an equality on it): whose index to
    /// read runs from. A text that reads as a time is left out: it may be
    /// a keyword or a time attribute.
    pub fn pinned_attribute(&self) -> Option<(String, SearchValue)> {
        let conds: Vec<&Node> = match &self.root {
            Node::And(parts) => parts.iter().collect(),
            other => vec![other],
        };
        conds.into_iter().find_map(|c| match c {
            Node::Cond { field, op: Op::Eq, value } if !BUILT_IN.contains(&field.as_str()) => {
                let value = match value {
                    Literal::Text(t) if time(t).is_none() => SearchValue::Keyword(t.clone()),
                    Literal::Int(n) => SearchValue::Int(*n),
                    Literal::Bool(b) => SearchValue::Bool(*b),
                    Literal::Text(_) => return None,
                };
                Some((field.clone(), value))
            }
            _ => None,
        })
    }
}

fn time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}

fn eval(node: &Node, run: &RunMeta) -> bool {
    match node {
        Node::Or(parts) => parts.iter().any(|p| eval(p, run)),
        Node::And(parts) => parts.iter().all(|p| eval(p, run)),
        Node::Cond { field, op, value } => {
            let ordering = match (field.as_str(), value) {
                ("id", Literal::Text(v)) => Some(run.id.as_str().cmp(v)),
                ("workflow", Literal::Text(v)) => Some(run.workflow.as_str().cmp(v)),
                ("status", Literal::Text(v)) => Some(run.status.as_str().cmp(v)),
                ("concurrency_key", Literal::Text(v)) => run.slot.as_ref().map(|s| s.key.as_str().cmp(v)),
                ("version", Literal::Int(v)) => run.version.map(|ver| i64::from(ver).cmp(v)),
                ("created", Literal::Text(v)) => time(v).map(|t| (run.created_ms as i64).cmp(&t)),
                ("updated", Literal::Text(v)) => time(v).map(|t| (run.updated_ms as i64).cmp(&t)),
                (name, value) => match (run.search.get(name), value) {
                    (Some(SearchValue::Keyword(s)), Literal::Text(v)) => Some(s.as_str().cmp(v)),
                    (Some(SearchValue::Int(n)), Literal::Int(v)) => Some(n.cmp(v)),
                    (Some(SearchValue::Bool(b)), Literal::Bool(v)) => Some(b.cmp(v)),
                    (Some(SearchValue::Time(t)), Literal::Text(v)) => time(v).map(|v| t.cmp(&v)),
                    // Missing, or of another type: no condition on it holds.
                    _ => None,
                },
            };
            ordering.is_some_and(|o| match op {
                Op::Eq => o == Ordering::Equal,
                Op::Ne => o != Ordering::Equal,
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, amount: i64) -> RunMeta {
        let mut m = crate::store::tests::meta_for_tests("r1", "order", status);
        m.search.insert("amount".into(), SearchValue::Int(amount));
        m.search.insert("customer".into(), SearchValue::Keyword("acme".into()));
        m.search.insert("vip".into(), SearchValue::Bool(true));
        m.search.insert("due".into(), SearchValue::Time(1_796_612_400_000));
        m
    }

    #[test]
    fn a_query_pinning_an_attributes_value_reads_its_index() {
        let pinned = |q: &str| Query::parse(q).unwrap().pinned_attribute();
        let keyword = |s: &str| SearchValue::Keyword(s.into());
        assert_eq!(pinned(r#"workflow = "order" and customer = "acme""#), Some(("customer".into(), keyword("acme"))));
        assert_eq!(pinned("amount = 1200 and vip = true"), Some(("amount".into(), SearchValue::Int(1200))));
        assert_eq!(pinned("vip = true"), Some(("vip".into(), SearchValue::Bool(true))));
        assert_eq!(pinned(r#"customer = "acme" or customer = "beta""#), None, "an or pins nothing");
        assert_eq!(pinned("amount > 5"), None, "a range reads no index");
        assert_eq!(pinned(r#"workflow = "order""#), None, "not an attribute");
        assert_eq!(pinned(r#"due = "2027-01-01T00:00:00Z""#), None, "a time or a keyword");
    }

    #[test]
    fn conditions_combine_with_and_or_and_parentheses() {
        let q = Query::parse(r#"workflow = "order" and status = "running" and amount > 1000"#).unwrap();
        assert!(q.matches(&run(RunStatus::Running, 1200)));
        assert!(!q.matches(&run(RunStatus::Running, 1000)));
        assert!(!q.matches(&run(RunStatus::Completed, 1200)));
        assert_eq!(q.pinned(), (Some("order".into()), Some(RunStatus::Running)));
        let q = Query::parse(
            r#"(customer = "acme" or customer = "globex") and vip = true and due < "2027-01-01T00:00:00Z""#,
        )
        .unwrap();
        assert!(q.matches(&run(RunStatus::Running, 1)));
        assert_eq!(q.pinned(), (None, None));
        let q = Query::parse(r#"missing = 1 or amount != 5"#).unwrap();
        assert!(q.matches(&run(RunStatus::Running, 1)), "a missing attribute fails its condition only");
        assert!(
            !Query::parse("amount = \"1200\"").unwrap().matches(&run(RunStatus::Running, 1200)),
            "types must agree"
        );
    }

    #[test]
    fn bad_queries_say_where_and_what() {
        for (text, says) in [
            ("workflow = ", "expected a value"),
            ("workflow \"order\"", "expected an operator"),
            ("status = \"sleeping\"", "unknown status"),
            ("created > \"yesterday\"", "RFC 3339"),
            ("amount > 5 and", "expected a condition"),
            ("(amount > 5", "expected `)`"),
            ("amount > 5 5", "expected `and`"),
            ("name = \"open", "not closed"),
        ] {
            let e = Query::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(33), ")".repeat(33));
        assert!(Query::parse(&deep).unwrap_err().to_string().contains("nest deeper"));
        assert!(Query::parse(&format!("{}a = 1{}", "(".repeat(32), ")".repeat(32))).is_ok());
        let long = format!("a = \"{}\"", "x".repeat(5000));
        assert!(Query::parse(&long).unwrap_err().to_string().contains("over 4096 bytes"));
    }

    #[test]
    fn attributes_are_typed_and_null_removes_one() {
        let mut attrs = std::collections::BTreeMap::new();
        super::super::upsert(
            &mut attrs,
            r#"{"amount": 1200, "customer": "acme", "vip": true, "due": {"time": "2026-12-07T03:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(attrs["amount"], SearchValue::Int(1200));
        assert_eq!(attrs["due"], SearchValue::Time(1_796_612_400_000));
        super::super::upsert(&mut attrs, r#"{"vip": null}"#).unwrap();
        assert!(!attrs.contains_key("vip"));
        for (bad, says) in [
            ("[1]", "JSON object"),
            (r#"{"amount": 1.5}"#, "integers"),
            (r#"{"status": "x"}"#, "field of every run"),
            (r#"{"bad name": 1}"#, "invalid search attribute name"),
            (r#"{"due": {"time": "soon"}}"#, "RFC 3339"),
        ] {
            let e = super::super::upsert(&mut attrs, bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
