//! numpy's `repr(array)` with its default print options (linewidth 75, threshold 1000,
//! edgeitems 3, precision 8, floatmode 'maxprec'), ported from `numpy/_core/arrayprint.py`
//! (`_formatArray`, `FloatingFormat`, `IntegerFormat`, `BoolFormat`, `ComplexFloatingFormat`,
//! `_array_repr_implementation`). No crate prints numpy's layout, and users compare what
//! `arrfs show` prints with what numpy prints, so it is ported rule by rule.

use super::values::{Elem, FloatWidth, Kind, Value};

const LINE_WIDTH: usize = 75;
pub const THRESHOLD: u64 = 1000;
pub const EDGE_ITEMS: u64 = 3;
const PRECISION: usize = 8;
const SEPARATOR: &str = ", ";
const PREFIX: &str = "array(";

/// The indices along one axis of length `len` that numpy prints: all, or the first and
/// last [`EDGE_ITEMS`] when the array is summarised.
pub fn shown_indices(len: u64, summarise: bool) -> Vec<u64> {
    if summarise && len > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS).chain(len - EDGE_ITEMS..len).collect()
    } else {
        (0..len).collect()
    }
}

/// Whether numpy summarises an array of this shape.
pub fn summarises(shape: &[u64]) -> bool {
    shape.iter().product::<u64>() > THRESHOLD
}

/// `repr(a)` of an array of `shape` whose shown elements (see [`shown_indices`]) are
/// `values`, in C order of the shown sub-array.
pub fn array_repr(elem: &Elem, shape: &[u64], values: &[Value]) -> String {
    let size: u64 = shape.iter().product();
    let body = match size {
        0 => "[]".to_string(),
        _ => array_body(elem, shape, values),
    };
    let mut extras = Vec::new();
    if (size == 0 && shape != [0]) || size > THRESHOLD {
        extras.push(format!("shape={}", crate::npy::tuple_repr(shape)));
    }
    if !dtype_is_implied(elem) || size == 0 {
        extras.push(format!("dtype={}", dtype_short_repr(elem)));
    }
    if extras.is_empty() {
        return format!("{PREFIX}{body})");
    }
    let arr = format!("{PREFIX}{body},");
    let extra = format!("{})", extras.join(", "));
    let last_line = arr.len() - arr.rfind('\n').map_or(0, |i| i + 1);
    let spacer = if last_line + extra.len() + 1 > LINE_WIDTH {
        format!("\n{}", " ".repeat(PREFIX.len()))
    } else {
        " ".to_string()
    };
    format!("{arr}{spacer}{extra}")
}

/// numpy leaves out `dtype=` for its default types in native order.
fn dtype_is_implied(elem: &Elem) -> bool {
    let native = !elem.big_endian || elem.size == 1;
    let default = matches!(
        (elem.kind, elem.size),
        (Kind::Bool, 1) | (Kind::Int, 8) | (Kind::Float, 8) | (Kind::Complex, 16)
    );
    native && default
}

fn dtype_short_repr(elem: &Elem) -> String {
    if !elem.big_endian || elem.size <= 1 {
        return elem.numpy_name();
    }
    let code = match elem.kind {
        Kind::Bool => 'b',
        Kind::Int => 'i',
        Kind::Uint => 'u',
        Kind::Float => 'f',
        Kind::Complex => 'c',
    };
    format!("'>{code}{}'", elem.size)
}

fn array_body(elem: &Elem, shape: &[u64], values: &[Value]) -> String {
    let format = ElementFormat::new(elem, shape.is_empty(), values);
    let cells: Vec<String> = values.iter().map(|v| format.format(v)).collect();
    let summarise = summarises(shape);
    let sub_shape: Vec<usize> = shape
        .iter()
        .map(|&n| shown_indices(n, summarise).len())
        .collect();
    let mut strides = vec![1usize; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * sub_shape[axis + 1];
    }
    let grid = Grid {
        cut: shape
            .iter()
            .map(|&n| summarise && n > 2 * EDGE_ITEMS)
            .collect(),
        shape: sub_shape,
        strides,
        cells,
    };
    // Widths as array2string computes them: the suffix `)` is taken off the line width,
    // and continuation lines are indented past `array([`.
    let hanging = " ".repeat(PREFIX.len() + 1);
    grid.format(0, 0, &hanging, LINE_WIDTH - 1)
}

/// The shown sub-array, its cells already formatted.
struct Grid {
    shape: Vec<usize>,
    strides: Vec<usize>,
    cut: Vec<bool>,
    cells: Vec<String>,
}

impl Grid {
    /// `_formatArray`'s `recurser`: the rows of `axis` starting at cell `base`.
    fn format(&self, axis: usize, base: usize, hanging: &str, width: usize) -> String {
        if axis == self.shape.len() {
            return self.cells[base].clone();
        }
        let next_hanging = format!("{hanging} ");
        let next_width = width - 1;
        let n = self.shape[axis];
        let (leading, trailing) = if self.cut[axis] {
            (n / 2, n / 2)
        } else {
            (0, n)
        };
        let child = |i: usize| {
            self.format(
                axis + 1,
                base + i * self.strides[axis],
                &next_hanging,
                next_width,
            )
        };
        let mut s = String::new();
        if axis + 1 == self.shape.len() {
            let elem_width = width - 1; // max(len(separator.rstrip()), len(']'))
            let mut line = hanging.to_string();
            for i in 0..leading {
                extend_line(&mut s, &mut line, &child(i), elem_width, hanging);
                line.push_str(SEPARATOR);
            }
            if self.cut[axis] {
                extend_line(&mut s, &mut line, "...", elem_width, hanging);
                line.push_str(SEPARATOR);
            }
            for i in n - trailing..n - 1 {
                extend_line(&mut s, &mut line, &child(i), elem_width, hanging);
                line.push_str(SEPARATOR);
            }
            extend_line(&mut s, &mut line, &child(n - 1), elem_width, hanging);
            s.push_str(&line);
        } else {
            let line_sep = format!(
                "{}{}",
                SEPARATOR.trim_end(),
                "\n".repeat(self.shape.len() - axis - 1)
            );
            for i in 0..leading {
                s.push_str(&format!("{hanging}{}{line_sep}", child(i)));
            }
            if self.cut[axis] {
                s.push_str(&format!("{hanging}...{line_sep}"));
            }
            for i in n - trailing..n - 1 {
                s.push_str(&format!("{hanging}{}{line_sep}", child(i)));
            }
            s.push_str(&format!("{hanging}{}", child(n - 1)));
        }
        format!("[{}]", &s[hanging.len()..])
    }
}

/// `_extendLine`: wrap before `word` if it would pass `width`, unless that cannot help.
fn extend_line(s: &mut String, line: &mut String, word: &str, width: usize, hanging: &str) {
    let needs_wrap = line.len() + word.len() > width && line.len() > hanging.len();
    if needs_wrap {
        s.push_str(line.trim_end());
        s.push('\n');
        *line = hanging.to_string();
    }
    line.push_str(word);
}

/// How every element of one array is printed (widths agreed over all shown elements).
enum ElementFormat {
    Bool {
        true_text: &'static str,
    },
    Int {
        width: usize,
    },
    Float(FloatFormat),
    Complex {
        real: FloatFormat,
        imag: FloatFormat,
    },
}

impl ElementFormat {
    fn new(elem: &Elem, zero_d: bool, values: &[Value]) -> ElementFormat {
        let width = elem.float_width();
        match elem.kind {
            Kind::Bool => ElementFormat::Bool {
                true_text: if zero_d { "True" } else { " True" },
            },
            Kind::Int | Kind::Uint => {
                let ints = values.iter().filter_map(|v| match v {
                    Value::Int(i) => Some(i.to_string().len()),
                    _ => None,
                });
                ElementFormat::Int {
                    width: ints.max().unwrap_or(0),
                }
            }
            Kind::Float => {
                let xs: Vec<f64> = values.iter().map(real_part).collect();
                ElementFormat::Float(FloatFormat::new(&xs, width, false))
            }
            Kind::Complex => {
                let re: Vec<f64> = values.iter().map(real_part).collect();
                let im: Vec<f64> = values.iter().map(imag_part).collect();
                ElementFormat::Complex {
                    real: FloatFormat::new(&re, width, false),
                    imag: FloatFormat::new(&im, width, true),
                }
            }
        }
    }

    fn format(&self, value: &Value) -> String {
        match (self, value) {
            (ElementFormat::Bool { true_text }, Value::Bool(b)) => {
                if *b {
                    true_text.to_string()
                } else {
                    "False".to_string()
                }
            }
            (ElementFormat::Int { width }, Value::Int(i)) => format!("{i:>width$}"),
            (ElementFormat::Float(f), v) => f.format(real_part(v)),
            (ElementFormat::Complex { real, imag }, v) => {
                let r = real.format(real_part(v));
                let i = imag.format(imag_part(v));
                // The `j` goes before the padding of the imaginary part.
                let end = i.trim_end().len();
                format!("{r}{}j{}", &i[..end], &i[end..])
            }
            (_, v) => format!("{v:?}"),
        }
    }
}

fn real_part(v: &Value) -> f64 {
    match *v {
        Value::Float(x) | Value::Complex(x, _) => x,
        Value::Int(i) => i as f64,
        Value::Bool(b) => b as u8 as f64,
    }
}

fn imag_part(v: &Value) -> f64 {
    match *v {
        Value::Complex(_, y) => y,
        _ => 0.0,
    }
}

/// `FloatingFormat` with floatmode 'maxprec', precision 8, sign '-' (or '+' for imaginary
/// parts).
struct FloatFormat {
    width: FloatWidth,
    plus: bool,
    scientific: bool,
    pad_left: usize,
    pad_right: usize,
    /// Scientific mode: every mantissa gets this many fraction digits.
    frac_digits: usize,
    /// Scientific mode: exponent digits.
    exp_size: usize,
}

impl FloatFormat {
    fn new(xs: &[f64], width: FloatWidth, plus: bool) -> FloatFormat {
        let finite: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        let nonzero = finite.iter().map(|x| x.abs()).filter(|&x| x != 0.0);
        let max = nonzero.clone().fold(f64::NAN, f64::max);
        let min = nonzero.fold(f64::NAN, f64::min);
        let scientific = !max.is_nan() && (max >= 1e8 || min < 1e-4 || max / min > 1000.0);
        let mut f = FloatFormat {
            width,
            plus,
            scientific,
            pad_left: 0,
            pad_right: 0,
            frac_digits: 0,
            exp_size: 0,
        };
        let parts: Vec<Digits> = finite.iter().map(|&x| f.digits(x)).collect();
        f.pad_left = parts.iter().map(|p| p.int.len()).max().unwrap_or(0);
        let frac = parts.iter().map(|p| p.frac.len()).max().unwrap_or(0);
        if scientific {
            f.exp_size = parts.iter().map(|p| p.exp.len() - 1).max().unwrap_or(0);
            f.frac_digits = frac;
            f.pad_right = f.exp_size + 2 + frac;
        } else {
            f.pad_right = frac;
        }
        if finite.len() != xs.len() {
            let neg_inf = plus || xs.contains(&f64::NEG_INFINITY);
            let offset = f.pad_right as isize + 1;
            let wanted = (3 - offset).max(3 + neg_inf as isize - offset);
            f.pad_left = f.pad_left.max(wanted.max(0) as usize);
        }
        f
    }

    /// The digits numpy prints for `x` before padding.
    fn digits(&self, x: f64) -> Digits {
        let sign = match (x.is_sign_negative(), self.plus) {
            (true, _) => "-",
            (false, true) => "+",
            (false, false) => "",
        };
        let (digits, exp) = capped_digits(x.abs(), self.width, self.scientific);
        let (int, frac, exp_text) = if self.scientific {
            let e = if exp < 0 {
                format!("-{:02}", -exp)
            } else {
                format!("+{exp:02}")
            };
            (digits[..1].to_string(), digits[1..].to_string(), e)
        } else {
            let (int, frac) = positional(&digits, exp);
            (int, frac, String::new())
        };
        Digits {
            int: format!("{sign}{int}"),
            frac,
            exp: exp_text,
        }
    }

    fn format(&self, x: f64) -> String {
        if !x.is_finite() {
            let text = match (x.is_nan(), x < 0.0, self.plus) {
                (true, _, true) => "+nan",
                (true, _, false) => "nan",
                (false, true, _) => "-inf",
                (false, false, true) => "+inf",
                (false, false, false) => "inf",
            };
            let width = self.pad_left + self.pad_right + 1;
            return format!("{text:>width$}");
        }
        let mut d = self.digits(x);
        let pad_left = self.pad_left;
        if !self.scientific {
            let pad_right = self.pad_right;
            return format!("{:>pad_left$}.{:<pad_right$}", d.int, d.frac);
        }
        if d.frac.len() < self.frac_digits {
            // Dragon4's min_digits: the extra digits are the exact value's, rounded
            // (f16 0.1 among 4-digit mantissas is 9.998e-02, not 1.000e-01).
            let p = self.frac_digits;
            let (digits, exp) = split_sci(&format!("{:.p$e}", x.abs()));
            d.frac = digits[1..].to_string();
            d.int = format!("{}{}", &d.int[..d.int.len() - 1], &digits[..1]);
            d.exp = if exp < 0 {
                format!("-{:02}", -exp)
            } else {
                format!("+{exp:02}")
            };
        }
        let frac = format!("{:0<w$}", d.frac, w = self.frac_digits);
        let (sign, exp) = d.exp.split_at(1);
        let exp = format!("{exp:0>w$}", w = self.exp_size);
        format!("{:>pad_left$}.{frac}e{sign}{exp}", d.int)
    }
}

struct Digits {
    int: String,
    frac: String,
    /// Scientific mode: the exponent with its sign, at least two digits.
    exp: String,
}

/// The shortest digits that read back as `x` in its own width, as a digit string and the
/// decimal exponent of its first digit.
pub fn shortest_digits(x: f64, width: FloatWidth) -> (String, i32) {
    let text = match width {
        FloatWidth::Double => format!("{x:e}"),
        FloatWidth::Single => format!("{:e}", x as f32),
        FloatWidth::Half => shortest_half(x),
    };
    split_sci(&text)
}

/// Rust has no shortest printing of half floats: the shortest precision that reads back.
fn shortest_half(x: f64) -> String {
    let target = half::f16::from_f64(x);
    (0..8)
        .map(|p| format!("{x:.p$e}"))
        .find(|t| t.parse::<f64>().ok().map(half::f16::from_f64) == Some(target))
        .unwrap_or_else(|| format!("{x:e}"))
}

/// `1.2345e-5` -> (`12345`, -5), trailing zeros of the digits removed.
fn split_sci(text: &str) -> (String, i32) {
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let mut digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, exp.parse().unwrap_or(0))
}

/// The shortest digits, cut to numpy's precision of 8 fraction digits (rounding the exact
/// value, as Dragon4 does) where the shortest form has more.
fn capped_digits(x: f64, width: FloatWidth, scientific: bool) -> (String, i32) {
    let (digits, exp) = shortest_digits(x, width);
    if x == 0.0 {
        return ("0".into(), 0);
    }
    let frac_len = if scientific {
        digits.len() as i32 - 1
    } else {
        digits.len() as i32 - 1 - exp
    };
    if frac_len <= PRECISION as i32 {
        return (digits, exp);
    }
    if scientific {
        return split_sci(&format!("{x:.PRECISION$e}"));
    }
    let text = format!("{x:.PRECISION$}");
    let first = text.find(|c: char| c != '0' && c != '.');
    match first {
        None => ("0".into(), 0),
        Some(_) => split_positional(&text),
    }
}

/// `0.00012346` -> (`12346`, -4); `12.5` -> (`125`, 1).
fn split_positional(text: &str) -> (String, i32) {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let all = format!("{int}{frac}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let mut digits = all[lead..].to_string();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, int.len() as i32 - 1 - lead as i32)
}

/// Integer and fraction parts of `digits` x 10^(exp - len + 1), trailing zeros trimmed.
fn positional(digits: &str, exp: i32) -> (String, String) {
    if digits == "0" {
        return ("0".into(), String::new());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return ("0".into(), format!("{zeros}{digits}"));
    }
    let int_len = exp as usize + 1;
    if digits.len() > int_len {
        (digits[..int_len].to_string(), digits[int_len..].to_string())
    } else {
        (format!("{digits:0<int_len$}"), String::new())
    }
}

/// Python's `repr` of a float of this width (as `str(np.float32(x))` prints it):
/// positional for exponents -4..16, scientific otherwise.
pub fn scalar_repr(x: f64, width: FloatWidth) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let (digits, exp) = shortest_digits(x.abs(), width);
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    if (-4..16).contains(&exp) {
        let (int, frac) = positional(&digits, exp);
        let frac = if frac.is_empty() { "0".into() } else { frac };
        return format!("{sign}{int}.{frac}");
    }
    let frac = match digits.len() {
        1 => String::new(),
        _ => format!(".{}", &digits[1..]),
    };
    let e = if exp < 0 {
        format!("-{:02}", -exp)
    } else {
        format!("+{exp:02}")
    };
    format!("{sign}{}{frac}e{e}", &digits[..1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(descr: &str, xs: &[f64]) -> String {
        let elem = Elem::parse(descr).unwrap();
        let values: Vec<Value> = xs.iter().map(|&x| Value::Float(x)).collect();
        array_repr(&elem, &[xs.len() as u64], &values)
    }

    // Expected texts are numpy 2.4's repr of the same arrays.
    #[test]
    #[allow(clippy::approx_constant)] // 2.71828 is data here, not e
    fn floats_like_numpy() {
        assert_eq!(floats("<f8", &[1.0, 2.5]), "array([1. , 2.5])");
        assert_eq!(
            floats("<f8", &[1e-5, 1.5e10, f64::NAN, f64::NEG_INFINITY]),
            "array([1.0e-05, 1.5e+10,     nan,    -inf])"
        );
        assert_eq!(
            floats("<f8", &[0.00012345678, 0.1]),
            "array([0.00012346, 0.1       ])"
        );
        let h = |x: f64| half::f16::from_f64(x).to_f64();
        assert_eq!(
            floats("<f2", &[h(0.1), h(2.5), h(65504.0)]),
            "array([1.00e-01, 2.50e+00, 6.55e+04], dtype=float16)"
        );
        assert_eq!(
            floats("<f2", &[h(0.1), h(2.71828), h(65504.0)]),
            "array([9.998e-02, 2.719e+00, 6.550e+04], dtype=float16)"
        );
    }

    #[test]
    fn extra_digits_are_the_exact_values() {
        let f = |x: f64| x as f32 as f64;
        // Expected: numpy 2.4's repr of np.array([0.1, 1.23456789e-5], 'f4').
        assert_eq!(
            floats("<f4", &[f(0.1), f(1.23456789e-5)]),
            "array([1.0000000e-01, 1.2345679e-05], dtype=float32)"
        );
    }

    #[test]
    fn scalars_like_python() {
        assert_eq!(scalar_repr(0.1, FloatWidth::Single), "0.1");
        assert_eq!(scalar_repr(1e-7, FloatWidth::Double), "1e-07");
        assert_eq!(scalar_repr(-2.0, FloatWidth::Double), "-2.0");
        assert_eq!(scalar_repr(1.5e16, FloatWidth::Double), "1.5e+16");
    }
}
