//! numpy's pickled objects, interpreted without numpy: dtypes (`dtype(code)` + BUILD
//! state), arrays (`_reconstruct` + BUILD, `_frombuffer`, `scalar`), joblib's array
//! wrapper, and Python scalars as 0-d arrays.

use std::sync::Arc;

use super::torch::TensorData;
use super::value::{Blob, Encoding, Heap, NotArray, Object, Value};
use crate::npy::{ByteOrder, Dtype, Field, NpyHeader};

const BAD_SHAPE: NotArray = NotArray::Malformed("bad array shape");

/// Where an array's payload bytes come from.
#[derive(Debug)]
pub enum PayloadData {
    /// Stored as is at this absolute file offset: served by `pread`.
    File { offset: u64 },
    /// Small values built at mount (Python scalars, protocol 0 `STRING`s).
    Memory(Arc<[u8]>),
    /// Stored as text (latin-1 characters), decoded when read.
    Encoded(Arc<Blob>),
    /// A PyTorch tensor: a view into a storage the checkpoint holds outside the pickle.
    Tensor(TensorData),
}

/// An array as the tree shows it: its `.npy` header and where its bytes are.
#[derive(Debug)]
pub struct ArrayPayload {
    pub header: NpyHeader,
    pub data: PayloadData,
    /// Stored big-endian, served in native order: swap the bytes of each unit of this size.
    pub swap_unit: Option<usize>,
    /// The real type of a void dtype (`bfloat16`), shown as `user.arrfs.dtype_logical`.
    pub logical: Option<&'static str>,
}

impl ArrayPayload {
    pub fn new(header: NpyHeader, data: PayloadData) -> Self {
        ArrayPayload {
            header,
            data,
            swap_unit: None,
            logical: None,
        }
    }

    /// numpy's unpickler (`_reconstruct` + BUILD, protocols 0-4) and `joblib.load` return
    /// plain big-endian arrays in native order: show them that way, as the bytes are read.
    /// Structured dtypes keep their fields' order, as numpy does.
    pub fn in_native_order(mut self) -> Self {
        let Dtype::Plain {
            kind,
            order: ByteOrder::Big,
            size,
        } = self.header.dtype
        else {
            return self;
        };
        let unit = match kind {
            'c' => size / 2,
            'U' => 4,
            _ => size,
        };
        self.header.dtype = Dtype::plain(kind, ByteOrder::Little, size);
        self.swap_unit = Some(unit);
        self
    }
}

/// A `numpy.dtype` object as BUILD leaves it.
#[derive(Debug, Clone)]
pub struct DtypeObject {
    kind: char,
    /// Size from the code (`f8` -> 8, `U3` -> 12), before the state's item size.
    code_size: usize,
    order: ByteOrder,
    itemsize: Option<usize>,
    fields: Option<Vec<Field>>,
    subarray: Option<(Dtype, Vec<u64>)>,
    problem: Option<NotArray>,
}

impl DtypeObject {
    /// `dtype(code, align, copy)`, as numpy's `__reduce__` writes it (`'f8'`, `'U3'`).
    pub fn from_code(code: &str) -> DtypeObject {
        let (order, rest) = match code.chars().next() {
            Some('<') => (ByteOrder::Little, &code[1..]),
            Some('>') => (ByteOrder::Big, &code[1..]),
            Some('|' | '=') => (ByteOrder::Little, &code[1..]),
            _ => (ByteOrder::Little, code),
        };
        let mut chars = rest.chars();
        let kind = chars.next().unwrap_or('?');
        let count: usize = chars.as_str().parse().unwrap_or(0);
        let problem = match kind {
            'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'U' | 'V' => None,
            'O' => Some(NotArray::ObjectDtype),
            _ => Some(NotArray::NoNpyForm(code.to_string())),
        };
        DtypeObject {
            kind,
            code_size: if kind == 'U' { count * 4 } else { count },
            order,
            itemsize: None,
            fields: None,
            subarray: None,
            problem,
        }
    }

    pub fn is_object(&self) -> bool {
        self.kind == 'O'
    }

    /// Applies numpy's `__setstate__` tuple: `(3, endian, subarray, names, fields,
    /// itemsize, alignment, flags[, metadata])`.
    pub fn apply_state(&mut self, heap: &Heap, state: &Value) {
        if let Err(why) = self.try_apply_state(heap, state) {
            self.problem.get_or_insert(why);
        }
    }

    fn try_apply_state(&mut self, heap: &Heap, state: &Value) -> Result<(), NotArray> {
        let items = heap
            .sequence(state)
            .ok_or(NotArray::Malformed("dtype state is not a tuple"))?;
        let [_version, endian, subarray, names, fields, elsize, ..] = items else {
            return Err(NotArray::Items {
                what: "dtype state",
                count: items.len(),
            });
        };
        self.order = match heap.text(endian).as_deref() {
            Some(">") => ByteOrder::Big,
            Some("|") => ByteOrder::NotApplicable,
            _ => ByteOrder::Little,
        };
        if let Value::Int(size) = elsize {
            self.itemsize = usize::try_from(*size).ok().filter(|&s| s > 0);
        }
        if !matches!(subarray, Value::None) {
            self.subarray = Some(subarray_of(heap, subarray)?);
        }
        if !matches!(names, Value::None) {
            self.fields = Some(fields_of(heap, names, fields)?);
        }
        Ok(())
    }

    pub fn itemsize(&self) -> usize {
        self.itemsize.unwrap_or(self.code_size)
    }

    /// The dtype a `.npy` header shows for arrays of this dtype.
    pub fn resolve(&self) -> Result<Dtype, NotArray> {
        if let Some(why) = &self.problem {
            return Err(why.clone());
        }
        if self.subarray.is_some() {
            return Err(NotArray::Unsupported("sub-array dtype outside a structure"));
        }
        if let Some(fields) = &self.fields {
            return Ok(Dtype::Struct {
                fields: fields.clone(),
                itemsize: self.itemsize(),
            });
        }
        Ok(Dtype::plain(self.kind, self.order, self.itemsize()))
    }

    /// The dtype and sub-array shape of a structure field.
    fn resolve_field(&self) -> Result<(Dtype, Vec<u64>), NotArray> {
        match &self.subarray {
            Some((base, shape)) if self.problem.is_none() => Ok((base.clone(), shape.clone())),
            _ => Ok((self.resolve()?, Vec::new())),
        }
    }
}

fn dtype_of(heap: &Heap, value: &Value) -> Result<DtypeObject, NotArray> {
    match heap.object(value) {
        Some(Object::Dtype(dtype)) => Ok(dtype.clone()),
        _ => Err(NotArray::Malformed("expected a numpy dtype")),
    }
}

fn subarray_of(heap: &Heap, value: &Value) -> Result<(Dtype, Vec<u64>), NotArray> {
    const BAD: NotArray = NotArray::Malformed("bad sub-array");
    const BAD_SHAPE: NotArray = NotArray::Malformed("bad sub-array shape");
    let Some([base, shape]) = heap.sequence(value) else {
        return Err(BAD);
    };
    let shape = match shape {
        Value::Int(n) => vec![u64::try_from(*n).map_err(|_| BAD_SHAPE)?],
        other => heap.shape(other).ok_or(BAD_SHAPE)?,
    };
    Ok((dtype_of(heap, base)?.resolve()?, shape))
}

/// The fields of a structured dtype, in the order of `names`.
fn fields_of(heap: &Heap, names: &Value, fields: &Value) -> Result<Vec<Field>, NotArray> {
    let names = heap
        .sequence(names)
        .ok_or(NotArray::Malformed("field names are not a tuple"))?;
    names
        .iter()
        .map(|name| {
            let name = heap
                .text(name)
                .ok_or(NotArray::Malformed("field name is not a string"))?;
            let spec = heap
                .dict_get(fields, &name)
                .ok_or(NotArray::Malformed("field without a description"))?;
            field_of(heap, name, spec)
        })
        .collect()
}

fn field_of(heap: &Heap, name: String, spec: &Value) -> Result<Field, NotArray> {
    let items = heap.sequence(spec).unwrap_or_default();
    let (Some(dtype), Some(Value::Int(offset))) = (items.first(), items.get(1)) else {
        return Err(NotArray::Malformed("bad field description"));
    };
    let (dtype, shape) = dtype_of(heap, dtype)?.resolve_field()?;
    let offset =
        usize::try_from(*offset).map_err(|_| NotArray::Malformed("negative field offset"))?;
    Ok(Field {
        name,
        offset,
        dtype,
        shape,
    })
}

/// numpy's `np.save` writes `fortran_order: True` only for arrays that are Fortran- and
/// not also C-contiguous: at most one axis longer than 1, or no elements, is both.
pub fn header(dtype: Dtype, shape: Vec<u64>, fortran: bool) -> Result<NpyHeader, NotArray> {
    let long_axes = shape.iter().filter(|&&n| n > 1).count();
    let both_orders = long_axes <= 1 || shape.contains(&0);
    let bytes = shape
        .iter()
        .try_fold(dtype.itemsize() as u64, |acc, &n| acc.checked_mul(n));
    if bytes.is_none_or(|b| b > i64::MAX as u64) {
        return Err(NotArray::Unsupported("shape too large"));
    }
    if !dtype.is_describable() {
        return Err(NotArray::Unsupported(
            "structured dtype with overlapping fields",
        ));
    }
    Ok(NpyHeader {
        dtype,
        shape,
        fortran_order: fortran && !both_orders,
    })
}

/// The payload of `header` taken from a bytes-like value, checked for length.
fn payload(header: NpyHeader, data: &Value) -> Result<ArrayPayload, NotArray> {
    let blob = match data {
        Value::Bytes(blob) | Value::Py2Str(blob) => blob,
        Value::Opaque(why) => return Err(NotArray::Opaque(why.clone())),
        _ => {
            return Err(NotArray::Unsupported(
                "array data is not bytes (object array?)",
            ))
        }
    };
    let data = match blob.encoding {
        Encoding::Raw if blob.len == header.payload_len() => PayloadData::File {
            offset: blob.offset,
        },
        Encoding::Decoded => {
            PayloadData::Memory(blob.inline.clone().unwrap_or_else(|| Arc::from([])))
        }
        Encoding::Raw => {
            return Err(NotArray::DataBytes {
                got: blob.len,
                expected: header.payload_len(),
            })
        }
        Encoding::Utf8 | Encoding::RawUnicodeEscape => PayloadData::Encoded(blob.clone()),
    };
    if let PayloadData::Memory(bytes) = &data {
        if bytes.len() as u64 != header.payload_len() {
            return Err(NotArray::Malformed("array data of the wrong length"));
        }
    }
    Ok(ArrayPayload::new(header, data))
}

/// BUILD of `_reconstruct(ndarray, ...)`: state `(version, shape, dtype, is_fortran,
/// rawdata)`, or the four-item form without version of old numpy.
pub fn array_from_state(heap: &Heap, state: &Value) -> Result<ArrayPayload, NotArray> {
    let items = heap
        .sequence(state)
        .ok_or(NotArray::Malformed("array state is not a tuple"))?;
    let (shape, dtype, fortran, data) = match items {
        [_, shape, dtype, fortran, data] | [shape, dtype, fortran, data] => {
            (shape, dtype, fortran, data)
        }
        _ => {
            return Err(NotArray::Items {
                what: "array state",
                count: items.len(),
            })
        }
    };
    let shape = heap.shape(shape).ok_or(BAD_SHAPE)?;
    let dtype = dtype_of(heap, dtype)?.resolve()?;
    let fortran = matches!(fortran, Value::Bool(true) | Value::Int(1));
    Ok(payload(header(dtype, shape, fortran)?, data)?.in_native_order())
}

/// `_frombuffer(buffer, dtype, shape, order)`: protocol 5's form of contiguous arrays.
pub fn array_from_buffer(heap: &Heap, args: &[Value]) -> Result<ArrayPayload, NotArray> {
    let [data, dtype, shape, order] = args else {
        return Err(NotArray::Malformed("_frombuffer with unexpected arguments"));
    };
    let shape = heap.shape(shape).ok_or(BAD_SHAPE)?;
    let dtype = dtype_of(heap, dtype)?.resolve()?;
    let fortran = heap.text(order).as_deref() == Some("F");
    payload(header(dtype, shape, fortran)?, data)
}

/// `scalar(dtype, bytes)`: a numpy scalar, shown as a 0-d array.
pub fn numpy_scalar(heap: &Heap, args: &[Value]) -> Result<ArrayPayload, NotArray> {
    let [dtype, data] = args else {
        return Err(NotArray::Malformed(
            "numpy scalar with unexpected arguments",
        ));
    };
    let dtype = dtype_of(heap, dtype)?.resolve()?;
    payload(header(dtype, Vec::new(), false)?, data)
}

/// A Python bool/int/float/complex as `np.save(np.asarray(x))` shows it.
pub fn python_scalar(value: &Value) -> Option<ArrayPayload> {
    let (kind, size, bytes): (char, usize, Vec<u8>) = match value {
        Value::Bool(b) => ('b', 1, vec![u8::from(*b)]),
        Value::Int(n) => ('i', 8, n.to_le_bytes().to_vec()),
        Value::Float(x) => ('f', 8, x.to_le_bytes().to_vec()),
        Value::Complex(re, im) => ('c', 16, [re.to_le_bytes(), im.to_le_bytes()].concat()),
        _ => return None,
    };
    Some(ArrayPayload::new(
        NpyHeader::new(Dtype::plain(kind, ByteOrder::Little, size), Vec::new()),
        PayloadData::Memory(Arc::from(bytes)),
    ))
}

/// `joblib.numpy_pickle.NumpyArrayWrapper` before its BUILD.
#[derive(Debug, Default)]
pub struct JoblibWrapper;

/// What follows a wrapper's BUILD in the file.
pub enum WrapperData {
    /// Raw bytes in C or F order, after an alignment padding (joblib >= 1.2) if `aligned`.
    Bytes { header: NpyHeader, aligned: bool },
    /// An object array: a nested pickle stream.
    NestedPickle,
}

/// Reads the wrapper's state dict: `shape`, `order`, `dtype`, `numpy_array_alignment_bytes`.
pub fn wrapper_data(heap: &Heap, state: &Value) -> Result<WrapperData, NotArray> {
    let field = |name: &'static str| {
        heap.dict_get(state, name)
            .ok_or(NotArray::WrapperWithout(name))
    };
    let dtype = dtype_of(heap, field("dtype")?)?;
    if dtype.is_object() {
        return Ok(WrapperData::NestedPickle);
    }
    let shape = heap
        .shape(field("shape")?)
        .ok_or(NotArray::Malformed("bad wrapper shape"))?;
    let fortran = heap.text(field("order")?).as_deref() == Some("F");
    let aligned = matches!(
        heap.dict_get(state, "numpy_array_alignment_bytes"),
        Some(Value::Int(_))
    );
    let header = header(dtype.resolve()?, shape, fortran)?;
    Ok(WrapperData::Bytes { header, aligned })
}
