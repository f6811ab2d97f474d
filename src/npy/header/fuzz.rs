//! Random dtypes and shapes through the header writer: it never panics, the data starts at
//! a multiple of 64, and the dict parses back (with a small parser of Python literals) to
//! the same descr, order and shape.

use proptest::prelude::*;

use super::*;
use crate::npy::{ByteOrder, Field};

/// A Python literal as a `.npy` header holds them.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Int(u64),
    Bool(bool),
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start_matches(' ');
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        let found = self.rest.starts_with(token);
        if found {
            self.rest = &self.rest[token.len()..];
        }
        found
    }

    fn value(&mut self) -> Lit {
        self.skip_spaces();
        match self.rest.chars().next().expect("a value") {
            '\'' | '"' => Lit::Str(self.string()),
            '(' => Lit::Tuple(self.items('(', ')')),
            '[' => Lit::List(self.items('[', ']')),
            '{' => self.dict(),
            'T' if self.eat("True") => Lit::Bool(true),
            'F' if self.eat("False") => Lit::Bool(false),
            _ => self.int(),
        }
    }

    fn int(&mut self) -> Lit {
        let end = self.rest.find(|c: char| !c.is_ascii_digit()).unwrap();
        let n = self.rest[..end].parse().expect("an integer");
        self.rest = &self.rest[end..];
        Lit::Int(n)
    }

    /// Items up to `close`, with Python's optional trailing comma.
    fn items(&mut self, open: char, close: char) -> Vec<Lit> {
        assert!(self.eat(&open.to_string()));
        let mut out = Vec::new();
        while !self.eat(&close.to_string()) {
            out.push(self.value());
            if !self.eat(",") {
                assert!(
                    self.eat(&close.to_string()),
                    "no {close} at {:?}",
                    self.rest
                );
                break;
            }
        }
        out
    }

    fn dict(&mut self) -> Lit {
        assert!(self.eat("{"));
        let mut out = Vec::new();
        while !self.eat("}") {
            let key = self.value();
            assert!(self.eat(":"));
            out.push((key, self.value()));
            assert!(self.eat(","), "no comma at {:?}", self.rest);
        }
        Lit::Dict(out)
    }

    fn string(&mut self) -> String {
        let quote = self.rest.chars().next().unwrap();
        let mut chars = self.rest[1..].char_indices();
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.rest = &self.rest[1 + i + 1..];
                    return out;
                }
                '\\' => out.push(unescape(&mut chars)),
                c => out.push(c),
            }
        }
        panic!("unterminated string");
    }
}

fn unescape(chars: &mut std::str::CharIndices) -> char {
    match chars.next().unwrap().1 {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'x' => hex(chars, 2),
        'u' => hex(chars, 4),
        'U' => hex(chars, 8),
        other => other,
    }
}

fn hex(chars: &mut std::str::CharIndices, n: usize) -> char {
    let digits: String = (0..n).map(|_| chars.next().unwrap().1).collect();
    char::from_u32(u32::from_str_radix(&digits, 16).unwrap()).unwrap()
}

/// Splits an encoded header into version and dict text; checks the framing.
fn unwrap_header(bytes: &[u8]) -> (u8, String) {
    assert_eq!(&bytes[..6], MAGIC);
    assert_eq!(bytes.len() % ARRAY_ALIGN, 0);
    assert_eq!(bytes.last(), Some(&b'\n'));
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        other => panic!("version {other}"),
    };
    assert_eq!(start + len, bytes.len());
    let body = &bytes[start..];
    let text = match major {
        3 => String::from_utf8(body.to_vec()).unwrap(),
        _ => body.iter().map(|&b| char::from(b)).collect(),
    };
    (major, text)
}

/// The parsed `descr` must describe `dtype`: its type string, or its fields by name.
fn check_descr(dtype: &Dtype, descr: &Lit) {
    let Dtype::Struct { fields, .. } = dtype else {
        return assert_eq!(descr, &Lit::Str(dtype.typestr()));
    };
    let Lit::List(items) = descr else {
        panic!("{descr:?}")
    };
    let named: Vec<&Lit> = items
        .iter()
        .filter(|item| !matches!(item, Lit::Tuple(t) if t[0] == Lit::Str(String::new())))
        .collect();
    assert_eq!(named.len(), fields.len());
    for (field, item) in fields.iter().zip(named) {
        let Lit::Tuple(parts) = item else {
            panic!("{item:?}")
        };
        assert_eq!(parts[0], Lit::Str(field.name.clone()));
        check_descr(&field.dtype, &parts[1]);
    }
}

fn plain_dtype() -> impl Strategy<Value = Dtype> {
    let kind = prop::sample::select(vec!['b', 'i', 'u', 'f', 'c', 'S', 'U', 'V']);
    let order = prop::sample::select(vec![ByteOrder::Little, ByteOrder::Big]);
    (kind, order, 0usize..40).prop_map(|(kind, order, size)| {
        let size = if kind == 'U' { size * 4 } else { size };
        Dtype::plain(kind, order, size)
    })
}

fn dtype() -> impl Strategy<Value = Dtype> {
    plain_dtype().prop_recursive(3, 24, 5, |inner| {
        let field = (
            "\\PC{1,6}",
            inner,
            0usize..9,
            prop::collection::vec(0u64..4, 0..3),
        );
        (prop::collection::vec(field, 1..5), 0usize..9).prop_map(|(parts, tail)| {
            let mut offset = 0;
            let fields: Vec<Field> = parts
                .into_iter()
                .map(|(name, dtype, gap, shape)| {
                    let field = Field {
                        name,
                        offset: offset + gap,
                        dtype,
                        shape,
                    };
                    offset = field.offset + field.size();
                    field
                })
                .collect();
            Dtype::Struct {
                fields,
                itemsize: offset + tail,
            }
        })
    })
}

fn shape() -> impl Strategy<Value = Vec<u64>> {
    let dim = prop_oneof![0u64..10, any::<u64>()];
    prop::collection::vec(dim, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(300)))]

    #[test]
    fn headers_parse_back(dtype in dtype(), shape in shape(), fortran in any::<bool>()) {
        let header = NpyHeader { dtype, shape, fortran_order: fortran };
        let _ = header.payload_len();
        let (major, text) = unwrap_header(&header.encode());
        prop_assert_eq!(major == 3, latin1(&header.dict_literal()).is_none());
        let text = text.trim_end_matches('\n').trim_end_matches(' ');
        let mut parser = Parser { rest: text };
        let Lit::Dict(items) = parser.value() else { panic!("{text}") };
        prop_assert_eq!(parser.rest, "");
        let keys: Vec<&Lit> = items.iter().map(|(k, _)| k).collect();
        let expected = ["descr", "fortran_order", "shape"].map(|k| Lit::Str(k.into()));
        prop_assert_eq!(keys, expected.iter().collect::<Vec<_>>());
        check_descr(&header.dtype, &items[0].1);
        prop_assert_eq!(&items[1].1, &Lit::Bool(fortran));
        let dims = header.shape.iter().map(|&n| Lit::Int(n)).collect();
        prop_assert_eq!(&items[2].1, &Lit::Tuple(dims));
    }
}
