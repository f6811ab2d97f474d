//! The pickle machine: runs an opcode stream of protocols 0-5 on our own stack and memo.
//! Nothing is imported or called. Globals on the allow-list ([`Global`]) are interpreted
//! here; any other makes the object built from it opaque. Limits on stack, marks, memo,
//! held values and nested streams bound the cost of a hostile stream.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::sync::Arc;

use super::numpy::{self, DtypeObject, JoblibWrapper, WrapperData};
use super::reader::{OpReader, ReadError};
use super::text;
use super::torch;
use super::value::{Blob, Encoding, Global, Heap, NotArray, ObjId, Object, Value};

/// Bounds on what one stream may make the machine hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub stack: usize,
    pub marks: usize,
    pub memo: usize,
    /// Values held by containers, plus objects (see [`Heap`]).
    pub cells: usize,
    /// joblib object arrays are pickle streams inside the stream.
    pub nested_streams: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            stack: 1 << 20,
            marks: 1 << 18,
            memo: 1 << 20,
            cells: 1 << 22,
            nested_streams: 1 << 16,
        }
    }
}

/// Why a stream could not be run to its STOP.
#[derive(Debug)]
pub enum MachineError {
    Truncated { at: u64 },
    Invalid { at: u64, cause: String },
    Limit { at: u64, what: String },
    Io(std::io::Error),
}

impl std::fmt::Display for MachineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MachineError::Truncated { at } => write!(f, "pickle truncated at byte {at}"),
            MachineError::Invalid { at, cause } => write!(f, "bad pickle at byte {at}: {cause}"),
            MachineError::Limit { at, what } => {
                write!(
                    f,
                    "pickle refused at byte {at}: {what} (hostile or corrupt stream?)"
                )
            }
            MachineError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<ReadError> for MachineError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated { at } => MachineError::Truncated { at },
            ReadError::Io(e) => MachineError::Io(e),
        }
    }
}

type Step<T = ()> = Result<T, MachineError>;

pub struct PickleMachine<R> {
    reader: OpReader<R>,
    pub heap: Heap,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    limits: Limits,
    nested_streams: usize,
    /// Start of the opcode being run, for messages.
    at: u64,
    /// Persistent ids name PyTorch storages (a `torch.save` checkpoint's `data.pkl`).
    torch_storages: bool,
}

impl<R: Read + Seek> PickleMachine<R> {
    pub fn new(reader: OpReader<R>, limits: Limits) -> PickleMachine<R> {
        PickleMachine {
            reader,
            heap: Heap::new(limits.cells),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            limits,
            nested_streams: 0,
            at: 0,
            torch_storages: false,
        }
    }

    /// Interprets persistent ids as PyTorch does in `torch.save` checkpoints: storages.
    pub fn with_torch_storages(mut self) -> Self {
        self.torch_storages = true;
        self
    }

    /// Runs opcodes up to STOP and returns the object it leaves.
    pub fn run(&mut self) -> Step<Value> {
        loop {
            self.at = self.reader.pos();
            let opcode = self.reader.byte()?;
            if opcode == op::STOP {
                return self.pop();
            }
            self.step(opcode)?;
        }
    }

    fn invalid<T>(&self, cause: impl Into<String>) -> Step<T> {
        Err(MachineError::Invalid {
            at: self.at,
            cause: cause.into(),
        })
    }

    fn limit<T>(&self, what: impl Into<String>) -> Step<T> {
        let what = what.into();
        log::warn!("pickle limit hit at byte {}: {what}", self.at);
        Err(MachineError::Limit { at: self.at, what })
    }

    fn step(&mut self, opcode: u8) -> Step {
        use op::*;
        match opcode {
            MARK => self.mark(),
            POP => self.pop_opcode(),
            POP_MARK => self.pop_mark().map(drop),
            DUP => self.dup(),
            // Scalars.
            NONE => self.push(Value::None),
            NEWTRUE => self.push(Value::Bool(true)),
            NEWFALSE => self.push(Value::Bool(false)),
            INT => self.int_line(),
            LONG => self.long_line(),
            FLOAT => self.float_line(),
            BININT => self.bin_int::<4>(),
            BININT1 => self.bin_int::<1>(),
            BININT2 => self.bin_int::<2>(),
            LONG1 => self.long_bytes::<1>(),
            LONG4 => self.long_bytes::<4>(),
            BINFLOAT => self.bin_float(),
            // Strings and bytes.
            STRING => self.string_line(),
            BINSTRING => self.sized::<4>(Self::py2_str, Encoding::Raw),
            SHORT_BINSTRING => self.sized::<1>(Self::py2_str, Encoding::Raw),
            UNICODE => self.unicode_line(),
            BINUNICODE => self.sized::<4>(Value::Str, Encoding::Utf8),
            SHORT_BINUNICODE => self.sized::<1>(Value::Str, Encoding::Utf8),
            BINUNICODE8 => self.sized::<8>(Value::Str, Encoding::Utf8),
            BINBYTES => self.sized::<4>(Value::Bytes, Encoding::Raw),
            SHORT_BINBYTES => self.sized::<1>(Value::Bytes, Encoding::Raw),
            BINBYTES8 | BYTEARRAY8 => self.sized::<8>(Value::Bytes, Encoding::Raw),
            // Containers.
            EMPTY_LIST => self.new_object(Object::List(Vec::new())),
            EMPTY_TUPLE => self.new_object(Object::Tuple(Vec::new())),
            EMPTY_DICT => self.new_object(Object::Dict(Vec::new())),
            EMPTY_SET => self.new_object(Object::Set),
            LIST => self.collect_into(Object::List),
            TUPLE => self.collect_into(Object::Tuple),
            TUPLE1 => self.tuple_of(1),
            TUPLE2 => self.tuple_of(2),
            TUPLE3 => self.tuple_of(3),
            DICT => self.dict_from_mark(),
            FROZENSET => self.pop_mark().and_then(|_| self.new_object(Object::Set)),
            APPEND => self.append(),
            APPENDS => self.appends(),
            SETITEM => self.setitem(),
            SETITEMS => self.setitems(),
            ADDITEMS => self.pop_mark().map(drop),
            // The memo.
            PUT => self.line_index().and_then(|i| self.put(i)),
            BINPUT => self.index::<1>().and_then(|i| self.put(i)),
            LONG_BINPUT => self.index::<4>().and_then(|i| self.put(i)),
            MEMOIZE => self.put(self.memo.len() as u64),
            GET => self.line_index().and_then(|i| self.get(i)),
            BINGET => self.index::<1>().and_then(|i| self.get(i)),
            LONG_BINGET => self.index::<4>().and_then(|i| self.get(i)),
            // Globals and calls: interpreted from the allow-list, never run.
            GLOBAL => self.global_lines(),
            STACK_GLOBAL => self.stack_global(),
            REDUCE => self.reduce(),
            NEWOBJ => self.new_obj(),
            NEWOBJ_EX => self.new_obj_ex(),
            OBJ => self.obj(),
            INST => self.inst(),
            BUILD => self.build(),
            // Framing, buffers, persistent ids, extensions.
            PROTO => self.proto(),
            // Frames only group opcodes for buffering; positions stay absolute.
            FRAME => self.reader.array::<8>().map(drop).map_err(Into::into),
            READONLY_BUFFER => Ok(()),
            NEXT_BUFFER => self.push(Value::opaque("out-of-band buffer (protocol 5 NEXT_BUFFER)")),
            PERSID => self
                .reader
                .line()
                .map_err(Into::into)
                .and_then(|_| self.persistent()),
            BINPERSID => self.pop().and_then(|pid| self.persistent_id(pid)),
            EXT1 => self.extension::<1>(),
            EXT2 => self.extension::<2>(),
            EXT4 => self.extension::<4>(),
            _ => self.invalid(format!("unknown opcode {opcode:#04x}")),
        }
    }

    // --- the stack ---

    fn push(&mut self, value: Value) -> Step {
        if self.stack.len() >= self.limits.stack {
            return self.limit(format!("stack deeper than {} values", self.limits.stack));
        }
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> Step<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.invalid("pop from an empty stack");
        }
        self.stack
            .pop()
            .map_or_else(|| self.invalid("empty stack"), Ok)
    }

    fn top_mut(&mut self) -> Step<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.invalid("empty stack");
        }
        let at = self.at;
        self.stack.last_mut().ok_or(MachineError::Invalid {
            at,
            cause: "empty stack".into(),
        })
    }

    fn mark(&mut self) -> Step {
        if self.marks.len() >= self.limits.marks {
            return self.limit(format!("more than {} nested MARKs", self.limits.marks));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    /// The values pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Step<Vec<Value>> {
        let Some(start) = self.marks.pop() else {
            return self.invalid("no MARK on the stack");
        };
        Ok(self.stack.split_off(start.min(self.stack.len())))
    }

    /// POP; on an empty frame it removes the MARK, as protocol 0 writers rely on.
    fn pop_opcode(&mut self) -> Step {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() > floor {
            self.pop().map(drop)
        } else {
            self.pop_mark().map(drop)
        }
    }

    fn dup(&mut self) -> Step {
        let top = self.top_mut()?.clone();
        self.push(top)
    }

    fn new_object(&mut self, object: Object) -> Step {
        let id = self.alloc(object)?;
        self.push(Value::Obj(id))
    }

    fn alloc(&mut self, object: Object) -> Step<ObjId> {
        match self.heap.alloc(object) {
            Some(id) => Ok(id),
            None => self.limit(format!("more than {} values held", self.limits.cells)),
        }
    }

    fn charge(&mut self, n: usize) -> Step {
        if self.heap.charge(n) {
            Ok(())
        } else {
            self.limit(format!("more than {} values held", self.limits.cells))
        }
    }

    // --- scalars ---

    fn text_line(&mut self) -> Step<String> {
        let line = self.reader.line()?;
        if !line.is_complete() {
            return self.invalid("argument line too long");
        }
        Ok(String::from_utf8_lossy(&line.head)
            .trim_end_matches('\r')
            .to_string())
    }

    fn int_line(&mut self) -> Step {
        let text = self.text_line()?;
        let value = match text.as_str() {
            "00" => Value::Bool(false),
            "01" => Value::Bool(true),
            _ => self.parse_int(&text)?,
        };
        self.push(value)
    }

    fn long_line(&mut self) -> Step {
        let text = self.text_line()?;
        let value = self.parse_int(text.trim_end_matches('L'))?;
        self.push(value)
    }

    fn parse_int(&self, text: &str) -> Step<Value> {
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return self.invalid(format!("bad integer {text:?}"));
        }
        Ok(text.parse().map_or(Value::BigInt, Value::Int))
    }

    fn float_line(&mut self) -> Step {
        let text = self.text_line()?;
        match text.parse::<f64>() {
            Ok(x) => self.push(Value::Float(x)),
            Err(_) => self.invalid(format!("bad float {text:?}")),
        }
    }

    fn bin_int<const N: usize>(&mut self) -> Step {
        let bytes = self.reader.array::<N>()?;
        let value = match N {
            4 => i64::from(i32::from_le_bytes(bytes_to(&bytes))),
            _ => bytes
                .iter()
                .rev()
                .fold(0i64, |acc, &b| (acc << 8) | i64::from(b)),
        };
        self.push(Value::Int(value))
    }

    /// LONG1/LONG4: little-endian two's complement of a declared length.
    fn long_bytes<const N: usize>(&mut self) -> Step {
        let len = self.length::<N>()?;
        let blob = self.reader.blob(len, Encoding::Raw)?;
        let value = match blob.inline.as_deref() {
            Some(bytes) if bytes.len() <= 8 => Value::Int(twos_complement(bytes)),
            _ => Value::BigInt,
        };
        self.push(value)
    }

    fn bin_float(&mut self) -> Step {
        let bytes = self.reader.array::<8>()?;
        self.push(Value::Float(f64::from_be_bytes(bytes)))
    }

    /// A declared length of N little-endian bytes (signed for BINSTRING's 4 bytes).
    fn length<const N: usize>(&mut self) -> Step<u64> {
        let bytes = self.reader.array::<N>()?;
        let len = bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        Ok(len)
    }

    fn sized<const N: usize>(&mut self, make: fn(Arc<Blob>) -> Value, encoding: Encoding) -> Step {
        let len = self.length::<N>()?;
        let blob = self.reader.blob(len, encoding)?;
        self.push(make(Arc::new(blob)))
    }

    fn py2_str(blob: Arc<Blob>) -> Value {
        Value::Py2Str(blob)
    }

    /// Protocol 0 `STRING`: a quoted Python 2 literal; small ones are decoded here.
    fn string_line(&mut self) -> Step {
        let line = self.reader.line()?;
        if !line.is_complete() {
            return self.push(Value::opaque("protocol 0 string longer than 4 KiB"));
        }
        let Some(bytes) = text::string_literal(line.head.trim_ascii_end()) else {
            return self.invalid("bad STRING literal");
        };
        self.push(Value::Py2Str(Arc::new(Blob {
            offset: line.offset,
            len: line.len,
            encoding: Encoding::Decoded,
            inline: Some(Arc::from(bytes)),
        })))
    }

    /// Protocol 0 `UNICODE`: raw-unicode-escape text up to the newline.
    fn unicode_line(&mut self) -> Step {
        let line = self.reader.line()?;
        let inline = line.is_complete().then(|| Arc::from(line.head));
        self.push(Value::Str(Arc::new(Blob {
            offset: line.offset,
            len: line.len,
            encoding: Encoding::RawUnicodeEscape,
            inline,
        })))
    }

    // --- containers ---

    fn collect_into(&mut self, make: fn(Vec<Value>) -> Object) -> Step {
        let items = self.pop_mark()?;
        self.new_object(make(items))
    }

    fn tuple_of(&mut self, n: usize) -> Step {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return self.invalid("tuple from an empty stack");
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.new_object(Object::Tuple(items))
    }

    fn dict_from_mark(&mut self) -> Step {
        let items = self.pop_mark()?;
        let pairs = self.pairs(items)?;
        self.new_object(Object::Dict(pairs))
    }

    fn pairs(&self, items: Vec<Value>) -> Step<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return self.invalid("odd number of dict items");
        }
        let mut iter = items.into_iter();
        let mut pairs = Vec::new();
        while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
            pairs.push((k, v));
        }
        Ok(pairs)
    }

    fn append(&mut self) -> Step {
        let item = self.pop()?;
        self.extend_top(vec![item])
    }

    fn appends(&mut self) -> Step {
        let items = self.pop_mark()?;
        self.extend_top(items)
    }

    /// Adds items to the list (or set) on top; appends to opaque objects are dropped.
    fn extend_top(&mut self, items: Vec<Value>) -> Step {
        self.charge(items.len())?;
        let target = self.top_mut()?.clone();
        match self.heap.object_mut_of(&target) {
            Some(Object::List(list)) => list.extend(items),
            Some(Object::Set) | None => {}
            Some(_) => return self.invalid("append to a non-list"),
        }
        Ok(())
    }

    fn setitem(&mut self) -> Step {
        let value = self.pop()?;
        let key = self.pop()?;
        self.set_items(vec![(key, value)])
    }

    fn setitems(&mut self) -> Step {
        let items = self.pop_mark()?;
        let pairs = self.pairs(items)?;
        self.set_items(pairs)
    }

    fn set_items(&mut self, pairs: Vec<(Value, Value)>) -> Step {
        self.charge(2 * pairs.len())?;
        let target = self.top_mut()?.clone();
        match self.heap.object_mut_of(&target) {
            Some(Object::Dict(dict)) => dict.extend(pairs),
            None => {}
            Some(_) => return self.invalid("setitem on a non-dict"),
        }
        Ok(())
    }

    // --- memo ---

    fn index<const N: usize>(&mut self) -> Step<u64> {
        self.length::<N>()
    }

    fn line_index(&mut self) -> Step<u64> {
        let text = self.text_line()?;
        text.parse()
            .map_or_else(|_| self.invalid("bad memo index"), Ok)
    }

    fn put(&mut self, index: u64) -> Step {
        if self.memo.len() >= self.limits.memo && !self.memo.contains_key(&index) {
            return self.limit(format!("memo larger than {} entries", self.limits.memo));
        }
        let top = self.top_mut()?.clone();
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u64) -> Step {
        match self.memo.get(&index) {
            Some(value) => self.push(value.clone()),
            None => self.invalid(format!("memo entry {index} missing")),
        }
    }

    // --- globals and calls ---

    fn global_lines(&mut self) -> Step {
        let module = self.text_line()?;
        let name = self.text_line()?;
        self.push(global_value(&module, &name))
    }

    fn stack_global(&mut self) -> Step {
        let name = self.pop()?;
        let module = self.pop()?;
        match (self.heap.text(&module), self.heap.text(&name)) {
            (Some(module), Some(name)) => self.push(global_value(&module, &name)),
            _ => self.invalid("STACK_GLOBAL without strings"),
        }
    }

    fn args_of(&self, args: &Value) -> Vec<Value> {
        self.heap
            .sequence(args)
            .map(<[Value]>::to_vec)
            .unwrap_or_default()
    }

    fn reduce(&mut self) -> Step {
        let args = self.pop()?;
        let callable = self.pop()?;
        let args = self.args_of(&args);
        let result = self.call(&callable, args)?;
        self.push(result)
    }

    fn new_obj(&mut self) -> Step {
        let args = self.pop()?;
        let class = self.pop()?;
        let args = self.args_of(&args);
        let result = self.instantiate(&class, args)?;
        self.push(result)
    }

    fn new_obj_ex(&mut self) -> Step {
        self.pop()?;
        self.new_obj()
    }

    /// Protocol 0/1 `OBJ`: MARK class args... OBJ.
    fn obj(&mut self) -> Step {
        let mut items = self.pop_mark()?.into_iter();
        let Some(class) = items.next() else {
            return self.invalid("OBJ without a class");
        };
        let result = self.instantiate(&class, items.collect())?;
        self.push(result)
    }

    /// Protocol 0 `INST`: module and name lines, MARK args... INST.
    fn inst(&mut self) -> Step {
        let module = self.text_line()?;
        let name = self.text_line()?;
        let args = self.pop_mark()?;
        let result = self.instantiate(&global_value(&module, &name), args)?;
        self.push(result)
    }

    fn instantiate(&mut self, class: &Value, args: Vec<Value>) -> Step<Value> {
        match class {
            Value::Global(Global::JoblibWrapper) => self.object(Object::Wrapper(JoblibWrapper)),
            _ => self.call(class, args),
        }
    }

    fn object(&mut self, object: Object) -> Step<Value> {
        self.alloc(object).map(Value::Obj)
    }

    /// Interprets a call of an allow-listed global; anything else is opaque.
    fn call(&mut self, callable: &Value, args: Vec<Value>) -> Step<Value> {
        let global = match callable {
            Value::Global(global) => *global,
            Value::Opaque(why) => return Ok(Value::Opaque(why.clone())),
            _ => return Ok(Value::opaque("call of a non-global object")),
        };
        match (global, args.as_slice()) {
            (Global::Reconstruct, [Value::Global(Global::Ndarray), ..]) => {
                self.object(Object::PendingArray)
            }
            (Global::Reconstruct, _) => Ok(Value::opaque("ndarray subclass")),
            (Global::Dtype, [code, ..]) => self.dtype(code),
            (Global::Scalar, _) => self.array(numpy::numpy_scalar(&self.heap, &args)),
            (Global::FromBuffer, _) => self.array(numpy::array_from_buffer(&self.heap, &args)),
            (Global::CodecsEncode, [text, encoding]) => Ok(self.latin1(text, encoding)),
            (Global::OrderedDict, _) => self.ordered_dict(args.first()),
            (Global::Set | Global::FrozenSet, _) => self.object(Object::Set),
            (Global::ByteArray, [data, ..]) => Ok(self.bytearray(data)),
            (Global::Complex, _) => Ok(complex(&args)),
            (Global::Bytes, []) => Ok(empty_bytes()),
            (Global::Reconstructor, [class, ..]) => self.instantiate(&class.clone(), Vec::new()),
            (Global::Torch(torch), _) => match torch::call(&self.heap, torch, &args) {
                torch::Made::Value(value) => Ok(value),
                torch::Made::Object(object) => self.object(object),
            },
            _ => Ok(Value::opaque(format!("unsupported call of {global:?}"))),
        }
    }

    fn dtype(&mut self, code: &Value) -> Step<Value> {
        match self.heap.text(code) {
            Some(code) => self.object(Object::Dtype(DtypeObject::from_code(&code))),
            None => Ok(Value::opaque("dtype without a type code")),
        }
    }

    fn array(&mut self, array: Result<numpy::ArrayPayload, NotArray>) -> Step<Value> {
        match array {
            Ok(array) => self.object(Object::Array(Arc::new(array))),
            Err(why) => Ok(Value::opaque(why.to_string())),
        }
    }

    /// `_codecs.encode(text, 'latin1')`: bytes whose stored form is that text.
    fn latin1(&self, text: &Value, encoding: &Value) -> Value {
        let codec = self.heap.text(encoding).map(|c| c.to_ascii_lowercase());
        match (text, codec.as_deref()) {
            (Value::Str(blob), Some("latin1" | "latin-1" | "iso-8859-1")) => {
                Value::Bytes(blob.clone())
            }
            _ => Value::opaque("_codecs.encode with another codec"),
        }
    }

    fn bytearray(&self, data: &Value) -> Value {
        match data {
            Value::Bytes(_) => data.clone(),
            _ => Value::opaque("bytearray of a non-bytes value"),
        }
    }

    fn ordered_dict(&mut self, items: Option<&Value>) -> Step<Value> {
        let pairs: Vec<(Value, Value)> = items
            .and_then(|v| self.heap.sequence(v))
            .unwrap_or_default()
            .iter()
            .filter_map(|pair| match self.heap.sequence(pair) {
                Some([k, v]) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect();
        self.object(Object::Dict(pairs))
    }

    fn dtype_state(&mut self, id: ObjId, state: &Value) {
        let Some(Object::Dtype(dtype)) = self.heap.get(id) else {
            return;
        };
        let mut dtype = dtype.clone();
        dtype.apply_state(&self.heap, state);
        if let Some(slot) = self.heap.get_mut(id) {
            *slot = Object::Dtype(dtype);
        }
    }

    /// BUILD: sets the state of the object on top of the stack.
    fn build(&mut self) -> Step {
        let state = self.pop()?;
        let Value::Obj(id) = self.top_mut()?.clone() else {
            return Ok(());
        };
        match self.heap.get(id) {
            Some(Object::Dtype(_)) => {
                self.dtype_state(id, &state);
                Ok(())
            }
            Some(Object::PendingArray) => {
                let array = numpy::array_from_state(&self.heap, &state);
                self.settle(id, array);
                Ok(())
            }
            Some(Object::Wrapper(_)) => self.wrapper_build(id, &state),
            _ => Ok(()),
        }
    }

    /// Turns object `id` into the array BUILD made of it, in place: memo references to it
    /// must see the array too.
    fn settle(&mut self, id: ObjId, array: Result<numpy::ArrayPayload, NotArray>) {
        let object = match array {
            Ok(array) => Object::Array(Arc::new(array)),
            Err(why) => Object::Failed(Arc::from(why.to_string())),
        };
        if let Some(slot) = self.heap.get_mut(id) {
            *slot = object;
        }
    }

    /// joblib writes each array's bytes right after its wrapper's BUILD: locate and skip
    /// them (or the nested pickle of an object array) so the stream goes on after them.
    fn wrapper_build(&mut self, id: ObjId, state: &Value) -> Step {
        match numpy::wrapper_data(&self.heap, state) {
            Ok(WrapperData::Bytes { header, aligned }) => {
                if aligned {
                    let padding = self.reader.byte()?;
                    self.reader.skip(u64::from(padding))?;
                }
                let offset = self.reader.pos();
                self.reader.skip(header.payload_len())?;
                let data = numpy::PayloadData::File { offset };
                let array = numpy::ArrayPayload::new(header, data).in_native_order();
                self.settle(id, Ok(array));
                Ok(())
            }
            Ok(WrapperData::NestedPickle) => {
                self.skip_nested_stream()?;
                let why = NotArray::Unsupported("object array (Python objects)");
                self.settle(id, Err(why));
                Ok(())
            }
            Err(why) => self.invalid(format!("joblib array wrapper: {why}")),
        }
    }

    /// Runs an embedded stream to its STOP on a fresh stack and memo, keeping nothing.
    fn skip_nested_stream(&mut self) -> Step {
        self.nested_streams += 1;
        if self.nested_streams > self.limits.nested_streams {
            return self.limit("too many nested pickle streams");
        }
        let stack = std::mem::take(&mut self.stack);
        let marks = std::mem::take(&mut self.marks);
        let memo = std::mem::take(&mut self.memo);
        let result = self.run();
        self.stack = stack;
        self.marks = marks;
        self.memo = memo;
        result.map(drop)
    }

    fn proto(&mut self) -> Step {
        match self.reader.byte()? {
            0..=5 => Ok(()),
            p => self.invalid(format!("pickle protocol {p} (newer than 5)")),
        }
    }

    /// BINPERSID: in a PyTorch checkpoint, a storage; anywhere else, opaque.
    fn persistent_id(&mut self, pid: Value) -> Step {
        if !self.torch_storages {
            return self.persistent();
        }
        match torch::storage(&self.heap, &pid) {
            Ok(storage) => self.new_object(storage),
            Err(why) => self.push(Value::opaque(why.to_string())),
        }
    }

    fn persistent(&mut self) -> Step {
        self.push(Value::opaque(
            "persistent id (needs the writer's own loader)",
        ))
    }

    fn extension<const N: usize>(&mut self) -> Step {
        self.length::<N>()?;
        self.push(Value::opaque("copyreg extension code"))
    }
}

fn global_value(module: &str, name: &str) -> Value {
    match Global::lookup(module, name) {
        Some(global) => Value::Global(global),
        None => {
            log::debug!("pickle global {module}.{name} is not on the allow-list: opaque");
            Value::opaque(format!("global {module}.{name} is not on the allow-list"))
        }
    }
}

/// `bytes()`: how protocol <= 2 writes `b''`.
fn empty_bytes() -> Value {
    Value::Bytes(Arc::new(Blob {
        offset: 0,
        len: 0,
        encoding: Encoding::Decoded,
        inline: Some(Arc::from([])),
    }))
}

fn complex(args: &[Value]) -> Value {
    let part = |v: Option<&Value>| match v {
        Some(Value::Float(x)) => Some(*x),
        Some(Value::Int(n)) => Some(*n as f64),
        None => Some(0.0),
        _ => None,
    };
    match (part(args.first()), part(args.get(1))) {
        (Some(re), Some(im)) => Value::Complex(re, im),
        _ => Value::opaque("complex of non-numbers"),
    }
}

fn bytes_to<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

fn twos_complement(bytes: &[u8]) -> i64 {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut out = if negative { [0xffu8; 8] } else { [0u8; 8] };
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    i64::from_le_bytes(out)
}

/// The pickle opcodes, by the names CPython's `pickletools` gives them.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    // Protocol 2.
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    // Protocol 3.
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    // Protocol 4.
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    // Protocol 5.
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}
