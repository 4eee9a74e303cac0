//! Tokenizer and recursive-descent parser of filter expressions. Recursion is bounded by
//! [`MAX_DEPTH`], so a hostile expression cannot exhaust the stack; every error names the byte
//! position where the expression stopped making sense.

use super::{Literal, Node, Op, Path, MAX_DEPTH, MAX_EXPRESSION_BYTES, MAX_LIST, MAX_TERMS};
use crate::filter::number::Num;

/// Why an expression does not compile, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {message}")]
pub struct FilterSyntaxError {
    /// Byte offset in the expression.
    pub position: usize,
    /// What is wrong there.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Path(Vec<String>),
    In,
    True,
    False,
    Null,
    Str(String),
    Num(Num),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
    OpenList,
    CloseList,
    Comma,
    End,
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// The current token and where it started.
    token: Token,
    at: usize,
    terms: usize,
}

fn error(position: usize, message: impl Into<String>) -> FilterSyntaxError {
    FilterSyntaxError { position, message: message.into() }
}

/// Compiles an expression into its tree.
pub(super) fn parse(text: &str) -> Result<Node, FilterSyntaxError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(error(MAX_EXPRESSION_BYTES, format!("longer than {MAX_EXPRESSION_BYTES} bytes")));
    }
    let mut p = Parser { text, pos: 0, token: Token::End, at: 0, terms: 0 };
    p.advance()?;
    if p.token == Token::End {
        return Err(error(0, "empty expression"));
    }
    let root = p.or(0)?;
    if p.token != Token::End {
        return Err(error(p.at, "expected `&&`, `||` or the end of the expression"));
    }
    Ok(root)
}

impl Parser<'_> {
    fn advance(&mut self) -> Result<(), FilterSyntaxError> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        self.at = self.pos;
        let Some(&c) = bytes.get(self.pos) else {
            self.token = Token::End;
            return Ok(());
        };
        let two = bytes.get(self.pos..self.pos + 2).unwrap_or(&[]);
        let (token, len) = match (c, two) {
            (_, b"==") => (Token::Op(Op::Eq), 2),
            (_, b"!=") => (Token::Op(Op::Ne), 2),
            (_, b"<=") => (Token::Op(Op::Le), 2),
            (_, b">=") => (Token::Op(Op::Ge), 2),
            (_, b"&&") => (Token::And, 2),
            (_, b"||") => (Token::Or, 2),
            (b'<', _) => (Token::Op(Op::Lt), 1),
            (b'>', _) => (Token::Op(Op::Gt), 1),
            (b'!', _) => (Token::Not, 1),
            (b'(', _) => (Token::Open, 1),
            (b')', _) => (Token::Close, 1),
            (b'[', _) => (Token::OpenList, 1),
            (b']', _) => (Token::CloseList, 1),
            (b',', _) => (Token::Comma, 1),
            (b'"', _) => return self.string(),
            (b'-' | b'0'..=b'9', _) => return self.number(),
            (c, _) if c.is_ascii_alphabetic() || c == b'_' => return self.word(),
            _ => {
                let ch = self.text[self.pos..].chars().next().unwrap_or('?');
                return Err(error(self.pos, format!("unexpected `{ch}`")));
            }
        };
        self.pos += len;
        self.token = token;
        Ok(())
    }

    fn string(&mut self) -> Result<(), FilterSyntaxError> {
        let bytes = self.text.as_bytes();
        let mut end = self.pos + 1;
        loop {
            match bytes.get(end) {
                None => return Err(error(self.pos, "unterminated string")),
                Some(b'\\') => end += 2,
                Some(b'"') => break,
                Some(_) => end += 1,
            }
        }
        let literal = &self.text[self.pos..=end];
        let value: String = serde_json::from_str(literal).map_err(|_| error(self.pos, "invalid string escape"))?;
        self.pos = end + 1;
        self.token = Token::Str(value);
        Ok(())
    }

    fn number(&mut self) -> Result<(), FilterSyntaxError> {
        let bytes = self.text.as_bytes();
        let mut end = self.pos + 1;
        while end < bytes.len() && matches!(bytes[end], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
            end += 1;
        }
        let text = &self.text[self.pos..end];
        let n: serde_json::Number =
            serde_json::from_str(text).map_err(|_| error(self.pos, format!("`{text}` is not a number")))?;
        self.pos = end;
        self.token = Token::Num(Num::of(&n));
        Ok(())
    }

    fn word(&mut self) -> Result<(), FilterSyntaxError> {
        let bytes = self.text.as_bytes();
        let mut segments = Vec::new();
        loop {
            let start = self.pos;
            match bytes.get(self.pos) {
                Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
                _ => return Err(error(self.pos, "expected a field name after `.`")),
            }
            while self.pos < bytes.len()
                && (bytes[self.pos].is_ascii_alphanumeric() || b"_-".contains(&bytes[self.pos]))
            {
                self.pos += 1;
            }
            segments.push(self.text[start..self.pos].to_owned());
            if bytes.get(self.pos) != Some(&b'.') {
                break;
            }
            self.pos += 1;
        }
        self.token = match (segments.len(), segments[0].as_str()) {
            (1, "in") => Token::In,
            (1, "true") => Token::True,
            (1, "false") => Token::False,
            (1, "null") => Token::Null,
            _ => Token::Path(segments),
        };
        Ok(())
    }

    fn or(&mut self, depth: usize) -> Result<Node, FilterSyntaxError> {
        let mut terms = vec![self.and(depth)?];
        while self.token == Token::Or {
            self.advance()?;
            terms.push(self.and(depth)?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Node::Or(terms) })
    }

    fn and(&mut self, depth: usize) -> Result<Node, FilterSyntaxError> {
        let mut terms = vec![self.unary(depth)?];
        while self.token == Token::And {
            self.advance()?;
            terms.push(self.unary(depth)?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Node::And(terms) })
    }

    fn deeper(&self, depth: usize) -> Result<usize, FilterSyntaxError> {
        if depth >= MAX_DEPTH {
            return Err(error(self.at, format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(depth + 1)
    }

    fn unary(&mut self, depth: usize) -> Result<Node, FilterSyntaxError> {
        if self.token == Token::Not {
            let depth = self.deeper(depth)?;
            self.advance()?;
            return Ok(Node::Not(Box::new(self.unary(depth)?)));
        }
        self.primary(depth)
    }

    fn count_term(&mut self) -> Result<(), FilterSyntaxError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(error(self.at, format!("more than {MAX_TERMS} comparisons")));
        }
        Ok(())
    }

    fn primary(&mut self, depth: usize) -> Result<Node, FilterSyntaxError> {
        match std::mem::replace(&mut self.token, Token::End) {
            Token::Open => {
                let depth = self.deeper(depth)?;
                self.advance()?;
                let inner = self.or(depth)?;
                if self.token != Token::Close {
                    return Err(error(self.at, "expected `)`"));
                }
                self.advance()?;
                Ok(inner)
            }
            constant @ (Token::True | Token::False) => {
                let value = constant == Token::True;
                self.count_term()?;
                self.advance()?;
                Ok(Node::Const(value))
            }
            Token::Path(segments) => {
                self.count_term()?;
                self.advance()?;
                let path = Path(segments);
                match std::mem::replace(&mut self.token, Token::End) {
                    Token::Op(op) => {
                        self.advance()?;
                        let value = self.literal()?;
                        Ok(Node::Compare { path, op, value })
                    }
                    Token::In => {
                        self.advance()?;
                        Ok(Node::In { path, values: self.list()? })
                    }
                    other => {
                        self.token = other;
                        Ok(Node::Truthy(path))
                    }
                }
            }
            Token::End => Err(error(self.at, "the expression ends too early")),
            _ => Err(error(self.at, "expected a field name, `(`, `!`, `true` or `false`")),
        }
    }

    fn literal(&mut self) -> Result<Literal, FilterSyntaxError> {
        let literal = match std::mem::replace(&mut self.token, Token::End) {
            Token::Str(s) => Literal::Str(s),
            Token::Num(n) => Literal::Num(n),
            Token::True => Literal::Bool(true),
            Token::False => Literal::Bool(false),
            Token::Null => Literal::Null,
            _ => return Err(error(self.at, "expected a string, number, `true`, `false` or `null`")),
        };
        self.advance()?;
        Ok(literal)
    }

    fn list(&mut self) -> Result<Vec<Literal>, FilterSyntaxError> {
        if self.token != Token::OpenList {
            return Err(error(self.at, "expected `[` after `in`"));
        }
        self.advance()?;
        let mut values = Vec::new();
        loop {
            values.push(self.literal()?);
            if values.len() > MAX_LIST {
                return Err(error(self.at, format!("more than {MAX_LIST} values in a list")));
            }
            match self.token {
                Token::Comma => self.advance()?,
                Token::CloseList => {
                    self.advance()?;
                    return Ok(values);
                }
                _ => return Err(error(self.at, "expected `,` or `]`")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Expression;
    use super::*;

    fn position(text: &str) -> usize {
        match Expression::parse(text) {
            Err(e) => e.position,
            Ok(e) => panic!("`{text}` compiled to {e:?}"),
        }
    }

    #[test]
    fn errors_point_at_the_offending_byte() {
        assert_eq!(position(""), 0);
        assert_eq!(position("a =="), 4);
        assert_eq!(position("a == 1 &&"), 9);
        assert_eq!(position("a == 1 b"), 7);
        assert_eq!(position("(a == 1"), 7);
        assert_eq!(position("a in 1"), 5);
        assert_eq!(position("a in [1,"), 8);
        assert_eq!(position("a == \"x"), 5);
        assert_eq!(position("a == 1 # b"), 7);
        assert_eq!(position("a. == 1"), 2);
        assert_eq!(position("a == 1.2.3"), 5);
        assert_eq!(position("== 1"), 0);
        assert_eq!(position("a == b"), 5);
    }

    #[test]
    fn hostile_expressions_are_refused_within_their_bounds() {
        let deep = format!("{}a == 1{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(position(&deep) <= MAX_DEPTH);
        let nots = format!("{}a", "!".repeat(10_000));
        assert!(Expression::parse(&nots).is_err());
        let many = vec!["a == 1"; MAX_TERMS + 1].join(" || ");
        assert!(many.len() < MAX_EXPRESSION_BYTES);
        assert!(Expression::parse(&many).is_err());
        let list = format!("a in [{}]", vec!["1"; MAX_LIST + 1].join(","));
        assert!(Expression::parse(&list).is_err());
        assert!(Expression::parse(&"a".repeat(MAX_EXPRESSION_BYTES + 1)).is_err());
        // Right at the bounds is fine.
        let deepest = format!("{}a == 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Expression::parse(&deepest).is_ok());
        assert!(Expression::parse(&format!("a in [{}]", vec!["1"; MAX_LIST].join(","))).is_ok());
    }

    #[test]
    fn non_ascii_input_is_an_error_not_a_panic() {
        for text in ["é", "a == é", "a == \"é\" && ü", "a\u{0}", "\"\\"] {
            let _ = Expression::parse(text);
        }
        assert!(Expression::parse("name == \"zoë\"").is_ok());
    }
}
