//! Reading back the `descr` and `shape` of any `.npy` header (ours, or a file numpy wrote
//! inside an NPZ), for `arrfs ls`.

use super::NPY_MAGIC as MAGIC;

/// How many bytes from the start of the file hold the whole header, from its first 12 bytes;
/// None if they are not a `.npy` header.
pub fn header_len(prefix: &[u8]) -> Option<usize> {
    if prefix.len() < 12 || !prefix.starts_with(MAGIC) {
        return None;
    }
    let le16 = |i: usize| usize::from(u16::from_le_bytes([prefix[i], prefix[i + 1]]));
    match prefix[6] {
        1 => Some(10 + le16(8)),
        2 | 3 => Some(12 + (le16(10) << 16 | le16(8))),
        _ => None,
    }
}

/// `descr` (quotes of a plain type string removed) and `shape` from a whole header.
pub fn descr_and_shape(header: &[u8]) -> Option<(String, Vec<u64>)> {
    let start = if header.get(6) == Some(&1) { 10 } else { 12 };
    let text = std::str::from_utf8(header.get(start..)?).ok()?;
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut descr = None;
    let mut shape = None;
    for item in split_top_level(body, ',') {
        let Some((key, value)) = item.split_once(':') else {
            continue;
        };
        match key.trim().trim_matches(['\'', '"']) {
            "descr" => descr = Some(unquote(value.trim())),
            "shape" => shape = parse_shape(value.trim()),
            _ => {}
        }
    }
    Some((descr?, shape?))
}

/// `fortran_order` of a whole header (False when absent or unreadable).
pub fn fortran_order(header: &[u8]) -> bool {
    let start = if header.get(6) == Some(&1) { 10 } else { 12 };
    let Some(text) = header
        .get(start..)
        .and_then(|t| std::str::from_utf8(t).ok())
    else {
        return false;
    };
    let body = text.trim().trim_start_matches('{').trim_end_matches('}');
    split_top_level(body, ',').into_iter().any(|item| {
        item.split_once(':').is_some_and(|(key, value)| {
            key.trim().trim_matches(['\'', '"']) == "fortran_order" && value.trim() == "True"
        })
    })
}

/// The top-level field names of a structured descr (`[('a', '<i4'), ('b', [...])]`).
pub fn field_names(descr: &str) -> Vec<String> {
    let Some(inner) = descr.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return Vec::new();
    };
    split_top_level(inner, ',')
        .into_iter()
        .filter_map(|field| {
            let field = field.trim().strip_prefix('(')?;
            split_top_level(field, ',')
                .first()
                .map(|n| unquote(n.trim()))
        })
        .collect()
}

fn unquote(value: &str) -> String {
    let quoted = value.len() >= 2 && value.starts_with(['\'', '"']);
    if quoted {
        value[1..value.len() - 1].to_string()
    } else {
        value.to_string()
    }
}

/// `(3, 4)`, `(5,)`, `()`.
fn parse_shape(value: &str) -> Option<Vec<u64>> {
    let inner = value.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse().ok())
        .collect()
}

/// Parts of `text` between `sep`s that are outside brackets and quotes.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut escaped, mut start) = (0i32, None, false, 0);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::{ByteOrder, Dtype, NpyHeader};

    #[test]
    fn reads_back_what_we_write() {
        let header = NpyHeader::new(Dtype::plain('f', ByteOrder::Big, 8), vec![3, 4]).encode();
        assert_eq!(header_len(&header[..12]), Some(header.len()));
        let (descr, shape) = descr_and_shape(&header).unwrap();
        assert_eq!((descr.as_str(), shape), (">f8", vec![3, 4]));
        let mut fortran = NpyHeader::new(Dtype::plain('i', ByteOrder::Little, 2), vec![2, 2]);
        fortran.fortran_order = true;
        assert!(fortran_order(&fortran.encode()));
    }

    #[test]
    fn structured_descr_stays_a_list() {
        let dict = "{'descr': [('a', '<i4'), ('b, c', '<f8', (3,))], 'fortran_order': False, 'shape': (5,), }";
        let mut header = b"\x93NUMPY\x01\x00".to_vec();
        header.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        header.extend_from_slice(dict.as_bytes());
        let (descr, shape) = descr_and_shape(&header).unwrap();
        assert_eq!(descr, "[('a', '<i4'), ('b, c', '<f8', (3,))]");
        assert_eq!(shape, vec![5]);
        assert!(!fortran_order(&header));
        assert_eq!(field_names(&descr), ["a", "b, c"]);
        assert_eq!(header_len(b"not a npy header"), None);
    }
}
