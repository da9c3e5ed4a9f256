//! The gate expression: rule names combined with `&&`, `||`, `!` and parentheses, e.g.
//! `approvals && (no_secrets || docs_only)`. `!` binds tightest, then `&&`, then `||`.

use std::collections::{BTreeMap, BTreeSet};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    Rule(String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, String> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push((i, Token::Open));
                i += 1;
            }
            b')' => {
                out.push((i, Token::Close));
                i += 1;
            }
            b'!' => {
                out.push((i, Token::Not));
                i += 1;
            }
            b'&' if bytes.get(i + 1) == Some(&b'&') => {
                out.push((i, Token::And));
                i += 2;
            }
            b'|' if bytes.get(i + 1) == Some(&b'|') => {
                out.push((i, Token::Or));
                i += 2;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                out.push((start, Token::Ident(input[start..i].to_owned())));
            }
            _ => {
                return Err(format!(
                    "unexpected character {:?} at offset {i}",
                    c as char
                ));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map(|(o, _)| *o)
            .unwrap_or(self.len)
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        match self.peek().cloned() {
            Some(Token::Not) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(format!("expected `)` at offset {}", self.offset()));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Ident(name)) => {
                self.pos += 1;
                Ok(Expr::Rule(name))
            }
            Some(other) => Err(format!("unexpected {other:?} at offset {}", self.offset())),
            None => Err("unexpected end of expression".into()),
        }
    }
}

impl Expr {
    /// Parses `input`; errors name the offset.
    pub fn parse(input: &str) -> Result<Expr, String> {
        let tokens = tokenize(input)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            len: input.len(),
        };
        let expr = p.or()?;
        if p.pos != p.tokens.len() {
            return Err(format!(
                "unexpected trailing input at offset {}",
                p.offset()
            ));
        }
        Ok(expr)
    }

    /// Every rule name referenced.
    pub fn rule_names(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        match self {
            Expr::Rule(n) => {
                out.insert(n.as_str());
            }
            Expr::Not(e) => e.collect(out),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// Evaluates with rule results; an unknown rule is an error, never "false".
    pub fn eval(&self, results: &BTreeMap<String, bool>) -> Result<bool, String> {
        Ok(match self {
            Expr::Rule(n) => *results
                .get(n)
                .ok_or_else(|| format!("unknown rule {n:?}"))?,
            Expr::Not(e) => !e.eval(results)?,
            Expr::And(a, b) => a.eval(results)? && b.eval(results)?,
            Expr::Or(a, b) => a.eval(results)? || b.eval(results)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn precedence_and_grouping() {
        let e = Expr::parse("approvals && (no_secrets || docs_only)").unwrap();
        assert_eq!(
            e.rule_names().into_iter().collect::<Vec<_>>(),
            vec!["approvals", "docs_only", "no_secrets"]
        );
        assert!(
            e.eval(&results(&[
                ("approvals", true),
                ("no_secrets", false),
                ("docs_only", true)
            ]))
            .unwrap()
        );
        assert!(
            !e.eval(&results(&[
                ("approvals", false),
                ("no_secrets", true),
                ("docs_only", true)
            ]))
            .unwrap()
        );
        let e = Expr::parse("a || b && !c").unwrap();
        assert_eq!(
            e,
            Expr::Or(
                Box::new(Expr::Rule("a".into())),
                Box::new(Expr::And(
                    Box::new(Expr::Rule("b".into())),
                    Box::new(Expr::Not(Box::new(Expr::Rule("c".into()))))
                ))
            )
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(
            Expr::parse("a &&")
                .unwrap_err()
                .contains("end of expression")
        );
        assert!(Expr::parse("(a || b").unwrap_err().contains("expected `)`"));
        assert!(
            Expr::parse("a & b")
                .unwrap_err()
                .contains("unexpected character")
        );
        assert!(Expr::parse("a b").unwrap_err().contains("trailing"));
        assert!(
            Expr::parse("a")
                .unwrap()
                .eval(&results(&[]))
                .unwrap_err()
                .contains("unknown rule")
        );
    }
}
