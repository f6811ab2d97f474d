//! PyTorch's pickled objects, interpreted without torch: the globals `torch.save` writes
//! (`_rebuild_tensor_v2/v3`, `_rebuild_parameter`, storage classes, dtypes, `torch.Size`,
//! `torch.device`) are data here, never imported. A tensor becomes an array whose payload is
//! a view into a storage that the checkpoint's zip holds as `*/data/KEY`; the container
//! (`source/torch.rs`) serves those bytes.

use std::sync::Arc;

use super::numpy::{header, ArrayPayload, PayloadData};
use super::value::{Blob, Encoding, Heap, NotArray, Object, Value};
use crate::npy::{ByteOrder, Dtype};

/// A torch dtype, as numpy (with ml_dtypes) shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
    C64,
    C128,
    F8E4M3,
    F8E5M2,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
}

impl TorchDtype {
    /// `torch.float32` etc. (the names `torch.save` writes as globals).
    fn from_dtype_name(name: &str) -> Option<TorchDtype> {
        use TorchDtype::*;
        Some(match name {
            "float64" | "double" => F64,
            "float32" | "float" => F32,
            "float16" | "half" => F16,
            "bfloat16" => BF16,
            "int64" | "long" => I64,
            "int32" | "int" => I32,
            "int16" | "short" => I16,
            "int8" => I8,
            "uint64" => U64,
            "uint32" => U32,
            "uint16" => U16,
            "uint8" => U8,
            "bool" => Bool,
            "complex64" | "cfloat" => C64,
            "complex128" | "cdouble" => C128,
            "float8_e4m3fn" => F8E4M3,
            "float8_e5m2" => F8E5M2,
            "float8_e4m3fnuz" => F8E4M3Fnuz,
            "float8_e5m2fnuz" => F8E5M2Fnuz,
            _ => return None,
        })
    }

    /// The legacy typed storage classes (`torch.FloatStorage`, ...).
    fn from_storage_name(name: &str) -> Option<TorchDtype> {
        use TorchDtype::*;
        Some(match name {
            "DoubleStorage" => F64,
            "FloatStorage" => F32,
            "HalfStorage" => F16,
            "BFloat16Storage" => BF16,
            "LongStorage" => I64,
            "IntStorage" => I32,
            "ShortStorage" => I16,
            "CharStorage" => I8,
            "ByteStorage" => U8,
            "BoolStorage" => Bool,
            "ComplexFloatStorage" => C64,
            "ComplexDoubleStorage" => C128,
            _ => return None,
        })
    }

    /// The `.npy` dtype: what `np.save` writes for `tensor.numpy()` (or, for types numpy
    /// lacks, for the ml_dtypes array: bfloat16 `<V2`, float8 `<V1`).
    pub fn npy(self) -> Dtype {
        use TorchDtype::*;
        let plain = |kind, size| Dtype::plain(kind, ByteOrder::Little, size);
        let void = |size| Dtype::Plain {
            kind: 'V',
            order: ByteOrder::Little,
            size,
        };
        match self {
            F64 => plain('f', 8),
            F32 => plain('f', 4),
            F16 => plain('f', 2),
            I64 => plain('i', 8),
            I32 => plain('i', 4),
            I16 => plain('i', 2),
            I8 => plain('i', 1),
            U64 => plain('u', 8),
            U32 => plain('u', 4),
            U16 => plain('u', 2),
            U8 => plain('u', 1),
            Bool => plain('b', 1),
            C64 => plain('c', 8),
            C128 => plain('c', 16),
            BF16 => void(2),
            F8E4M3 | F8E5M2 | F8E4M3Fnuz | F8E5M2Fnuz => void(1),
        }
    }

    /// The real type's name (`user.arrfs.dtype_logical`) when the `.npy` dtype is void.
    pub fn logical(self) -> Option<&'static str> {
        use TorchDtype::*;
        match self {
            BF16 => Some("bfloat16"),
            F8E4M3 => Some("float8_e4m3fn"),
            F8E5M2 => Some("float8_e5m2"),
            F8E4M3Fnuz => Some("float8_e4m3fnuz"),
            F8E5M2Fnuz => Some("float8_e5m2fnuz"),
            _ => None,
        }
    }

    fn itemsize(self) -> u64 {
        self.npy().itemsize() as u64
    }
}

/// The torch globals the machine gives meaning to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchGlobal {
    /// `_rebuild_tensor(storage, offset, size, stride)`.
    RebuildTensor,
    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `_rebuild_tensor_v3(..., hooks, dtype[, metadata])`: an untyped storage and a dtype.
    RebuildTensorV3,
    /// `_rebuild_parameter(data, requires_grad, hooks)` and `..._with_state`: the data.
    RebuildParameter,
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`: `func(*args)`.
    RebuildFromType,
    /// A typed storage class: the persistent id's storage type.
    Storage(TorchDtype),
    UntypedStorage,
    Dtype(TorchDtype),
    Size,
    Device,
    /// `torch.Tensor`, `torch.nn.Parameter`: classes `_rebuild_from_type_v2` names.
    TensorClass,
    /// Known, but not shown as an array (quantized, sparse, ... tensors).
    Unsupported(&'static str),
}

/// The allow-listed torch global `module.name`, or None.
pub fn lookup(module: &str, name: &str) -> Option<TorchGlobal> {
    use TorchGlobal::*;
    Some(match (module, name) {
        ("torch._utils", "_rebuild_tensor") => RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            RebuildParameter
        }
        ("torch._tensor", "_rebuild_from_type_v2") => RebuildFromType,
        ("torch._utils", "_rebuild_qtensor") => Unsupported("quantized tensor"),
        ("torch._utils", "_rebuild_sparse_tensor" | "_rebuild_sparse_csr_tensor") => {
            Unsupported("sparse tensor")
        }
        ("torch._utils", "_rebuild_nested_tensor") => Unsupported("nested tensor"),
        ("torch._utils", "_rebuild_meta_tensor_no_storage") => Unsupported("meta tensor (no data)"),
        ("torch._utils", "_rebuild_wrapper_subclass" | "_rebuild_device_tensor_from_numpy") => {
            Unsupported("tensor subclass or device tensor")
        }
        ("torch.storage", "UntypedStorage") | ("torch", "UntypedStorage") => UntypedStorage,
        ("torch", "Size") => Size,
        ("torch", "device") => Device,
        ("torch", "Tensor") | ("torch._tensor", "Tensor") => TensorClass,
        ("torch.nn.parameter", "Parameter") => TensorClass,
        ("torch" | "torch.cuda", storage) if storage.ends_with("Storage") => {
            match TorchDtype::from_storage_name(storage) {
                Some(dtype) => Storage(dtype),
                None => Unsupported("storage of a type numpy cannot show"),
            }
        }
        ("torch", dtype) => Dtype(TorchDtype::from_dtype_name(dtype)?),
        _ => return None,
    })
}

/// A storage named by a persistent id: member `*/data/KEY` of the checkpoint.
#[derive(Debug)]
pub struct StorageRef {
    pub key: String,
    /// None for an untyped storage (bytes; the tensor names its dtype).
    pub dtype: Option<TorchDtype>,
    /// Elements of `dtype` (bytes when untyped).
    pub numel: u64,
}

/// How a tensor's elements lie in its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One run of bytes (C or Fortran order, as the header says): a `pread`.
    Contiguous,
    /// Anything else: gathered element by element into C order.
    Strided { shape: Vec<u64>, strides: Vec<u64> },
}

/// A tensor's bytes: a view into storage `key`.
#[derive(Debug)]
pub struct TensorData {
    pub key: Arc<str>,
    /// Byte offset of the first element in the storage.
    pub offset: u64,
    /// Bytes the view spans in the storage, from `offset` (for the bounds check).
    pub span: u64,
    pub itemsize: u64,
    pub layout: Layout,
}

/// The persistent id `('storage', storage_type, key, location, numel)`.
pub fn storage(heap: &Heap, pid: &Value) -> Result<Object, NotArray> {
    let items = heap
        .sequence(pid)
        .ok_or(NotArray::Malformed("persistent id is not a tuple"))?;
    let [tag, kind, key, _location, numel, ..] = items else {
        return Err(NotArray::Malformed("persistent id of the wrong length"));
    };
    if heap.text(tag).as_deref() != Some("storage") {
        return Err(NotArray::Unsupported("persistent id that is not a storage"));
    }
    let dtype = match kind {
        Value::Global(super::value::Global::Torch(TorchGlobal::Storage(dtype))) => Some(*dtype),
        Value::Global(super::value::Global::Torch(TorchGlobal::UntypedStorage)) => None,
        Value::Opaque(why) => return Err(NotArray::Opaque(why.clone())),
        _ => return Err(NotArray::Unsupported("storage of an unknown type")),
    };
    let key = heap
        .text(key)
        .ok_or(NotArray::Malformed("storage key is not a string"))?;
    let Value::Int(numel) = numel else {
        return Err(NotArray::Malformed("storage size is not an int"));
    };
    let numel = u64::try_from(*numel).map_err(|_| NotArray::Malformed("negative storage size"))?;
    Ok(Object::Storage(Arc::new(StorageRef { key, dtype, numel })))
}

/// What a call of a torch global makes.
pub enum Made {
    Value(Value),
    Object(Object),
}

fn opaque(why: impl Into<String>) -> Made {
    Made::Value(Value::opaque(why))
}

/// Interprets a call of an allow-listed torch global.
pub fn call(heap: &Heap, global: TorchGlobal, args: &[Value]) -> Made {
    use TorchGlobal::*;
    match global {
        RebuildTensor | RebuildTensorV2 => tensor(heap, args, None),
        RebuildTensorV3 => match args.get(6) {
            Some(Value::Global(super::value::Global::Torch(Dtype(dtype)))) => {
                tensor(heap, args, Some(*dtype))
            }
            _ => opaque("tensor of a dtype numpy cannot show"),
        },
        RebuildParameter => match args.first() {
            Some(data) => Made::Value(data.clone()),
            None => opaque("parameter without data"),
        },
        RebuildFromType => rebuild_from_type(heap, args),
        Size => match args.first() {
            Some(shape) => Made::Value(shape.clone()),
            None => opaque("torch.Size without dims"),
        },
        Device => Made::Value(device(heap, args)),
        Unsupported(what) => opaque(what),
        Storage(_) | UntypedStorage | Dtype(_) | TensorClass => {
            opaque(format!("call of torch global {global:?}"))
        }
    }
}

/// `_rebuild_from_type_v2(func, new_type, args, state)` for plain tensors and parameters.
fn rebuild_from_type(heap: &Heap, args: &[Value]) -> Made {
    let [Value::Global(super::value::Global::Torch(func)), class, inner, ..] = args else {
        return opaque("_rebuild_from_type_v2 with unexpected arguments");
    };
    if !matches!(
        class,
        Value::Global(super::value::Global::Torch(TorchGlobal::TensorClass))
    ) {
        return opaque("tensor subclass");
    }
    let inner = heap
        .sequence(inner)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    match func {
        TorchGlobal::RebuildFromType => opaque("nested _rebuild_from_type_v2"),
        other => call(heap, *other, &inner),
    }
}

/// `torch.device('cuda', 0)` -> the text `cuda:0`.
fn device(heap: &Heap, args: &[Value]) -> Value {
    let mut text = args.first().and_then(|v| heap.text(v)).unwrap_or_default();
    if let Some(Value::Int(index)) = args.get(1) {
        text = format!("{text}:{index}");
    }
    let bytes: Arc<[u8]> = Arc::from(text.into_bytes());
    Value::Str(Arc::new(Blob {
        offset: 0,
        len: bytes.len() as u64,
        encoding: Encoding::Decoded,
        inline: Some(bytes),
    }))
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`: an array whose bytes
/// are a view into the storage. `dtype` is v3's explicit dtype (untyped storages).
fn tensor(heap: &Heap, args: &[Value], dtype: Option<TorchDtype>) -> Made {
    match tensor_payload(heap, args, dtype) {
        Ok(array) => Made::Object(Object::Array(Arc::new(array))),
        Err(why) => opaque(why.to_string()),
    }
}

fn tensor_payload(
    heap: &Heap,
    args: &[Value],
    dtype: Option<TorchDtype>,
) -> Result<ArrayPayload, NotArray> {
    use NotArray::Malformed;
    // An argument the machine left opaque (a global off the allow-list): say which.
    if let Some(Value::Opaque(why)) = args.iter().take(4).find(|a| matches!(a, Value::Opaque(_))) {
        return Err(NotArray::Opaque(why.clone()));
    }
    let [storage, Value::Int(offset), size, stride, ..] = args else {
        return Err(Malformed("tensor rebuilt with unexpected arguments"));
    };
    let storage = match (storage, heap.object(storage)) {
        (_, Some(Object::Storage(storage))) => storage.clone(),
        (Value::Opaque(why), _) => return Err(NotArray::Opaque(why.clone())),
        _ => return Err(Malformed("tensor without a storage")),
    };
    let dtype = dtype
        .or(storage.dtype)
        .ok_or(Malformed("untyped storage without a dtype"))?;
    let shape = heap.shape(size).ok_or(Malformed("bad tensor size"))?;
    let strides = heap.shape(stride).ok_or(Malformed("bad tensor stride"))?;
    if strides.len() != shape.len() {
        return Err(Malformed("tensor stride and size differ in length"));
    }
    let itemsize = dtype.itemsize();
    let offset = u64::try_from(*offset).map_err(|_| Malformed("negative storage offset"))?;
    let storage_bytes = match storage.dtype {
        Some(d) => storage.numel.checked_mul(d.itemsize()),
        None => Some(storage.numel),
    }
    .ok_or(Malformed("storage size overflows"))?;
    let span = span_bytes(&shape, &strides, itemsize).ok_or(Malformed("tensor view overflows"))?;
    let start = offset
        .checked_mul(itemsize)
        .ok_or(Malformed("storage offset overflows"))?;
    if start
        .checked_add(span)
        .is_none_or(|end| end > storage_bytes)
    {
        return Err(NotArray::PastStorage {
            start,
            span,
            storage: storage_bytes,
        });
    }
    let (layout, fortran) = layout(&shape, &strides);
    let mut array = ArrayPayload::new(
        header(dtype.npy(), shape, fortran)?,
        PayloadData::Tensor(TensorData {
            key: Arc::from(storage.key.as_str()),
            offset: start,
            span,
            itemsize,
            layout,
        }),
    );
    array.logical = dtype.logical();
    Ok(array)
}

/// Bytes from the first to one past the last element of a view (0 if it has no elements).
fn span_bytes(shape: &[u64], strides: &[u64], itemsize: u64) -> Option<u64> {
    if shape.contains(&0) {
        return Some(0);
    }
    let last = shape.iter().zip(strides).try_fold(0u64, |acc, (&n, &s)| {
        acc.checked_add((n - 1).checked_mul(s)?)
    })?;
    last.checked_add(1)?.checked_mul(itemsize)
}

/// Contiguous in C order, in Fortran order (as `np.save` writes a transposed matrix), or
/// neither (gathered into C order, as `np.save` writes other views).
fn layout(shape: &[u64], strides: &[u64]) -> (Layout, bool) {
    if is_dense(shape.iter().rev().zip(strides.iter().rev())) {
        return (Layout::Contiguous, false);
    }
    if is_dense(shape.iter().zip(strides)) {
        return (Layout::Contiguous, true);
    }
    let strided = Layout::Strided {
        shape: shape.to_vec(),
        strides: strides.to_vec(),
    };
    (strided, false)
}

/// Whether dims taken innermost first are packed with no gaps (dims of 1 do not count).
fn is_dense<'a>(dims: impl Iterator<Item = (&'a u64, &'a u64)>) -> bool {
    let mut expected = 1;
    for (&n, &s) in dims {
        if n == 0 {
            return true;
        }
        if n != 1 && s != expected {
            return false;
        }
        expected *= n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_of_views() {
        assert_eq!(layout(&[2, 3], &[3, 1]), (Layout::Contiguous, false));
        assert_eq!(layout(&[3, 2], &[1, 3]), (Layout::Contiguous, true));
        assert_eq!(layout(&[3, 1], &[1, 7]), (Layout::Contiguous, false));
        assert!(matches!(layout(&[6, 3], &[8, 3]).0, Layout::Strided { .. }));
        assert!(matches!(layout(&[3, 4], &[0, 1]).0, Layout::Strided { .. }));
    }

    #[test]
    fn spans() {
        assert_eq!(
            span_bytes(&[6, 3], &[8, 3], 4),
            Some((5 * 8 + 2 * 3 + 1) * 4)
        );
        assert_eq!(span_bytes(&[0, 3], &[8, 3], 4), Some(0));
        assert_eq!(span_bytes(&[], &[], 8), Some(8));
        assert_eq!(span_bytes(&[u64::MAX, 2], &[u64::MAX, 1], 8), None);
    }

    #[test]
    fn globals() {
        assert_eq!(
            lookup("torch", "FloatStorage"),
            Some(TorchGlobal::Storage(TorchDtype::F32))
        );
        assert_eq!(
            lookup("torch", "bfloat16"),
            Some(TorchGlobal::Dtype(TorchDtype::BF16))
        );
        assert_eq!(lookup("torch", "load"), None);
        assert_eq!(lookup("torch.serialization", "load"), None);
        assert_eq!(lookup("os", "system"), None);
    }
}
