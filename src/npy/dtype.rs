//! numpy dtypes as far as `.npy` headers need them, and numpy's `descr` text for each.

use super::pyrepr::{str_repr, tuple_repr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ByteOrder {
    Little,
    Big,
    /// Order does not apply (one-byte types, strings of bytes, void).
    NotApplicable,
}

impl ByteOrder {
    fn char(self) -> char {
        match self {
            ByteOrder::Little => '<',
            ByteOrder::Big => '>',
            ByteOrder::NotApplicable => '|',
        }
    }
}

/// A numpy dtype: a plain type (`<f8`, `|S5`, `<U3`, ...) or a structured one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    /// `kind` is numpy's kind letter: b i u f c S U V. `size` is the item size in bytes.
    Plain {
        kind: char,
        order: ByteOrder,
        size: usize,
    },
    Struct {
        fields: Vec<Field>,
        itemsize: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub dtype: Dtype,
    /// Sub-array shape of the field; empty for a plain field.
    pub shape: Vec<u64>,
}

impl Field {
    pub fn size(&self) -> usize {
        self.dtype.itemsize() * self.shape.iter().product::<u64>() as usize
    }
}

impl Dtype {
    /// A plain numeric type; the byte order is dropped for one-byte types as numpy does.
    pub fn plain(kind: char, order: ByteOrder, size: usize) -> Dtype {
        let order = match kind {
            'S' | 'V' => ByteOrder::NotApplicable,
            'b' | 'i' | 'u' if size == 1 => ByteOrder::NotApplicable,
            _ => order,
        };
        Dtype::Plain { kind, order, size }
    }

    pub fn itemsize(&self) -> usize {
        match self {
            Dtype::Plain { size, .. } => *size,
            Dtype::Struct { itemsize, .. } => *itemsize,
        }
    }

    /// numpy's `dtype.str` for plain types, e.g. `<f8`, `|S5`, `<U3` (size in characters).
    pub fn typestr(&self) -> String {
        match self {
            Dtype::Plain {
                kind: 'U',
                order,
                size,
            } => format!("{}U{}", order.char(), size / 4),
            Dtype::Plain { kind, order, size } => format!("{}{}{}", order.char(), kind, size),
            Dtype::Struct { itemsize, .. } => format!("|V{itemsize}"),
        }
    }

    /// The Python literal numpy writes as `'descr'`: `dtype.str` for plain types,
    /// `dtype.descr` (with `('', '|Vn')` padding entries) for structured ones.
    pub fn descr(&self) -> String {
        match self {
            Dtype::Plain { .. } => str_repr(&self.typestr()),
            Dtype::Struct { fields, itemsize } => struct_descr(fields, *itemsize),
        }
    }

    /// Fields in order of increasing offset without overlap: what numpy's `descr` can express.
    pub fn is_describable(&self) -> bool {
        let Dtype::Struct { fields, itemsize } = self else {
            return true;
        };
        let mut end = 0;
        for field in fields {
            if field.offset < end || !field.dtype.is_describable() {
                return false;
            }
            end = field.offset + field.size();
        }
        end <= *itemsize
    }
}

/// Mirrors numpy's `_array_descr` in `numpy/lib/format.py` / `_internal.py`.
fn struct_descr(fields: &[Field], itemsize: usize) -> String {
    let mut items = Vec::with_capacity(fields.len() + 1);
    let mut offset = 0;
    for field in fields {
        if field.offset > offset {
            items.push(padding(field.offset - offset));
            offset = field.offset;
        }
        let name = str_repr(&field.name);
        let inner = field.dtype.descr();
        items.push(if field.shape.is_empty() {
            format!("({name}, {inner})")
        } else {
            format!("({name}, {inner}, {})", tuple_repr(&field.shape))
        });
        offset += field.size();
    }
    if itemsize > offset {
        items.push(padding(itemsize - offset));
    }
    format!("[{}]", items.join(", "))
}

fn padding(n: usize) -> String {
    format!("('', '|V{n}')")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f8() -> Dtype {
        Dtype::plain('f', ByteOrder::Little, 8)
    }

    #[test]
    fn plain_typestrs() {
        assert_eq!(f8().descr(), "'<f8'");
        assert_eq!(Dtype::plain('i', ByteOrder::Big, 1).typestr(), "|i1");
        assert_eq!(Dtype::plain('u', ByteOrder::Big, 2).typestr(), ">u2");
        assert_eq!(Dtype::plain('S', ByteOrder::Little, 5).typestr(), "|S5");
        assert_eq!(Dtype::plain('U', ByteOrder::Little, 12).typestr(), "<U3");
        assert_eq!(Dtype::plain('b', ByteOrder::Little, 1).typestr(), "|b1");
    }

    #[test]
    fn structured_descr_matches_numpy() {
        // np.dtype({'names': ['a', 'b'], 'formats': ['<i4', ('<f8', (2,))],
        //           'offsets': [0, 8], 'itemsize': 32}).descr
        let dt = Dtype::Struct {
            fields: vec![
                Field {
                    name: "a".into(),
                    offset: 0,
                    dtype: Dtype::plain('i', ByteOrder::Little, 4),
                    shape: vec![],
                },
                Field {
                    name: "b".into(),
                    offset: 8,
                    dtype: f8(),
                    shape: vec![2],
                },
            ],
            itemsize: 32,
        };
        assert_eq!(
            dt.descr(),
            "[('a', '<i4'), ('', '|V4'), ('b', '<f8', (2,)), ('', '|V8')]"
        );
        assert!(dt.is_describable());
    }
}
