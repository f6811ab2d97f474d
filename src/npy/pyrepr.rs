//! Python's `repr()` of the few literal kinds a `.npy` header holds.

/// `repr(s)` for a Python 3 `str`: single quotes unless the text has a `'` and no `"`.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}

/// An approximation of `str.isprintable` that is exact for ASCII and Latin-1.
fn is_printable(c: char) -> bool {
    let u = c as u32;
    !(u < 0x20 || (0x7f..=0xa0).contains(&u) || u == 0xad || c.is_control())
}

/// `repr(t)` for a tuple of Python ints: `()`, `(3,)`, `(2, 3)`.
pub fn tuple_repr(items: &[u64]) -> String {
    match items {
        [] => "()".to_string(),
        [one] => format!("({one},)"),
        _ => {
            let inner: Vec<String> = items.iter().map(u64::to_string).collect();
            format!("({})", inner.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_quote_like_python() {
        assert_eq!(str_repr("abc"), "'abc'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(str_repr("tab\there\\"), "'tab\\there\\\\'");
        assert_eq!(str_repr("\u{1}é"), "'\\x01é'");
    }

    #[test]
    fn tuples_like_python() {
        assert_eq!(tuple_repr(&[]), "()");
        assert_eq!(tuple_repr(&[3]), "(3,)");
        assert_eq!(tuple_repr(&[2, 3]), "(2, 3)");
    }
}
