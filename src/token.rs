//! `NAME NUMBER DID`: the content of a Rubix fungible-token file.
//!
//! Semantics are the old Python script's, made exact: the content is UTF-8, split on
//! whitespace (surrounding whitespace ignored), exactly three fields, the number a base-10
//! integer that fits PostgreSQL's `INTEGER`. Parsing borrows from the input and allocates
//! nothing, because it runs once per token on the hot path.

/// Largest token content we accept. Real token files are ~66 bytes; anything far larger is not
/// a token, and must not be read whole into memory for millions of rows.
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// A parsed token, borrowing from the file content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub name: &'a str,
    pub number: i32,
    pub creator_did: &'a str,
}

/// Why a token's content is not `NAME NUMBER DID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("content is not valid UTF-8 (byte {valid_up_to} is the first bad one)")]
    NotUtf8 { valid_up_to: usize },
    #[error(
        "content contains a NUL byte at {0}, which no token (and no PostgreSQL text) can hold"
    )]
    NulByte(usize),
    #[error("content is empty or only whitespace")]
    Empty,
    #[error("expected 3 whitespace-separated fields (NAME NUMBER DID), found {found}")]
    FieldCount { found: usize },
    #[error("token number {0:?} is not a base-10 integer")]
    NotInteger(String),
    #[error("token number {0} does not fit a 32-bit INTEGER column")]
    OutOfRange(String),
}

impl ParseError {
    /// Stable reason class, stored in the failures table.
    pub fn class(&self) -> &'static str {
        match self {
            ParseError::NotUtf8 { .. } => "not_utf8",
            ParseError::NulByte(_) => "nul_byte",
            ParseError::Empty => "empty",
            ParseError::FieldCount { .. } => "field_count",
            ParseError::NotInteger(_) => "not_integer",
            ParseError::OutOfRange(_) => "out_of_range",
        }
    }
}

/// Longest number text echoed back in an error, so a hostile token cannot flood the logs.
const MAX_ECHO: usize = 40;

fn echo(s: &str) -> String {
    if s.len() <= MAX_ECHO {
        return s.to_string();
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses token file content.
pub fn parse(content: &[u8]) -> Result<Token<'_>, ParseError> {
    let text = std::str::from_utf8(content).map_err(|e| ParseError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    if let Some(at) = content.iter().position(|&b| b == 0) {
        return Err(ParseError::NulByte(at));
    }
    let mut fields = text.split_whitespace();
    let (Some(name), Some(number), Some(did), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        let found = text.split_whitespace().count();
        return Err(if found == 0 {
            ParseError::Empty
        } else {
            ParseError::FieldCount { found }
        });
    };
    Ok(Token {
        name,
        number: parse_number(number)?,
        creator_did: did,
    })
}

fn parse_number(s: &str) -> Result<i32, ParseError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::NotInteger(echo(s)));
    }
    // All ASCII digits with an optional sign: the only failure left is magnitude.
    s.parse::<i32>()
        .map_err(|_| ParseError::OutOfRange(echo(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DID: &str = "bafybmiaf3uk5ynok6csojwjnrov6y7tn34fugupq4mpymxkrrypailk2uu";

    #[test]
    fn parses_the_rubix_shape() {
        let c = format!("TRI 17 {DID}");
        assert_eq!(
            parse(c.as_bytes()).unwrap(),
            Token {
                name: "TRI",
                number: 17,
                creator_did: DID
            }
        );
    }

    #[test]
    fn surrounding_and_inner_whitespace_is_ignored() {
        let c = format!("  TRI\t-3 \n {DID}\r\n");
        let t = parse(c.as_bytes()).unwrap();
        assert_eq!((t.name, t.number), ("TRI", -3));
        assert_eq!(parse(format!("TRI +4 {DID}").as_bytes()).unwrap().number, 4);
    }

    #[test]
    fn every_failure_class() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"TRI\xff 6 did".to_vec(), "not_utf8"),
            (b"".to_vec(), "empty"),
            (b"  \n\t".to_vec(), "empty"),
            (b"TRI\x005 did".to_vec(), "nul_byte"),
            (b"TRI 5".to_vec(), "field_count"),
            (b"TRI 5 did extra".to_vec(), "field_count"),
            (b"TRI five did".to_vec(), "not_integer"),
            (b"TRI 1.5 did".to_vec(), "not_integer"),
            (b"TRI - did".to_vec(), "not_integer"),
            (b"TRI 0x10 did".to_vec(), "not_integer"),
            (b"TRI 2147483648 did".to_vec(), "out_of_range"),
            (b"TRI -2147483649 did".to_vec(), "out_of_range"),
            (
                b"TRI 99999999999999999999999999 did".to_vec(),
                "out_of_range",
            ),
        ];
        for (content, class) in cases {
            let err = parse(&content).unwrap_err();
            assert_eq!(
                err.class(),
                class,
                "{:?}: {err}",
                String::from_utf8_lossy(&content)
            );
        }
        assert_eq!(parse(b"T 2147483647 d").unwrap().number, i32::MAX);
        assert_eq!(parse(b"T -2147483648 d").unwrap().number, i32::MIN);
    }

    #[test]
    fn long_numbers_are_not_echoed_whole() {
        let long = "9".repeat(10_000);
        let err = parse(format!("T {long} d").as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 200);
    }
}
