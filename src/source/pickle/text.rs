//! Decoders for array payloads stored as text: Python 3 writes `bytes` at protocol <= 2 as
//! `_codecs.encode(str, 'latin1')`, so each payload byte is one character, stored as UTF-8
//! (`BINUNICODE`) or raw-unicode-escape (protocol 0 `UNICODE`). They decode in steps, so a
//! read can start at a checkpoint instead of the beginning.

use super::value::Encoding;

/// Why a text payload does not decode to bytes (one latin-1 character per byte).
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("character beyond latin-1 (byte {0:#04x}) in a bytes payload")]
    BeyondLatin1Byte(u8),
    #[error("invalid UTF-8 in a bytes payload")]
    InvalidUtf8,
    #[error("bad \\u escape in a bytes payload")]
    BadEscape,
    #[error("character beyond latin-1 in a bytes payload")]
    BeyondLatin1,
}

/// Decodes the complete characters at the start of `input` into `out` (each character one
/// byte); returns how many input bytes were used. A character cut at the end of `input` is
/// left for the next step.
pub fn decode_step(
    encoding: Encoding,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, TextError> {
    match encoding {
        Encoding::Utf8 => utf8_latin1_step(input, out),
        Encoding::RawUnicodeEscape => escape_latin1_step(input, out),
        Encoding::Raw | Encoding::Decoded => {
            out.extend_from_slice(input);
            Ok(input.len())
        }
    }
}

fn utf8_latin1_step(input: &[u8], out: &mut Vec<u8>) -> Result<usize, TextError> {
    let mut i = 0;
    while let Some(&first) = input.get(i) {
        if first < 0x80 {
            out.push(first);
            i += 1;
            continue;
        }
        if !(0xc2..=0xc3).contains(&first) {
            return Err(TextError::BeyondLatin1Byte(first));
        }
        let Some(&second) = input.get(i + 1) else {
            break;
        };
        if second & 0xc0 != 0x80 {
            return Err(TextError::InvalidUtf8);
        }
        out.push(((first & 0x1f) << 6) | (second & 0x3f));
        i += 2;
    }
    Ok(i)
}

fn escape_latin1_step(input: &[u8], out: &mut Vec<u8>) -> Result<usize, TextError> {
    let mut i = 0;
    while let Some(&byte) = input.get(i) {
        let digits = match (byte, input.get(i + 1)) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            (b'\\', None) => break,
            _ => {
                out.push(byte);
                i += 1;
                continue;
            }
        };
        let Some(hex) = input.get(i + 2..i + 2 + digits) else {
            break;
        };
        let code = parse_hex(hex).ok_or(TextError::BadEscape)?;
        let byte = u8::try_from(code).map_err(|_| TextError::BeyondLatin1)?;
        out.push(byte);
        i += 2 + digits;
    }
    Ok(i)
}

fn parse_hex(hex: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// The text of a raw-unicode-escape string (protocol 0 `UNICODE`), for names.
pub fn raw_unicode_escape_text(raw: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&byte) = raw.get(i) {
        let digits = match (byte, raw.get(i + 1)) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            _ => {
                out.push(char::from(byte));
                i += 1;
                continue;
            }
        };
        let code = parse_hex(raw.get(i + 2..i + 2 + digits)?)?;
        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
        i += 2 + digits;
    }
    Some(out)
}

/// The bytes of a protocol 0 `STRING` argument: a Python 2 `repr()` of a str, quotes
/// included (`'a\x00b'`).
pub fn string_literal(raw: &[u8]) -> Option<Vec<u8>> {
    let (&quote, rest) = raw.split_first()?;
    let body = rest.strip_suffix(&[quote])?;
    if quote != b'\'' && quote != b'"' {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while let Some(&byte) = body.get(i) {
        if byte != b'\\' {
            out.push(byte);
            i += 1;
            continue;
        }
        let (value, used) = escape_value(body.get(i + 1..)?)?;
        out.push(value);
        i += 1 + used;
    }
    Some(out)
}

/// One escape after a backslash: its byte and how many bytes it used.
fn escape_value(rest: &[u8]) -> Option<(u8, usize)> {
    let simple = match rest.first()? {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'0'..=b'7' => return octal_escape(rest),
        b'x' => {
            let code = parse_hex(rest.get(1..3)?)?;
            return Some((u8::try_from(code).ok()?, 3));
        }
        other => *other,
    };
    Some((simple, 1))
}

fn octal_escape(rest: &[u8]) -> Option<(u8, usize)> {
    let len = rest
        .iter()
        .take(3)
        .take_while(|&&b| (b'0'..=b'7').contains(&b))
        .count();
    let code = u32::from_str_radix(std::str::from_utf8(rest.get(..len)?).ok()?, 8).ok()?;
    Some((u8::try_from(code).ok()?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_steps_stop_before_a_cut_character() {
        let mut out = Vec::new();
        let used = decode_step(Encoding::Utf8, b"a\xc3\xa9\xc3", &mut out).unwrap();
        assert_eq!((used, out.as_slice()), (3, &b"a\xe9"[..]));
        assert!(decode_step(Encoding::Utf8, b"\xe2\x82\xac", &mut out).is_err());
    }

    #[test]
    fn raw_unicode_escapes_decode_to_latin1() {
        let mut out = Vec::new();
        let used = decode_step(
            Encoding::RawUnicodeEscape,
            b"x\\u005c\\u000a\xff\\u00",
            &mut out,
        );
        assert_eq!(used.unwrap(), 14);
        assert_eq!(out, b"x\\\n\xff");
        assert_eq!(raw_unicode_escape_text(b"a\\u20acb").unwrap(), "a\u{20ac}b");
    }

    #[test]
    fn python2_string_literals() {
        assert_eq!(string_literal(b"'a\\x00\\n\\'b'").unwrap(), b"a\x00\n'b");
        assert_eq!(string_literal(b"\"\\101\"").unwrap(), b"A");
        assert!(string_literal(b"'unterminated").is_none());
    }
}
