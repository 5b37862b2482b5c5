//! Protocol buffers' text format, as Triton's `config.pbtxt` files are written: `name: value`,
//! `name { ... }` (or `name: { ... }`), lists `name: [ a, b ]` or `[ { ... }, { ... } ]`, a
//! repeated field written several times, `#` comments, quoted strings with C escapes, bare
//! identifiers for enums and booleans, numbers, optional `,`/`;` separators. The result is an
//! untyped tree; `triton` reads the fields it knows from it.

/// A value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number, an enum name, `true`/`false`: the token as written.
    Scalar(String),
    /// A quoted string, unescaped.
    Text(String),
    Message(Vec<Field>),
    List(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Text(String),
    Punct(char),
}

/// Parses a whole message; errors say where (line) and what.
pub fn parse(text: &str) -> Result<Vec<Field>, String> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, at: 0 };
    let fields = p.fields(None)?;
    Ok(fields)
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None | Some('\n') => return Err(format!("line {line}: unterminated string")),
                        Some(q) if q == c => break,
                        Some('\\') => s.push(match chars.next() {
                            Some('n') => '\n',
                            Some('t') => '\t',
                            Some('r') => '\r',
                            Some(other) => other,
                            None => return Err(format!("line {line}: unterminated string")),
                        }),
                        Some(ch) => s.push(ch),
                    }
                }
                out.push((Token::Text(s), line));
            }
            '{' | '}' | '[' | ']' | ':' | ',' | ';' | '<' | '>' => {
                chars.next();
                out.push((Token::Punct(c), line));
            }
            _ => {
                let mut s = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_alphanumeric() || matches!(ch, '_' | '.' | '-' | '+') {
                        s.push(ch);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if s.is_empty() {
                    return Err(format!("line {line}: unexpected character {c:?}"));
                }
                out.push((Token::Ident(s), line));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.tokens.get(self.at).or(self.tokens.last()).map_or(0, |(_, l)| *l)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).map(|(t, _)| t.clone());
        self.at += 1;
        t
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Fields until `close` (or the end of input when `None`).
    fn fields(&mut self, close: Option<char>) -> Result<Vec<Field>, String> {
        let mut fields = Vec::new();
        loop {
            while self.eat(',') || self.eat(';') {}
            match (self.peek(), close) {
                (None, None) => return Ok(fields),
                (None, Some(c)) => return Err(format!("line {}: missing '{c}'", self.line())),
                (Some(Token::Punct(p)), Some(c)) if *p == c => {
                    self.at += 1;
                    return Ok(fields);
                }
                _ => {}
            }
            let line = self.line();
            let Some(Token::Ident(name)) = self.next() else {
                return Err(format!("line {line}: expected a field name"));
            };
            let colon = self.eat(':');
            let value = match self.peek() {
                Some(Token::Punct('{')) | Some(Token::Punct('<')) => self.message()?,
                Some(Token::Punct('[')) => self.list()?,
                _ if colon => self.scalar()?,
                _ => return Err(format!("line {line}: expected ':' or '{{' after {name}")),
            };
            fields.push(Field { name, value });
        }
    }

    fn message(&mut self) -> Result<Value, String> {
        let close = match self.next() {
            Some(Token::Punct('{')) => '}',
            _ => '>',
        };
        Ok(Value::Message(self.fields(Some(close))?))
    }

    fn list(&mut self) -> Result<Value, String> {
        self.at += 1; // '['
        let mut items = Vec::new();
        loop {
            if self.eat(']') {
                return Ok(Value::List(items));
            }
            let item = match self.peek() {
                Some(Token::Punct('{')) | Some(Token::Punct('<')) => self.message()?,
                None => return Err(format!("line {}: missing ']'", self.line())),
                _ => self.scalar()?,
            };
            items.push(item);
            self.eat(',');
        }
    }

    fn scalar(&mut self) -> Result<Value, String> {
        let line = self.line();
        match self.next() {
            Some(Token::Ident(s)) => Ok(Value::Scalar(s)),
            Some(Token::Text(mut s)) => {
                // Adjacent strings concatenate.
                while let Some(Token::Text(more)) = self.peek().cloned() {
                    s.push_str(&more);
                    self.at += 1;
                }
                Ok(Value::Text(s))
            }
            _ => Err(format!("line {line}: expected a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triton_config_parses_into_its_tree() {
        let text = r#"
name: "densenet"   # a comment
platform: "onnxruntime_onnx"
max_batch_size : 8
input [
  { name: "x" data_type: TYPE_FP32 dims: [ 3, -1 ] },
  { name: 'y', data_type: TYPE_INT64, dims: [1] }
]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
instance_group { count: 2 kind: KIND_CPU }
instance_group < count: 1 >
"#;
        let f = parse(text).unwrap();
        assert_eq!(f[0], Field { name: "name".into(), value: Value::Text("densenet".into()) });
        assert_eq!(f[2].value, Value::Scalar("8".into()));
        let Value::List(inputs) = &f[3].value else { panic!("{f:?}") };
        assert_eq!(inputs.len(), 2);
        let Value::Message(y) = &inputs[1] else { panic!() };
        assert_eq!(y[2].value, Value::List(vec![Value::Scalar("1".into())]));
        assert_eq!(f.iter().filter(|f| f.name == "instance_group").count(), 2);
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        for (text, want) in [
            ("name: \"x", "line 1: unterminated string"),
            ("a {\n b: 1\n", "missing '}'"),
            ("a b", "line 1: expected ':' or '{' after a"),
            ("x: [1, 2", "missing ']'"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
