//! Reader for checkpoints written by Python's `torch.save` (the zip format
//! used since PyTorch 1.6): `archive/data.pkl` (a pickle) plus one raw
//! storage file per tensor under `archive/data/<key>`.
//!
//! libtorch's own readers cannot open these files (`torch::jit::load`
//! wants a TorchScript archive and `_load_parameters` asserts on an
//! `OrderedDict`), so this module interprets the subset of the pickle
//! protocol that `torch.save` emits for dictionaries of tensors. It never
//! executes code: every `GLOBAL` is just a name, and only the tensor
//! rebuild functions of `torch._utils` and `collections.OrderedDict` are
//! given a meaning; anything else becomes an opaque object that is skipped.
//!
//! The result is flattened into `name -> tensor` pairs: a nested dictionary
//! `{"model": {"a.weight": t}}` yields `model.a.weight`, so checkpoints that
//! wrap their state dict (`{"state_dict": ...}`, `{"model": ...}`) can be
//! handled by stripping a prefix afterwards.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

/// What makes a `torch.save` file unreadable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TorchFileError {
    /// The file or a member of its archive cannot be read.
    #[error("{0}")]
    Io(String),
    /// Not a `torch.save` zip archive, or one of an unsupported kind.
    #[error("{0}")]
    Format(String),
    /// The pickle stream is malformed or uses an unsupported construct.
    #[error("{0}")]
    Pickle(String),
    /// A tensor whose storage does not hold what its metadata says.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// The tensor's state-dict name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// The pickle machine's own messages.
impl From<String> for TorchFileError {
    fn from(message: String) -> Self {
        TorchFileError::Pickle(message)
    }
}

impl From<&str> for TorchFileError {
    fn from(message: &str) -> Self {
        TorchFileError::Pickle(message.to_string())
    }
}

use tch::{Kind, Tensor};

type Ptr = Rc<RefCell<Val>>;

/// A tensor as described by the pickle, before its storage is read.
#[derive(Debug, Clone)]
struct TensorSpec {
    storage_key: String,
    kind: Kind,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The Python values the reader understands. Some payloads are only kept
/// for `Debug` output when diagnosing an unusual checkpoint.
#[derive(Debug)]
#[allow(dead_code)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Ptr>),
    List(Vec<Ptr>),
    Dict(Vec<(Ptr, Ptr)>),
    Global(String, String),
    Storage {
        key: String,
        kind: Kind,
    },
    Tensor(TensorSpec),
    /// Any other reconstructed object (opaque, ignored when flattening).
    Object(String),
    Mark,
}

fn ptr(v: Val) -> Ptr {
    Rc::new(RefCell::new(v))
}

/// Element type of a legacy storage class such as `torch.HalfStorage`.
fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "DoubleStorage" => Kind::Double,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Ptr>,
    memo: HashMap<u32, Ptr>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TorchFileError> {
        if self.pos + n > self.data.len() {
            return Err(TorchFileError::Pickle(format!(
                "pickle ends early at byte {} (needed {n} more bytes)",
                self.pos
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TorchFileError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TorchFileError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, TorchFileError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, TorchFileError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> Result<String, TorchFileError> {
        let start = self.pos;
        while self.pos < self.data.len() && self.data[self.pos] != b'\n' {
            self.pos += 1;
        }
        if self.pos >= self.data.len() {
            return Err(TorchFileError::Pickle(
                "pickle ends inside a GLOBAL name".into(),
            ));
        }
        let s = String::from_utf8_lossy(&self.data[start..self.pos]).into_owned();
        self.pos += 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<String, TorchFileError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| {
            TorchFileError::Pickle(format!(
                "invalid UTF-8 string in pickle before byte {}",
                self.pos
            ))
        })
    }
    fn pop(&mut self) -> Result<Ptr, TorchFileError> {
        self.stack.pop().ok_or_else(|| {
            TorchFileError::Pickle(format!("pickle stack underflow at byte {}", self.pos))
        })
    }
    fn top(&self) -> Result<Ptr, TorchFileError> {
        self.stack.last().cloned().ok_or_else(|| {
            TorchFileError::Pickle(format!("pickle stack empty at byte {}", self.pos))
        })
    }
    /// Pops everything down to (and including) the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Ptr>, TorchFileError> {
        let mark = self
            .stack
            .iter()
            .rposition(|v| matches!(*v.borrow(), Val::Mark))
            .ok_or_else(|| {
                TorchFileError::Pickle(format!("pickle MARK missing at byte {}", self.pos))
            })?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }
    fn memo_get(&self, key: u32) -> Result<Ptr, TorchFileError> {
        self.memo.get(&key).cloned().ok_or_else(|| {
            TorchFileError::Pickle(format!(
                "pickle memo key {key} unknown at byte {}",
                self.pos
            ))
        })
    }

    fn run(&mut self) -> Result<Ptr, TorchFileError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.u64()?;
                }
                b'}' => self.stack.push(ptr(Val::Dict(Vec::new()))),
                b']' => self.stack.push(ptr(Val::List(Vec::new()))),
                b')' => self.stack.push(ptr(Val::Tuple(Vec::new()))),
                0x8f => self.stack.push(ptr(Val::List(Vec::new()))),
                b'(' => self.stack.push(ptr(Val::Mark)),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(ptr(Val::Tuple(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(TorchFileError::Pickle(format!("pickle stack underflow at byte {at}")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(ptr(Val::Tuple(items)));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(ptr(Val::List(items)));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = items.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect();
                    self.stack.push(ptr(Val::Dict(pairs)));
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    let v = self.top()?;
                    self.memo.insert(k, v);
                }
                b'r' => {
                    let k = self.u32()?;
                    let v = self.top()?;
                    self.memo.insert(k, v);
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    let v = self.top()?;
                    self.memo.insert(k, v);
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.u32()?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.utf8(n)?;
                    self.stack.push(ptr(Val::Str(s)));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.utf8(n)?;
                    self.stack.push(ptr(Val::Str(s)));
                }
                0x8d => {
                    let n = self.u64()? as usize;
                    let s = self.utf8(n)?;
                    self.stack.push(ptr(Val::Str(s)));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(ptr(Val::Bytes(b)));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(ptr(Val::Bytes(b)));
                }
                0x8e => {
                    let n = self.u64()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(ptr(Val::Bytes(b)));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(ptr(Val::Int(v)));
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.stack.push(ptr(Val::Int(v)));
                }
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.stack.push(ptr(Val::Int(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(TorchFileError::Pickle(format!("pickle integer of {n} bytes at byte {at} is too large")));
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(ptr(Val::Int(v)));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(ptr(Val::Float(f64::from_be_bytes(a))));
                }
                b'N' => self.stack.push(ptr(Val::None)),
                0x88 => self.stack.push(ptr(Val::Bool(true))),
                0x89 => self.stack.push(ptr(Val::Bool(false))),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(ptr(Val::Global(module, name)));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Val::Str(m), Val::Str(n)) = (&*module.borrow(), &*name.borrow()) else {
                        return Err(TorchFileError::Pickle(format!("pickle STACK_GLOBAL without names at byte {at}")));
                    };
                    self.stack.push(ptr(Val::Global(m.clone(), n.clone())));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(&pid.borrow()).map_err(|e| TorchFileError::Pickle(format!("{e} (byte {at})")))?;
                    self.stack.push(ptr(v));
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(&callable.borrow(), &args.borrow()).map_err(|e| TorchFileError::Pickle(format!("{e} (byte {at})")))?;
                    self.stack.push(ptr(v));
                }
                b'b' => {
                    // BUILD: object state (e.g. an OrderedDict's `_metadata`); not needed.
                    self.pop()?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    let mut guard = d.borrow_mut();
                    if let Val::Dict(items) = &mut *guard {
                        items.push((k, v));
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    let mut guard = d.borrow_mut();
                    if let Val::Dict(pairs) = &mut *guard {
                        for c in items.chunks(2).filter(|c| c.len() == 2) {
                            pairs.push((c[0].clone(), c[1].clone()));
                        }
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top()?;
                    let mut guard = l.borrow_mut();
                    if let Val::List(items) = &mut *guard {
                        items.push(v);
                    }
                }
                b'e' | 0x90 => {
                    let vs = self.pop_mark()?;
                    let l = self.top()?;
                    let mut guard = l.borrow_mut();
                    if let Val::List(items) = &mut *guard {
                        items.extend(vs);
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.stack.push(v);
                }
                b'.' => return self.pop(),
                other => {
                    return Err(TorchFileError::Pickle(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {at} (not a torch.save state dict?)"
                    )))
                }
            }
        }
    }
}

/// `('storage', torch.HalfStorage, '0', 'cpu', numel)` -> a storage reference.
fn persistent_load(pid: &Val) -> Result<Val, TorchFileError> {
    let Val::Tuple(items) = pid else {
        return Err(TorchFileError::Pickle(
            "persistent id is not a tuple".into(),
        ));
    };
    let items: Vec<_> = items.iter().map(|p| p.borrow()).collect();
    match items.as_slice() {
        [tag, class, key, ..] if matches!(&**tag, Val::Str(s) if s == "storage") => {
            let kind = match &**class {
                Val::Global(_, name) => storage_kind(name).ok_or_else(|| {
                    TorchFileError::Pickle(format!("unsupported storage type `{name}`"))
                })?,
                _ => {
                    return Err(TorchFileError::Pickle(
                        "storage without a storage type".into(),
                    ))
                }
            };
            let key = match &**key {
                Val::Str(s) => s.clone(),
                Val::Int(i) => i.to_string(),
                _ => return Err(TorchFileError::Pickle("storage without a key".into())),
            };
            Ok(Val::Storage { key, kind })
        }
        _ => Err(TorchFileError::Pickle(
            "unsupported persistent id (expected a ('storage', ...) tuple)".into(),
        )),
    }
}

fn int_tuple(v: &Val, what: &str) -> Result<Vec<i64>, TorchFileError> {
    match v {
        Val::Tuple(items) | Val::List(items) => items
            .iter()
            .map(|p| match &*p.borrow() {
                Val::Int(i) => Ok(*i),
                _ => Err(TorchFileError::Pickle(format!(
                    "tensor {what} holds a non-integer"
                ))),
            })
            .collect(),
        _ => Err(TorchFileError::Pickle(format!(
            "tensor {what} is not a tuple"
        ))),
    }
}

/// Applies the few callables `torch.save` state dicts use.
fn reduce(callable: &Val, args: &Val) -> Result<Val, TorchFileError> {
    let Val::Global(module, name) = callable else {
        return Ok(Val::Object("<call of a non-global>".into()));
    };
    let args: Vec<Ptr> = match args {
        Val::Tuple(items) => items.clone(),
        _ => Vec::new(),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Val::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(TorchFileError::Pickle(
                    "_rebuild_tensor with too few arguments".into(),
                ));
            }
            let (storage_key, kind) = match &*args[0].borrow() {
                Val::Storage { key, kind } => (key.clone(), *kind),
                _ => {
                    return Err(TorchFileError::Pickle(
                        "_rebuild_tensor without a storage".into(),
                    ))
                }
            };
            let offset = match &*args[1].borrow() {
                Val::Int(i) => *i,
                _ => {
                    return Err(TorchFileError::Pickle(
                        "_rebuild_tensor with a non-integer offset".into(),
                    ))
                }
            };
            let size = int_tuple(&args[2].borrow(), "size")?;
            let stride = int_tuple(&args[3].borrow(), "stride")?;
            Ok(Val::Tensor(TensorSpec {
                storage_key,
                kind,
                offset,
                size,
                stride,
            }))
        }
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => {
            let first = args.first().ok_or("_rebuild_parameter without data")?;
            let b = first.borrow();
            match &*b {
                Val::Tensor(spec) => Ok(Val::Tensor(spec.clone())),
                _ => Err(TorchFileError::Pickle(
                    "_rebuild_parameter without a tensor".into(),
                )),
            }
        }
        _ => Ok(Val::Object(format!("{module}.{name}"))),
    }
}

fn key_string(v: &Val) -> Option<String> {
    match v {
        Val::Str(s) => Some(s.clone()),
        Val::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn flatten(v: &Val, prefix: &str, out: &mut Vec<(String, TensorSpec)>) {
    match v {
        Val::Tensor(spec) => out.push((prefix.to_string(), spec.clone())),
        Val::Dict(items) => {
            for (k, v) in items {
                if let Some(k) = key_string(&k.borrow()) {
                    let name = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&v.borrow(), &name, out);
                }
            }
        }
        _ => {}
    }
}

/// Reads a zip-format `torch.save` file into `(name, tensor)` pairs on the
/// CPU, keeping each tensor's dtype. The caller adds the file name to
/// errors.
pub(crate) fn read_torch_zip(path: &Path) -> Result<Vec<(String, Tensor)>, TorchFileError> {
    let io = |what: &str, e: &dyn std::fmt::Display| TorchFileError::Io(format!("{what}: {e}"));
    let file = std::fs::File::open(path).map_err(|e| io("cannot open", &e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| TorchFileError::Format(format!("not a readable zip archive: {e}")))?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_string()))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| {
            TorchFileError::Format(
                "zip archive has no `<archive>/data.pkl` (not a torch.save file)".into(),
            )
        })?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        f.read_to_string(&mut s)
            .map_err(|e| io("reading `byteorder`", &e))?;
        if s.trim() != "little" {
            return Err(TorchFileError::Format(format!(
                "byte order `{}` is not supported (only little-endian)",
                s.trim()
            )));
        }
    }
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .map_err(|e| io(&pkl_name, &e))?
        .read_to_end(&mut pkl)
        .map_err(|e| io(&pkl_name, &e))?;
    let mut machine = Machine {
        data: &pkl,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    let root = machine.run()?;
    let mut specs = Vec::new();
    flatten(&root.borrow(), "", &mut specs);

    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for (name, spec) in specs {
        if !storages.contains_key(&spec.storage_key) {
            let entry = format!("{prefix}data/{}", spec.storage_key);
            let mut bytes = Vec::new();
            let storage_err = |e: &dyn std::fmt::Display| TorchFileError::Tensor {
                name: name.clone(),
                message: format!("storage `{entry}`: {e}"),
            };
            zip.by_name(&entry)
                .map_err(|e| storage_err(&e))?
                .read_to_end(&mut bytes)
                .map_err(|e| storage_err(&e))?;
            let elem = spec.kind.elt_size_in_bytes();
            if bytes.len() % elem != 0 {
                return Err(storage_err(&"a partial element"));
            }
            let storage =
                Tensor::f_from_data_size(&bytes, &[(bytes.len() / elem) as i64], spec.kind)
                    .map_err(|e| storage_err(&e))?;
            storages.insert(spec.storage_key.clone(), storage);
        }
        let storage = &storages[&spec.storage_key];
        let numel = storage.size()[0];
        let last = spec.offset
            + spec
                .size
                .iter()
                .zip(spec.stride.iter())
                .map(|(&n, &s)| if n == 0 { 0 } else { (n - 1) * s })
                .sum::<i64>();
        if spec.size.iter().all(|&n| n > 0) && (spec.offset < 0 || last >= numel) {
            return Err(TorchFileError::Tensor {
                name,
                message: format!(
                    "shape {:?} reaches element {last} of a storage of {numel} elements (truncated file?)",
                    spec.size
                ),
            });
        }
        let t = storage
            .f_as_strided(&spec.size, &spec.stride, Some(spec.offset))
            .and_then(|t| t.f_contiguous())
            .map_err(|e| TorchFileError::Tensor {
                name: name.clone(),
                message: e.to_string(),
            })?;
        out.push((name, t));
    }
    Ok(out)
}
