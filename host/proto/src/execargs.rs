//! Execute arguments (Core 1.1.1 §6.3.5, reference §2 "Execute arguments").
//!
//! ```text
//! arglist = arg *( "," arg )
//! arg     = DIGIT / DIGIT "=" "'" *CHAR "'"
//! CHAR    = "!" / %x23-26 / %x28-5B / %x5D-7E
//! ```
//!
//! No whitespace anywhere (OMA answer in OMA#487), each digit at most once
//! (OMA#536), an empty payload means no arguments. The bare digit Anjay sends
//! for Uninstall (`1`) is the first alternative of `arg`, so it needs no
//! special case.

/// Why an Execute argument payload was refused; the engine answers 4.00.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecArgsError {
    /// The payload is not UTF-8 text (it must be CF 0 or absent).
    #[error("execute arguments are not text")]
    NotText,
    /// An argument does not start with a single digit.
    #[error("expected an argument digit at byte {0}")]
    ExpectedDigit(usize),
    /// Something other than `,` or `='` followed an argument digit.
    #[error("unexpected byte at {0}")]
    Unexpected(usize),
    /// A quoted value has no closing `'`.
    #[error("unterminated quoted value starting at byte {0}")]
    Unterminated(usize),
    /// A value holds a character outside the CHAR rule (space, `"`, `\`, control, non-ASCII).
    #[error("character not allowed in a value at byte {0}")]
    BadChar(usize),
    /// The same argument digit appears twice (OMA#536).
    #[error("argument {0} given twice")]
    Duplicate(u8),
    /// A `,` with nothing after it.
    #[error("empty argument after ',' at byte {0}")]
    Empty(usize),
}

/// One parsed argument: its digit and its value, if it had `='...'`.
pub type ExecArg = (u8, Option<String>);

/// CHAR of §6.3.5: printable ASCII without space, `"`, `'` and `\`.
fn is_arg_char(b: u8) -> bool {
    b == b'!'
        || (0x23..=0x26).contains(&b)
        || (0x28..=0x5B).contains(&b)
        || (0x5D..=0x7E).contains(&b)
}

/// Parses an Execute payload into its arguments, in the order given.
pub fn parse(payload: &[u8]) -> Result<Vec<ExecArg>, ExecArgsError> {
    let text = std::str::from_utf8(payload).map_err(|_| ExecArgsError::NotText)?;
    let bytes = text.as_bytes();
    let mut args: Vec<ExecArg> = Vec::new();
    if bytes.is_empty() {
        return Ok(args);
    }
    let mut pos = 0usize;
    loop {
        let digit = match bytes.get(pos) {
            Some(b) if b.is_ascii_digit() => b - b'0',
            Some(_) => return Err(ExecArgsError::ExpectedDigit(pos)),
            None => return Err(ExecArgsError::Empty(pos)),
        };
        if args.iter().any(|(d, _)| *d == digit) {
            return Err(ExecArgsError::Duplicate(digit));
        }
        pos += 1;
        let value = match bytes.get(pos) {
            Some(b'=') => {
                if bytes.get(pos + 1) != Some(&b'\'') {
                    return Err(ExecArgsError::Unexpected(pos + 1));
                }
                let start = pos + 2;
                let mut end = start;
                loop {
                    match bytes.get(end) {
                        Some(b'\'') => break,
                        Some(b) if is_arg_char(*b) => end += 1,
                        Some(_) => return Err(ExecArgsError::BadChar(end)),
                        None => return Err(ExecArgsError::Unterminated(pos + 1)),
                    }
                }
                // Only ASCII passed `is_arg_char`, so the slice is valid UTF-8.
                let value = text
                    .get(start..end)
                    .ok_or(ExecArgsError::NotText)?
                    .to_owned();
                pos = end + 1;
                Some(value)
            }
            _ => None,
        };
        args.push((digit, value));
        match bytes.get(pos) {
            None => return Ok(args),
            Some(b',') => pos += 1,
            Some(_) => return Err(ExecArgsError::Unexpected(pos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_forms_from_the_reference() {
        assert_eq!(parse(b"").unwrap(), vec![]);
        assert_eq!(parse(b"5").unwrap(), vec![(5, None)]);
        assert_eq!(parse(b"2='10.3'").unwrap(), vec![(2, Some("10.3".into()))]);
        assert_eq!(
            parse(b"7,0='https://www.omaspecworks.org'").unwrap(),
            vec![(7, None), (0, Some("https://www.omaspecworks.org".into()))]
        );
        assert_eq!(
            parse(b"0,1,2,3,4").unwrap(),
            (0..=4).map(|d| (d, None)).collect::<Vec<_>>()
        );
        // The wire vector of reference §2: POST /9/0/6 "0='v1',1".
        assert_eq!(
            parse(b"0='v1',1").unwrap(),
            vec![(0, Some("v1".into())), (1, None)]
        );
        // Empty quoted value is `*CHAR`: allowed.
        assert_eq!(parse(b"3=''").unwrap(), vec![(3, Some(String::new()))]);
    }

    #[test]
    fn invalid_forms_are_refused() {
        let cases: &[(&[u8], ExecArgsError)] = &[
            (b" 1", ExecArgsError::ExpectedDigit(0)),
            (b"1 ", ExecArgsError::Unexpected(1)),
            (b"0, 1", ExecArgsError::ExpectedDigit(2)),
            (b"2='a b'", ExecArgsError::BadChar(4)),
            (b"1,1", ExecArgsError::Duplicate(1)),
            (b"1='x',1", ExecArgsError::Duplicate(1)),
            (b"2='10.3", ExecArgsError::Unterminated(2)),
            (b"a", ExecArgsError::ExpectedDigit(0)),
            (b"12", ExecArgsError::Unexpected(1)),
            (b"1,", ExecArgsError::Empty(2)),
            (b",1", ExecArgsError::ExpectedDigit(0)),
            (b"1=x", ExecArgsError::Unexpected(2)),
            (b"1=\"x\"", ExecArgsError::Unexpected(2)),
            (b"1='a\\b'", ExecArgsError::BadChar(4)),
            (b"1='x'2", ExecArgsError::Unexpected(5)),
            (b"\xff", ExecArgsError::NotText),
            (b"1='\xc3\xa9'", ExecArgsError::BadChar(3)),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input).as_ref(),
                Err(want),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
