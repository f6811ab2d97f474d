//! The virtual layout of an unpickled object (README, "What appears where"): dicts, lists and tuples become
//! directories, arrays and scalars `.npy` files, everything else is left out with a reason.
//! Shared values are visited once per reference, so the number of visited nodes is capped:
//! a billion-laughs stream stops at the cap with one log line.

use std::sync::Arc;

use super::numpy::{python_scalar, ArrayPayload};
use super::value::{Heap, NotArray, Object, Value};
use crate::npy::str_repr;
use crate::source::{SkipReason, Skipped};

/// Most entries one pickle may show, counted over every reference to shared values.
pub const MAX_NODES: usize = 250_000;
/// Deepest directory nesting shown (a path must also fit in PATH_MAX).
pub const MAX_DEPTH: usize = 200;

#[derive(Debug)]
pub enum Node {
    Dir(DirNode),
    Array(Arc<ArrayPayload>),
}

#[derive(Debug, Default)]
pub struct DirNode {
    /// Name (with `.npy` for arrays) and node index.
    pub children: Vec<(String, usize)>,
    pub skipped: Vec<Skipped>,
}

/// Node 0 is the root directory.
pub fn build(heap: &Heap, top: &Value, stem: &str) -> Vec<Node> {
    let mut builder = Builder {
        heap,
        nodes: vec![Node::Dir(DirNode::default())],
        visited: 0,
    };
    if is_container(heap, top) {
        builder.fill(0, top, 0)
    } else {
        builder.add_child(0, stem.to_string(), top, 0)
    }
    builder.nodes
}

fn is_container(heap: &Heap, value: &Value) -> bool {
    matches!(
        heap.object(value),
        Some(Object::List(_) | Object::Tuple(_) | Object::Dict(_))
    )
}

struct Builder<'h> {
    heap: &'h Heap,
    nodes: Vec<Node>,
    visited: usize,
}

impl Builder<'_> {
    fn dir(&mut self, index: usize) -> Option<&mut DirNode> {
        match self.nodes.get_mut(index) {
            Some(Node::Dir(dir)) => Some(dir),
            _ => None,
        }
    }

    fn skip(&mut self, dir: usize, name: String, why: NotArray) {
        log::debug!("pickle: {name:?} left out: {why}");
        if let Some(dir) = self.dir(dir) {
            let why = SkipReason::Unsupported(why.to_string());
            dir.skipped.push(Skipped::new(name, why));
        }
    }

    /// Adds the items of a dict, list or tuple to directory `dir`.
    fn fill(&mut self, dir: usize, container: &Value, depth: usize) {
        for index in 0.. {
            let Some((name, value)) = self.item(container, index) else {
                return;
            };
            if self.visited >= MAX_NODES {
                log::warn!("pickle: more than {MAX_NODES} entries (shared or hostile data?): the rest is left out");
                self.skip(dir, "...".into(), NotArray::EntryLimit(MAX_NODES));
                return;
            }
            self.visited += 1;
            match name {
                Ok(name) => self.add_child(dir, name, &value, depth),
                Err(why) => self.skip(dir, format!("#{index}"), why),
            }
        }
    }

    /// Item `index` of a container: its name (or why it has none) and its value.
    fn item(&self, container: &Value, index: usize) -> Option<(Result<String, NotArray>, Value)> {
        match self.heap.object(container)? {
            Object::List(items) | Object::Tuple(items) => {
                Some((Ok(index.to_string()), items.get(index)?.clone()))
            }
            Object::Dict(items) => {
                let (key, value) = items.get(index)?;
                let name =
                    py_str(self.heap, key, 0).ok_or(NotArray::Unsupported("key has no name"));
                Some((name, value.clone()))
            }
            _ => None,
        }
    }

    fn add_child(&mut self, dir: usize, name: String, value: &Value, depth: usize) {
        let (suffix, node) = match self.node_of(value, depth) {
            Ok(found) => found,
            Err(why) => return self.skip(dir, name, why),
        };
        self.nodes.push(node);
        let index = self.nodes.len() - 1;
        if let Some(parent) = self.dir(dir) {
            parent.children.push((format!("{name}{suffix}"), index));
        }
        if matches!(self.nodes.get(index), Some(Node::Dir(_))) {
            self.fill(index, value, depth + 1);
        }
    }

    /// The node a value becomes and the suffix of its name.
    fn node_of(&self, value: &Value, depth: usize) -> Result<(&'static str, Node), NotArray> {
        if let Some(array) = python_scalar(value) {
            return Ok((".npy", Node::Array(Arc::new(array))));
        }
        match (value, self.heap.object(value)) {
            (_, Some(Object::Array(array))) => Ok((".npy", Node::Array(array.clone()))),
            (_, Some(Object::List(_) | Object::Tuple(_) | Object::Dict(_))) => {
                if depth < MAX_DEPTH {
                    Ok(("", Node::Dir(DirNode::default())))
                } else {
                    Err(NotArray::TooDeep(MAX_DEPTH))
                }
            }
            (Value::Opaque(why), _) | (_, Some(Object::Failed(why))) => {
                Err(NotArray::Opaque(why.clone()))
            }
            (_, Some(object)) => Err(NotArray::NotAnArray(object_kind(object))),
            (other, None) => Err(NotArray::NotAnArray(value_kind(other))),
        }
    }
}

fn object_kind(object: &Object) -> &'static str {
    match object {
        Object::Set => "a set",
        Object::Dtype(_) => "a dtype",
        Object::PendingArray => "an array without data",
        Object::Wrapper(_) => "a joblib wrapper without data",
        Object::Storage(_) => "a bare storage",
        _ => "this object",
    }
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::None => "None",
        Value::BigInt => "an int beyond 64 bits",
        Value::Str(_) | Value::Py2Str(_) => "a string",
        Value::Bytes(_) => "a bytes object",
        Value::Global(_) => "a class or function",
        _ => "this value",
    }
}

/// Python's `str(key)` for the key types that have a stable one; None for others.
pub fn py_str(heap: &Heap, key: &Value, depth: usize) -> Option<String> {
    match key {
        Value::Str(blob) | Value::Py2Str(blob) => blob.text(),
        _ => py_repr(heap, key, depth),
    }
}

/// Python's `repr()` of a key (used for tuple items and non-string keys).
fn py_repr(heap: &Heap, key: &Value, depth: usize) -> Option<String> {
    match key {
        Value::None => Some("None".into()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
        Value::Int(n) => Some(n.to_string()),
        Value::Float(x) => Some(float_repr(*x)),
        Value::Str(blob) | Value::Py2Str(blob) => blob.text().map(|t| str_repr(&t)),
        Value::Bytes(blob) => blob.inline.as_deref().map(bytes_repr),
        Value::Obj(_) if depth < 8 => tuple_repr(heap, key, depth),
        _ => None,
    }
}

fn tuple_repr(heap: &Heap, key: &Value, depth: usize) -> Option<String> {
    let Some(Object::Tuple(items)) = heap.object(key) else {
        return None;
    };
    let parts: Option<Vec<String>> = items.iter().map(|v| py_repr(heap, v, depth + 1)).collect();
    let parts = parts?;
    Some(match parts.len() {
        1 => format!("({},)", parts.join("")),
        _ => format!("({})", parts.join(", ")),
    })
}

/// `repr(float)`: shortest round-trip digits, exponent form outside 1e-4 <= |x| < 1e16.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if x == 0.0 || (-4..16).contains(&exp) {
        let plain = format!("{x}");
        return if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        };
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// `repr(bytes)`, as Python 3 writes it.
fn bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = format!("b{quote}");
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ if char::from(b) == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_does() {
        assert_eq!(float_repr(1.0), "1.0");
        assert_eq!(float_repr(0.1), "0.1");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(1.5e-5), "1.5e-05");
        assert_eq!(float_repr(123456789012345.6), "123456789012345.6");
        assert_eq!(float_repr(-0.0), "-0.0");
    }

    #[test]
    fn bytes_print_as_python_does() {
        assert_eq!(bytes_repr(b"a'\x00"), "b\"a'\\x00\"");
        assert_eq!(bytes_repr(b"ab"), "b'ab'");
    }
}
