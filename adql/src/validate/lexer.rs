//! ADQL tokenizer: turns query text into tokens carrying 1-based line and
//! column positions (columns count characters, not bytes, so positions stay
//! right for non-ASCII input). It owns the lexical rules: regular and
//! delimited identifiers, string literals with `''` escapes (adjacent literals
//! separated only by whitespace or comments are joined, as in SQL), decimal,
//! exponent and hexadecimal numbers, operators and `--` comments.

use super::AdqlError;

/// Token categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tk {
    /// Regular identifier or keyword (`[A-Za-z][A-Za-z0-9_]*`).
    Word,
    /// `"delimited identifier"`; text holds the unescaped body.
    Delimited,
    /// `'string literal'`; text holds the unescaped content.
    Str,
    /// Unsigned integer, e.g. `42`.
    Int,
    /// Decimal with a point, e.g. `3.14`, `1.`, `.5`.
    Decimal,
    /// Number with an exponent, e.g. `2.18E-6`.
    Approx,
    /// Hexadecimal integer, e.g. `0xFF` (ADQL 2.1).
    Hex,
    LParen,
    RParen,
    Comma,
    Dot,
    Star,
    Plus,
    Minus,
    Slash,
    /// `||`
    Concat,
    /// `|` (bitwise or)
    Pipe,
    /// `&` (bitwise and)
    Amp,
    /// `^` (bitwise xor)
    Caret,
    /// `~` (bitwise not)
    Tilde,
    Eq,
    /// `<>` or `!=`
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Semicolon,
    /// End of input; always the last token.
    Eof,
}

/// One token with its source position.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: Tk,
    pub text: String,
    pub line: usize,
    pub col: usize,
}

fn error(line: usize, col: usize, message: impl Into<String>) -> AdqlError {
    AdqlError {
        line,
        column: col,
        message: message.into(),
    }
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    col: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.i + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Skips whitespace and `--` comments (which run to the end of the line).
    fn skip_trivia(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.bump();
            } else if c == '-' && self.peek_at(1) == Some('-') {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    /// Reads a quoted run (`'...'` or `"..."`) whose quote char is doubled to
    /// escape it. The opening quote is the current character.
    fn quoted(&mut self, quote: char, what: &str) -> Result<String, AdqlError> {
        let (line, col) = (self.line, self.col);
        self.bump();
        let mut body = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(error(line, col, format!("unterminated {what}")));
                }
                Some(c) if c == quote => {
                    if self.peek() == Some(quote) {
                        self.bump();
                        body.push(quote);
                    } else {
                        return Ok(body);
                    }
                }
                Some(c) => body.push(c),
            }
        }
    }

    fn string_literal(&mut self) -> Result<String, AdqlError> {
        let mut text = self.quoted('\'', "string literal")?;
        // SQL joins literals separated only by whitespace or comments, so
        // `'qua' -- remark \n 'tsch'` is the single literal 'quatsch'.
        loop {
            let saved = (self.i, self.line, self.col);
            self.skip_trivia();
            if self.peek() == Some('\'') {
                text.push_str(&self.quoted('\'', "string literal")?);
            } else {
                (self.i, self.line, self.col) = saved;
                return Ok(text);
            }
        }
    }

    fn take_digits(&mut self, text: &mut String) {
        while let Some(c) = self.peek().filter(char::is_ascii_digit) {
            text.push(c);
            self.bump();
        }
    }

    fn number(&mut self) -> (Tk, String) {
        let mut text = String::new();
        let is_hex_digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_hexdigit());
        if self.peek() == Some('0')
            && matches!(self.peek_at(1), Some('x' | 'X'))
            && is_hex_digit(self.peek_at(2))
        {
            for _ in 0..2 {
                if let Some(c) = self.bump() {
                    text.push(c);
                }
            }
            while let Some(c) = self.peek().filter(char::is_ascii_hexdigit) {
                text.push(c);
                self.bump();
            }
            return (Tk::Hex, text);
        }
        let mut kind = Tk::Int;
        self.take_digits(&mut text);
        if self.peek() == Some('.') {
            kind = Tk::Decimal;
            text.push('.');
            self.bump();
            self.take_digits(&mut text);
        }
        // An exponent needs digits after the E (and optional sign); otherwise
        // the letter starts the next token, as in `2desc` or `89x`.
        if matches!(self.peek(), Some('e' | 'E')) {
            let digit_at = |n: usize| self.peek_at(n).is_some_and(|c| c.is_ascii_digit());
            let sign = matches!(self.peek_at(1), Some('+' | '-'));
            if digit_at(1) || (sign && digit_at(2)) {
                kind = Tk::Approx;
                let take = if sign { 2 } else { 1 };
                for _ in 0..take {
                    if let Some(c) = self.bump() {
                        text.push(c);
                    }
                }
                self.take_digits(&mut text);
            }
        }
        (kind, text)
    }
}

/// The operator or punctuation starting with `c` (followed by `next`).
fn operator(c: char, next: Option<char>) -> Option<(Tk, &'static str)> {
    Some(match (c, next) {
        ('|', Some('|')) => (Tk::Concat, "||"),
        ('<', Some('=')) => (Tk::Le, "<="),
        ('<', Some('>')) => (Tk::Ne, "<>"),
        ('>', Some('=')) => (Tk::Ge, ">="),
        ('!', Some('=')) => (Tk::Ne, "!="),
        ('(', _) => (Tk::LParen, "("),
        (')', _) => (Tk::RParen, ")"),
        (',', _) => (Tk::Comma, ","),
        ('.', _) => (Tk::Dot, "."),
        ('*', _) => (Tk::Star, "*"),
        ('+', _) => (Tk::Plus, "+"),
        ('-', _) => (Tk::Minus, "-"),
        ('/', _) => (Tk::Slash, "/"),
        ('|', _) => (Tk::Pipe, "|"),
        ('&', _) => (Tk::Amp, "&"),
        ('^', _) => (Tk::Caret, "^"),
        ('~', _) => (Tk::Tilde, "~"),
        ('=', _) => (Tk::Eq, "="),
        ('<', _) => (Tk::Lt, "<"),
        ('>', _) => (Tk::Gt, ">"),
        (';', _) => (Tk::Semicolon, ";"),
        _ => return None,
    })
}

/// The error for a character that cannot start any token.
fn bad_character(c: char, line: usize, col: usize) -> AdqlError {
    let message = if c == '_' {
        "identifiers must start with a letter; write names such as _x as delimited \
         identifiers (\"_x\")"
            .to_string()
    } else if c.is_alphabetic() {
        format!(
            "unexpected character '{c}': regular identifiers use plain Latin letters; \
             quote other names (\"...\")"
        )
    } else {
        format!("unexpected character '{}'", c.escape_debug())
    };
    error(line, col, message)
}

/// Splits `src` into tokens, ending with an [`Tk::Eof`] token.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, AdqlError> {
    let mut lx = Lexer {
        chars: src.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
    };
    let mut out = Vec::new();
    // The end-of-input token sits right after the last real token, so that
    // "found end of query" points at the query rather than at trailing
    // blank lines or comments.
    let mut last_end = (1, 1);
    loop {
        lx.skip_trivia();
        let (line, col) = (lx.line, lx.col);
        let Some(c) = lx.peek() else {
            out.push(Token {
                kind: Tk::Eof,
                text: String::new(),
                line: last_end.0,
                col: last_end.1,
            });
            return Ok(out);
        };
        let next = lx.peek_at(1);
        let (kind, text) = if c.is_ascii_alphabetic() {
            let mut text = String::new();
            while let Some(c) = lx.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
                text.push(c);
                lx.bump();
            }
            (Tk::Word, text)
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            lx.number()
        } else if c == '\'' {
            (Tk::Str, lx.string_literal()?)
        } else if c == '"' {
            let body = lx.quoted('"', "delimited identifier")?;
            if body.is_empty() {
                return Err(error(line, col, "empty delimited identifier \"\""));
            }
            (Tk::Delimited, body)
        } else {
            let (kind, symbol) = operator(c, next).ok_or_else(|| bad_character(c, line, col))?;
            for _ in 0..symbol.chars().count() {
                lx.bump();
            }
            (kind, symbol.to_string())
        };
        out.push(Token {
            kind,
            text,
            line,
            col,
        });
        last_end = (lx.line, lx.col);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Tk, String)> {
        tokenize(src)
            .expect("lexes")
            .into_iter()
            .map(|t| (t.kind, t.text))
            .collect()
    }

    #[test]
    fn numbers() {
        let toks = kinds("42 3.14 1. .5 10e-5 2.18E+6 0xFF 89x 2desc 1e");
        let expected = [
            (Tk::Int, "42"),
            (Tk::Decimal, "3.14"),
            (Tk::Decimal, "1."),
            (Tk::Decimal, ".5"),
            (Tk::Approx, "10e-5"),
            (Tk::Approx, "2.18E+6"),
            (Tk::Hex, "0xFF"),
            (Tk::Int, "89"),
            (Tk::Word, "x"),
            (Tk::Int, "2"),
            (Tk::Word, "desc"),
            (Tk::Int, "1"),
            (Tk::Word, "e"),
            (Tk::Eof, ""),
        ];
        let expected: Vec<(Tk, String)> =
            expected.iter().map(|(k, s)| (*k, s.to_string())).collect();
        assert_eq!(toks, expected);
    }

    #[test]
    fn strings_and_identifiers() {
        let toks = kinds("'it''s' \"a\"\"b\" 'qua' -- note\n 'tsch'");
        assert_eq!(toks[0], (Tk::Str, "it's".to_string()));
        assert_eq!(toks[1], (Tk::Delimited, "a\"b".to_string()));
        assert_eq!(toks[2], (Tk::Str, "quatsch".to_string()));
        assert_eq!(toks[3].0, Tk::Eof);
    }

    #[test]
    fn positions_count_characters() {
        let toks = tokenize("SELECT\n  'é', x").expect("lexes");
        assert_eq!((toks[1].line, toks[1].col), (2, 3));
        assert_eq!((toks[3].line, toks[3].col), (2, 8));
    }

    #[test]
    fn errors() {
        let e = tokenize("SELECT 'abc").expect_err("unterminated");
        assert_eq!((e.line, e.column), (1, 8));
        let e = tokenize("SELECT a\n FROM %s").expect_err("bad char");
        assert_eq!((e.line, e.column), (2, 7));
        assert!(tokenize("SELECT \"\" FROM t").is_err());
        assert!(tokenize("SELECT ä FROM t").is_err());
    }
}
