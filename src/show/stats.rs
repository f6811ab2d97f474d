//! `arrfs show --stats`: min, max, mean and NaN count in one streaming pass over the
//! virtual file (or over an evenly spaced sample), as numpy's `nanmin`, `nanmax`,
//! `nanmean` and `isnan().sum()` give them.

use std::fmt::Write as _;

use super::repr::scalar_repr;
use super::values::{Elem, Kind, Value};
use super::{element_bar, read_elements, read_exact, Npy, BLOCK};
use crate::error::Result;
use crate::vfs::{Fs, Ino};

/// The running summary. The sum is compensated (Neumaier), so the mean of a large array
/// is as exact as f64 allows, whatever the element type.
#[derive(Default)]
pub struct Summary {
    total: u64,
    /// Elements that are not NaN (NaN of either part, for complex numbers).
    counted: u64,
    nan: u64,
    min: Option<Value>,
    max: Option<Value>,
    sum: f64,
    compensation: f64,
    pos_inf: bool,
    neg_inf: bool,
    sampled_from: Option<u64>,
}

impl Summary {
    fn add(&mut self, v: Value) {
        self.total += 1;
        let x = match v {
            Value::Bool(b) => b as u8 as f64,
            Value::Int(i) => i as f64,
            Value::Float(x) => x,
            // Complex numbers: only the NaN count (numpy orders complex numbers by their
            // real part first, which says little about the data).
            Value::Complex(re, im) => {
                if re.is_nan() || im.is_nan() {
                    self.nan += 1;
                }
                return;
            }
        };
        if x.is_nan() {
            self.nan += 1;
            return;
        }
        self.counted += 1;
        if self.min.is_none_or(|m| less(&v, &m)) {
            self.min = Some(v);
        }
        if self.max.is_none_or(|m| less(&m, &v)) {
            self.max = Some(v);
        }
        if x.is_infinite() {
            // Kept out of the compensated sum, whose correction term would turn into NaN.
            if x > 0.0 {
                self.pos_inf = true
            } else {
                self.neg_inf = true
            }
            return;
        }
        let t = self.sum + x;
        self.compensation += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }

    /// The `--stats` lines.
    pub fn text(&self, elem: &Elem) -> String {
        let width = elem.float_width();
        let show = |v: Option<Value>| match v {
            Some(Value::Int(i)) => i.to_string(),
            Some(Value::Bool(b)) => if b { "True" } else { "False" }.to_string(),
            Some(Value::Float(x)) => scalar_repr(x, width),
            _ => "nan".to_string(),
        };
        let mut out = String::new();
        let scope = match self.sampled_from {
            Some(all) => format!("{} of {all} elements, evenly spaced", self.total),
            None => format!("all {} elements", self.total),
        };
        let _ = writeln!(out, "  {:<12}{scope}", "stats");
        if elem.kind != Kind::Complex {
            let mean = match (self.counted, self.pos_inf, self.neg_inf) {
                (0, _, _) | (_, true, true) => f64::NAN,
                (_, true, false) => f64::INFINITY,
                (_, false, true) => f64::NEG_INFINITY,
                (n, false, false) => (self.sum + self.compensation) / n as f64,
            };
            let _ = writeln!(out, "    {:<10}{}", "min", show(self.min));
            let _ = writeln!(out, "    {:<10}{}", "max", show(self.max));
            let _ = writeln!(
                out,
                "    {:<10}{}",
                "mean",
                scalar_repr(mean, super::values::FloatWidth::Double)
            );
        }
        let _ = writeln!(out, "    {:<10}{}", "nan", self.nan);
        out
    }
}

fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Bool(x), Value::Bool(y)) => !x & y,
        (Value::Float(x), Value::Float(y)) => x < y,
        _ => false,
    }
}

/// Every element, in file order, a block at a time.
pub fn over_all(fs: &Fs, ino: Ino, header_len: u64, elem: &Elem, npy: &Npy) -> Result<Summary> {
    let total = npy.elements();
    let bar = element_bar(total, "stats");
    let size = elem.size as u64;
    let per_block = (BLOCK / size).max(1);
    let mut summary = Summary::default();
    let mut first = 0;
    while first < total {
        let n = per_block.min(total - first);
        let bytes = read_exact(fs, ino, header_len + first * size, n * size)?;
        bytes
            .chunks_exact(elem.size)
            .for_each(|b| summary.add(elem.decode(b)));
        first += n;
        bar.inc(n);
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// `n` elements spread evenly over the array (all of them if it has no more than `n`).
pub fn over_sample(fs: &Fs, ino: Ino, elem: &Elem, npy: &Npy, n: u64) -> Result<Summary> {
    let total = npy.elements();
    let n = n.min(total);
    let indices: Vec<u64> = (0..n)
        .map(|i| (i as u128 * total as u128 / n as u128) as u64)
        .collect();
    let bar = element_bar(n, "stats (sample)");
    let values = read_elements(fs, ino, elem, npy.header_len, &indices, Some(&bar))?;
    bar.finish_and_clear();
    let mut summary = Summary::default();
    values.into_iter().for_each(|v| summary.add(v));
    summary.sampled_from = (n < total).then_some(total);
    Ok(summary)
}
