//! What the pickle machine builds: small [`Value`]s on its stack, and the containers and
//! numpy objects they point to in a [`Heap`]. Shared references (memo `GET`s) copy only the
//! handle, so a billion-laughs stream costs no more memory than its own length.

use std::sync::Arc;

use super::numpy::{ArrayPayload, DtypeObject, JoblibWrapper};
use super::torch::{StorageRef, TorchGlobal};

/// Index of an object in the [`Heap`].
pub type ObjId = usize;

#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond 64 bits: kept only as a marker (no array can hold it).
    BigInt,
    Float(f64),
    Complex(f64, f64),
    /// A Python 3 `str`; the blob says how its characters are stored in the file.
    Str(Arc<Blob>),
    /// `bytes` / `bytearray`, or the result of `_codecs.encode(str, 'latin1')`.
    Bytes(Arc<Blob>),
    /// A Python 2 `str`: bytes for array payloads, latin-1 text for names.
    Py2Str(Arc<Blob>),
    /// An allow-listed global (a class or function we interpret ourselves).
    Global(Global),
    Obj(ObjId),
    /// Anything we do not interpret, with the reason; it is left out of the tree.
    Opaque(Arc<str>),
}

impl Value {
    pub fn opaque(reason: impl Into<String>) -> Value {
        Value::Opaque(Arc::from(reason.into()))
    }
}

/// Why a pickled value is not shown as an array. Stored in the heap as its text
/// ([`Value::Opaque`], [`Object::Failed`]); shown as the entry's skip reason.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NotArray {
    /// A value the machine left opaque, or an array that failed to build: its reason.
    #[error("{0}")]
    Opaque(Arc<str>),
    /// The pickled structure is not what numpy, joblib or torch write: which part.
    #[error("{0}")]
    Malformed(&'static str),
    /// A state or argument tuple with the wrong number of items.
    #[error("{what} of {count} items")]
    Items { what: &'static str, count: usize },
    /// Valid, but not an array a `.npy` can hold: what it is.
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("object dtype (Python objects, not plain data)")]
    ObjectDtype,
    #[error("dtype {0:?} has no plain .npy form here")]
    NoNpyForm(String),
    #[error("{got} data bytes for {expected} expected")]
    DataBytes { got: u64, expected: u64 },
    #[error("wrapper without {0}")]
    WrapperWithout(&'static str),
    #[error("tensor view (offset {start}, {span} bytes) runs past its storage of {storage} bytes")]
    PastStorage { start: u64, span: u64, storage: u64 },
    /// The value itself is no array (`a set`, `a dtype`, `a str`, ...).
    #[error("{0} is not an array")]
    NotAnArray(&'static str),
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("entry limit of {0} reached")]
    EntryLimit(usize),
}

/// How the bytes of a string or bytes object are stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes themselves (`BINBYTES`, `BINSTRING`, ...).
    Raw,
    /// UTF-8 text (`BINUNICODE`); as bytes, each character is one latin-1 byte.
    Utf8,
    /// Python's raw-unicode-escape text (protocol 0 `UNICODE`); as bytes, latin-1.
    RawUnicodeEscape,
    /// Already decoded at parse time: `inline` holds the value (protocol 0 `STRING`).
    Decoded,
}

/// A string or bytes object: where it lies in the file, and its bytes if it is small.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Absolute file offset of the first stored byte.
    pub offset: u64,
    /// Stored length in the file (before decoding).
    pub len: u64,
    pub encoding: Encoding,
    /// The stored bytes, kept only for small blobs (names, dtype codes, scalars).
    pub inline: Option<Arc<[u8]>>,
}

impl Blob {
    /// The characters of a small text blob.
    pub fn text(&self) -> Option<String> {
        let raw = self.inline.as_deref()?;
        match self.encoding {
            Encoding::Utf8 => Some(String::from_utf8_lossy(raw).into_owned()),
            Encoding::Raw | Encoding::Decoded => Some(raw.iter().map(|&b| char::from(b)).collect()),
            Encoding::RawUnicodeEscape => super::text::raw_unicode_escape_text(raw),
        }
    }
}

/// The allow-list: the only globals the machine gives meaning to. Nothing is imported or
/// called; each is interpreted by our own code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    /// `numpy.core.multiarray._reconstruct`: an empty array, filled by BUILD.
    Reconstruct,
    Ndarray,
    Dtype,
    /// `numpy.core.multiarray.scalar(dtype, bytes)`.
    Scalar,
    /// `numpy.core.numeric._frombuffer(buf, dtype, shape, order)` (protocol 5).
    FromBuffer,
    /// `_codecs.encode(str, 'latin1')`: how Python 3 writes bytes at protocol <= 2.
    CodecsEncode,
    OrderedDict,
    Set,
    FrozenSet,
    ByteArray,
    /// `bytes()`: protocol <= 2 writes an empty `bytes` as a call.
    Bytes,
    Complex,
    /// `copyreg._reconstructor(cls, object, None)`: plain objects at protocol 0/1.
    Reconstructor,
    Object,
    /// `joblib.numpy_pickle.NumpyArrayWrapper`: array bytes follow its BUILD in the file.
    JoblibWrapper,
    /// PyTorch's rebuild functions, storage classes, dtypes, `Size`, `device`.
    Torch(TorchGlobal),
}

const NUMPY_MODULES: &[&str] = &[
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
];

impl Global {
    /// The allow-listed global `module.name`, or None: such globals make objects opaque.
    pub fn lookup(module: &str, name: &str) -> Option<Global> {
        let numpy_core = NUMPY_MODULES.contains(&module);
        let builtins = module == "builtins" || module == "__builtin__";
        Some(match (module, name) {
            (_, "_reconstruct") if numpy_core => Global::Reconstruct,
            (_, "scalar") if numpy_core => Global::Scalar,
            (_, "_frombuffer") if numpy_core => Global::FromBuffer,
            ("numpy", "ndarray") => Global::Ndarray,
            ("numpy", "dtype") => Global::Dtype,
            (_, "ndarray") if numpy_core => Global::Ndarray,
            (_, "dtype") if numpy_core => Global::Dtype,
            ("_codecs", "encode") => Global::CodecsEncode,
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("copyreg" | "copy_reg", "_reconstructor") => Global::Reconstructor,
            (_, "set") if builtins => Global::Set,
            (_, "frozenset") if builtins => Global::FrozenSet,
            (_, "bytearray") if builtins => Global::ByteArray,
            (_, "complex") if builtins => Global::Complex,
            (_, "bytes") if builtins => Global::Bytes,
            (_, "object") if builtins => Global::Object,
            ("joblib.numpy_pickle", "NumpyArrayWrapper") => Global::JoblibWrapper,
            _ => return super::torch::lookup(module, name).map(Global::Torch),
        })
    }
}

#[derive(Debug)]
pub enum Object {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A set or frozenset: never shown, so its items are not kept.
    Set,
    /// `_reconstruct(ndarray, ...)` before its BUILD.
    PendingArray,
    Array(Arc<ArrayPayload>),
    /// An array whose BUILD could not be interpreted, with the reason.
    Failed(Arc<str>),
    Dtype(DtypeObject),
    Wrapper(JoblibWrapper),
    /// A PyTorch storage named by a persistent id.
    Storage(Arc<StorageRef>),
}

/// Every container and numpy object of one stream, with a budget on what they hold.
#[derive(Debug, Default)]
pub struct Heap {
    objects: Vec<Object>,
    /// Values held by containers plus objects: the unit of the allocation limit.
    cells: usize,
    max_cells: usize,
}

impl Heap {
    pub fn new(max_cells: usize) -> Heap {
        Heap {
            max_cells,
            ..Heap::default()
        }
    }

    /// Counts `n` more held values; false once the budget is spent.
    pub fn charge(&mut self, n: usize) -> bool {
        self.cells = self.cells.saturating_add(n);
        self.cells <= self.max_cells
    }

    pub fn alloc(&mut self, object: Object) -> Option<ObjId> {
        let size = match &object {
            Object::List(v) | Object::Tuple(v) => v.len(),
            Object::Dict(items) => 2 * items.len(),
            _ => 0,
        };
        if !self.charge(size + 1) {
            return None;
        }
        self.objects.push(object);
        Some(self.objects.len() - 1)
    }

    pub fn get(&self, id: ObjId) -> Option<&Object> {
        self.objects.get(id)
    }

    pub fn get_mut(&mut self, id: ObjId) -> Option<&mut Object> {
        self.objects.get_mut(id)
    }

    /// The object a value points to.
    pub fn object(&self, value: &Value) -> Option<&Object> {
        match value {
            Value::Obj(id) => self.get(*id),
            _ => None,
        }
    }

    pub fn object_mut_of(&mut self, value: &Value) -> Option<&mut Object> {
        match value {
            Value::Obj(id) => self.get_mut(*id),
            _ => None,
        }
    }

    /// The items of a tuple or list value.
    pub fn sequence(&self, value: &Value) -> Option<&[Value]> {
        match self.object(value)? {
            Object::Tuple(items) | Object::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn text(&self, value: &Value) -> Option<String> {
        match value {
            Value::Str(blob) | Value::Py2Str(blob) => blob.text(),
            _ => None,
        }
    }

    /// A tuple or list of non-negative ints: an array shape.
    pub fn shape(&self, value: &Value) -> Option<Vec<u64>> {
        self.sequence(value)?
            .iter()
            .map(|v| match v {
                Value::Int(n) => u64::try_from(*n).ok(),
                _ => None,
            })
            .collect()
    }

    /// Looks `key` up in a dict value with string keys.
    pub fn dict_get(&self, dict: &Value, key: &str) -> Option<&Value> {
        let Some(Object::Dict(items)) = self.object(dict) else {
            return None;
        };
        items
            .iter()
            .find(|(k, _)| self.text(k).as_deref() == Some(key))
            .map(|(_, v)| v)
    }
}
