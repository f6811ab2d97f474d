//! The element types `arrfs show` can print and summarise: numpy's bool, integer, float and
//! complex scalars, decoded from their `.npy` bytes in either byte order.

use half::f16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Uint,
    Float,
    Complex,
}

/// One plain numeric `.npy` element type (`<f4`, `|b1`, `>i8`, `<c16`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elem {
    pub kind: Kind,
    pub size: usize,
    pub big_endian: bool,
}

/// A decoded element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i128),
    Float(f64),
    Complex(f64, f64),
}

/// The width of a floating-point type, which decides its shortest round-trip digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatWidth {
    Half,
    Single,
    Double,
}

impl Elem {
    /// The element type of a plain descr; None for structured, string, void, datetime,
    /// object and extended-precision types (which `show` describes but does not print).
    pub fn parse(descr: &str) -> Option<Elem> {
        let mut chars = descr.chars();
        let order = chars.next()?;
        let code = chars.next()?;
        let size: usize = chars.as_str().parse().ok()?;
        let kind = match (code, size) {
            ('b', 1) => Kind::Bool,
            ('i', 1 | 2 | 4 | 8) => Kind::Int,
            ('u', 1 | 2 | 4 | 8) => Kind::Uint,
            ('f', 2 | 4 | 8) => Kind::Float,
            ('c', 8 | 16) => Kind::Complex,
            _ => return None,
        };
        let big_endian = match order {
            '<' | '|' | '=' => false,
            '>' => true,
            _ => return None,
        };
        Some(Elem {
            kind,
            size,
            big_endian,
        })
    }

    /// Width of the float (or of each complex part).
    pub fn float_width(&self) -> FloatWidth {
        let part = match self.kind {
            Kind::Complex => self.size / 2,
            _ => self.size,
        };
        match part {
            2 => FloatWidth::Half,
            4 => FloatWidth::Single,
            _ => FloatWidth::Double,
        }
    }

    /// numpy's name of the type (`float32`, `uint8`, `bool`).
    pub fn numpy_name(&self) -> String {
        let bits = self.size * 8;
        match self.kind {
            Kind::Bool => "bool".into(),
            Kind::Int => format!("int{bits}"),
            Kind::Uint => format!("uint{bits}"),
            Kind::Float => format!("float{bits}"),
            Kind::Complex => format!("complex{bits}"),
        }
    }

    /// Decodes one element from exactly `size` bytes.
    pub fn decode(&self, bytes: &[u8]) -> Value {
        let mut buf = [0u8; 16];
        buf[..self.size].copy_from_slice(&bytes[..self.size]);
        if self.big_endian {
            match self.kind {
                // Each part of a complex number is swapped on its own.
                Kind::Complex => {
                    let half = self.size / 2;
                    buf[..half].reverse();
                    buf[half..self.size].reverse();
                }
                _ => buf[..self.size].reverse(),
            }
        }
        match self.kind {
            Kind::Bool => Value::Bool(buf[0] != 0),
            Kind::Int => Value::Int(signed(&buf[..self.size])),
            Kind::Uint => Value::Int(unsigned(&buf[..self.size]) as i128),
            Kind::Float => Value::Float(float_le(&buf[..self.size])),
            Kind::Complex => {
                let half = self.size / 2;
                Value::Complex(float_le(&buf[..half]), float_le(&buf[half..self.size]))
            }
        }
    }
}

fn unsigned(le: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..le.len()].copy_from_slice(le);
    u64::from_le_bytes(b)
}

fn signed(le: &[u8]) -> i128 {
    let shift = 64 - 8 * le.len() as u32;
    // Sign-extend by shifting the value to the top of an i64 and back.
    (((unsigned(le) << shift) as i64) >> shift) as i128
}

fn float_le(le: &[u8]) -> f64 {
    match le.len() {
        2 => f16::from_le_bytes([le[0], le[1]]).to_f64(),
        4 => f32::from_le_bytes(le.try_into().expect("4 bytes")) as f64,
        _ => f64::from_le_bytes(le.try_into().expect("8 bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_byte_orders() {
        let big = Elem::parse(">i2").unwrap();
        assert_eq!(big.decode(&[0xff, 0xfe]), Value::Int(-2));
        let little = Elem::parse("<u2").unwrap();
        assert_eq!(little.decode(&[0xff, 0xfe]), Value::Int(0xfeff));
        let c = Elem::parse(">c8").unwrap();
        let mut bytes = 1.5f32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(-2f32).to_be_bytes());
        assert_eq!(c.decode(&bytes), Value::Complex(1.5, -2.0));
        assert_eq!(Elem::parse("|S3"), None);
        assert_eq!(Elem::parse("<f16"), None);
    }
}
