//! Our `.npy` header writer against headers numpy writes in the test run.

mod common;

use arrfs::npy::{ByteOrder, Dtype, Field, NpyHeader};
use serde_json::Value;

fn dtype_of(v: &Value) -> Dtype {
    if let Some(fields) = v["fields"].as_array() {
        let fields = fields
            .iter()
            .map(|f| Field {
                name: f["name"].as_str().unwrap().to_string(),
                offset: f["offset"].as_u64().unwrap() as usize,
                dtype: dtype_of(&f["dtype"]),
                shape: shape_of(&f["shape"]),
            })
            .collect();
        let itemsize = v["itemsize"].as_u64().unwrap() as usize;
        return Dtype::Struct { fields, itemsize };
    }
    let order = match v["order"].as_str().unwrap() {
        ">" => ByteOrder::Big,
        "|" => ByteOrder::NotApplicable,
        _ => ByteOrder::Little,
    };
    let kind = v["kind"].as_str().unwrap().chars().next().unwrap();
    Dtype::plain(kind, order, v["size"].as_u64().unwrap() as usize)
}

fn shape_of(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect()
}

#[test]
fn headers_equal_numpys_byte_for_byte() {
    let lines = common::run_py::<&str>("npy_headers.py", &[]);
    let mut checked = 0;
    for line in lines.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let header = NpyHeader {
            dtype: dtype_of(&case["dtype"]),
            shape: shape_of(&case["shape"]),
            fortran_order: case["fortran"].as_bool().unwrap(),
        };
        let expected: Vec<u8> = (0..case["header"].as_str().unwrap().len() / 2)
            .map(|i| {
                u8::from_str_radix(&case["header"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap()
            })
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&header.encode()),
            String::from_utf8_lossy(&expected),
            "{line}"
        );
        assert_eq!(header.encode(), expected, "{line}");
        checked += 1;
    }
    assert!(checked > 150, "only {checked} headers from numpy");
}
