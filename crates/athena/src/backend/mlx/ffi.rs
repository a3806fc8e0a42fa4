//! The C ABI of `csrc/athena_mlx.h`, and [`Array`]: an owned MLX array whose operations return
//! typed errors. MLX is lazy, so an operation records work; [`Array::to_f32`] runs it. No C++
//! exception crosses into Rust: the shim turns each into an error string.

use std::ffi::CStr;
use std::os::raw::{c_char, c_float, c_int, c_void};
use std::ptr::NonNull;

use crate::error::{Error, Result};

#[repr(C)]
struct RawArray {
    _private: [u8; 0],
}

/// Element types that cross the boundary (`enum athena_mlx_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(super) enum Dtype {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    U32 = 3,
    I32 = 4,
}

extern "C" {
    fn athena_mlx_last_error() -> *const c_char;
    fn athena_mlx_version() -> *const c_char;
    fn athena_mlx_set_device(gpu: c_int) -> c_int;
    fn athena_mlx_gpu_available() -> c_int;
    fn athena_mlx_free(a: *mut RawArray);
    fn athena_mlx_from_data(
        data: *const c_void,
        shape: *const i32,
        ndim: usize,
        dtype: c_int,
    ) -> *mut RawArray;
    fn athena_mlx_ndim(a: *const RawArray) -> usize;
    fn athena_mlx_nbytes(a: *const RawArray) -> usize;
    fn athena_mlx_shape(a: *const RawArray, out: *mut i32, cap: usize);
    fn athena_mlx_read_f32(a: *const RawArray, out: *mut c_float, n: usize) -> c_int;
    fn athena_mlx_reshape(a: *const RawArray, shape: *const i32, ndim: usize) -> *mut RawArray;
    fn athena_mlx_transpose(a: *const RawArray, axes: *const i32, n: usize) -> *mut RawArray;
    fn athena_mlx_swapaxes(a: *const RawArray, i: c_int, j: c_int) -> *mut RawArray;
    fn athena_mlx_slice(
        a: *const RawArray,
        start: *const i32,
        stop: *const i32,
        ndim: usize,
    ) -> *mut RawArray;
    fn athena_mlx_concatenate(
        arrays: *const *const RawArray,
        n: usize,
        axis: c_int,
    ) -> *mut RawArray;
    fn athena_mlx_add(a: *const RawArray, b: *const RawArray) -> *mut RawArray;
    fn athena_mlx_multiply(a: *const RawArray, b: *const RawArray) -> *mut RawArray;
    fn athena_mlx_divide(a: *const RawArray, b: *const RawArray) -> *mut RawArray;
    fn athena_mlx_floor_divide(a: *const RawArray, b: *const RawArray) -> *mut RawArray;
    fn athena_mlx_negative(a: *const RawArray) -> *mut RawArray;
    fn athena_mlx_sigmoid(a: *const RawArray) -> *mut RawArray;
    fn athena_mlx_clip(a: *const RawArray, lo: c_float, hi: c_float) -> *mut RawArray;
    fn athena_mlx_sum(a: *const RawArray, axis: c_int, keepdims: c_int) -> *mut RawArray;
    fn athena_mlx_matmul(a: *const RawArray, b: *const RawArray) -> *mut RawArray;
    fn athena_mlx_addmm(
        c: *const RawArray,
        a: *const RawArray,
        b: *const RawArray,
    ) -> *mut RawArray;
    fn athena_mlx_quantized_matmul(
        x: *const RawArray,
        w: *const RawArray,
        scales: *const RawArray,
        biases: *const RawArray,
        group_size: c_int,
        bits: c_int,
    ) -> *mut RawArray;
    fn athena_mlx_dequantize(
        w: *const RawArray,
        scales: *const RawArray,
        biases: *const RawArray,
        group_size: c_int,
        bits: c_int,
    ) -> *mut RawArray;
    fn athena_mlx_gather_mm(
        a: *const RawArray,
        b: *const RawArray,
        rhs_indices: *const RawArray,
        sorted: c_int,
    ) -> *mut RawArray;
    #[allow(clippy::too_many_arguments)]
    fn athena_mlx_gather_qmm(
        x: *const RawArray,
        w: *const RawArray,
        scales: *const RawArray,
        biases: *const RawArray,
        rhs_indices: *const RawArray,
        group_size: c_int,
        bits: c_int,
        sorted: c_int,
    ) -> *mut RawArray;
    fn athena_mlx_rms_norm(
        x: *const RawArray,
        weight: *const RawArray,
        eps: c_float,
    ) -> *mut RawArray;
    fn athena_mlx_rope(
        x: *const RawArray,
        dims: c_int,
        traditional: c_int,
        base: c_float,
        scale: c_float,
        offset: c_int,
    ) -> *mut RawArray;
    fn athena_mlx_sdpa(
        q: *const RawArray,
        k: *const RawArray,
        v: *const RawArray,
        scale: c_float,
        causal: c_int,
    ) -> *mut RawArray;
    fn athena_mlx_softmax(a: *const RawArray, axis: c_int, precise: c_int) -> *mut RawArray;
    fn athena_mlx_argpartition(a: *const RawArray, kth: c_int, axis: c_int) -> *mut RawArray;
    fn athena_mlx_argsort(a: *const RawArray, axis: c_int) -> *mut RawArray;
    fn athena_mlx_take(a: *const RawArray, indices: *const RawArray, axis: c_int) -> *mut RawArray;
    fn athena_mlx_take_along_axis(
        a: *const RawArray,
        indices: *const RawArray,
        axis: c_int,
    ) -> *mut RawArray;
    fn athena_mlx_eval(arrays: *const *const RawArray, n: usize) -> c_int;
    fn athena_mlx_astype(a: *const RawArray, dtype: c_int) -> *mut RawArray;
    fn athena_mlx_quantize(
        w: *const RawArray,
        group_size: c_int,
        bits: c_int,
        out: *mut *mut RawArray,
    ) -> c_int;
    fn athena_mlx_gather_mm_t(
        x: *const RawArray,
        w: *const RawArray,
        rhs_indices: *const RawArray,
        sorted: c_int,
    ) -> *mut RawArray;
}

/// The shim's last error on this thread, as a typed error naming the operation.
fn last_error(op: &str) -> Error {
    // SAFETY: the shim returns a pointer to a NUL-terminated thread-local string that stays
    // valid until the next failing call on this thread; it is copied at once.
    let msg = unsafe { CStr::from_ptr(athena_mlx_last_error()) }
        .to_string_lossy()
        .into_owned();
    Error::tensor(op, format!("MLX: {msg}"))
}

fn check(op: &str, status: c_int) -> Result<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(last_error(op))
    }
}

/// The MLX version athena was compiled against.
pub(super) fn version() -> String {
    // SAFETY: a static NUL-terminated string owned by libmlx.
    unsafe { CStr::from_ptr(athena_mlx_version()) }
        .to_string_lossy()
        .into_owned()
}

/// Whether this MLX build has a usable GPU (Metal, or CUDA in CUDA builds).
pub(super) fn gpu_available() -> bool {
    // SAFETY: no arguments; the shim catches every exception.
    unsafe { athena_mlx_gpu_available() != 0 }
}

/// Makes the GPU or the CPU MLX's default device, after a test computation on it.
pub(super) fn set_device(gpu: bool) -> Result<()> {
    // SAFETY: plain value argument; the shim catches every exception.
    check("set_device", unsafe { athena_mlx_set_device(gpu as c_int) })
}

/// One MLX array, owned.
pub(super) struct Array(NonNull<RawArray>);

// SAFETY: an MLX array is a reference-counted handle (atomic counts) to immutable data once
// evaluated. athena builds and evaluates graphs under the backend's lock only, so no two
// threads run MLX operations at once; moving or sharing handles between threads is then sound.
unsafe impl Send for Array {}
// SAFETY: see `Send`: `&Array` only gives read access, and MLX calls are serialised.
unsafe impl Sync for Array {}

impl Drop for Array {
    fn drop(&mut self) {
        // SAFETY: the handle was made by the shim and is freed exactly once, here.
        unsafe { athena_mlx_free(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Array{:?}", self.shape())
    }
}

fn wrap(op: &str, p: *mut RawArray) -> Result<Array> {
    NonNull::new(p).map(Array).ok_or_else(|| last_error(op))
}

fn dims(shape: &[usize]) -> Result<Vec<i32>> {
    shape
        .iter()
        .map(|&d| {
            i32::try_from(d).map_err(|_| {
                Error::invalid(
                    "shape",
                    format!("dimension {d} is beyond MLX's 32-bit range"),
                )
            })
        })
        .collect()
}

/// Host element types an array can be made from.
pub(super) trait Element: Copy {
    /// The matching MLX dtype.
    const DTYPE: Dtype;
}
impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl Element for u32 {
    const DTYPE: Dtype = Dtype::U32;
}
impl Element for i32 {
    const DTYPE: Dtype = Dtype::I32;
}

macro_rules! unary {
    ($(#[$m:meta])* $name:ident, $f:ident) => {
        $(#[$m])*
        pub(super) fn $name(&self) -> Result<Array> {
            // SAFETY: `self` is a live handle; the shim catches every exception.
            wrap(stringify!($name), unsafe { $f(self.raw()) })
        }
    };
}

macro_rules! binary {
    ($(#[$m:meta])* $name:ident, $f:ident) => {
        $(#[$m])*
        pub(super) fn $name(&self, other: &Array) -> Result<Array> {
            // SAFETY: both handles are live; the shim catches every exception.
            wrap(stringify!($name), unsafe { $f(self.raw(), other.raw()) })
        }
    };
}

fn opt(a: Option<&Array>) -> *const RawArray {
    a.map_or(std::ptr::null(), Array::raw)
}

impl Array {
    fn raw(&self) -> *const RawArray {
        self.0.as_ptr()
    }

    /// A copy of `data` with `shape` (row-major).
    pub(super) fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Array> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::invalid(
                "shape",
                format!("{} elements for shape {shape:?}", data.len()),
            ));
        }
        let s = dims(shape)?;
        // SAFETY: `data` holds exactly `n` elements of `T::DTYPE` and outlives the call, which
        // copies them; `s` holds `shape.len()` dims.
        wrap("from_data", unsafe {
            athena_mlx_from_data(data.as_ptr().cast(), s.as_ptr(), s.len(), T::DTYPE as c_int)
        })
    }

    /// A 0-d array.
    pub(super) fn scalar<T: Element>(v: T) -> Result<Array> {
        Self::from_slice(&[v], &[])
    }

    /// The shape.
    pub(super) fn shape(&self) -> Vec<usize> {
        // SAFETY: live handle; the buffer holds `ndim` dims.
        unsafe {
            let n = athena_mlx_ndim(self.raw());
            let mut out = vec![0i32; n];
            athena_mlx_shape(self.raw(), out.as_mut_ptr(), n);
            out.into_iter().map(|d| d.max(0) as usize).collect()
        }
    }

    /// Bytes of the elements as stored (packed codes count as their words).
    pub(super) fn nbytes(&self) -> usize {
        // SAFETY: live handle.
        unsafe { athena_mlx_nbytes(self.raw()) }
    }

    /// Runs the computation and copies the result to the host, widened to float32, row-major.
    pub(super) fn to_f32(&self) -> Result<Vec<f32>> {
        let n: usize = self.shape().iter().product();
        let mut out = vec![0f32; n];
        // SAFETY: `out` holds `n` floats, the array's size; the shim checks it again.
        check("read_f32", unsafe {
            athena_mlx_read_f32(self.raw(), out.as_mut_ptr(), n)
        })?;
        Ok(out)
    }

    /// Reshaped to `shape` (one dimension may be inferred by MLX only if given as it is).
    pub(super) fn reshape(&self, shape: &[usize]) -> Result<Array> {
        let s = dims(shape)?;
        // SAFETY: live handle; `s` holds `s.len()` dims.
        wrap("reshape", unsafe {
            athena_mlx_reshape(self.raw(), s.as_ptr(), s.len())
        })
    }

    /// Axes permuted.
    pub(super) fn transpose(&self, axes: &[i32]) -> Result<Array> {
        // SAFETY: live handle; `axes` holds `axes.len()` entries.
        wrap("transpose", unsafe {
            athena_mlx_transpose(self.raw(), axes.as_ptr(), axes.len())
        })
    }

    /// Two axes swapped (negative axes count from the end).
    pub(super) fn swapaxes(&self, i: i32, j: i32) -> Result<Array> {
        // SAFETY: live handle.
        wrap("swapaxes", unsafe { athena_mlx_swapaxes(self.raw(), i, j) })
    }

    /// `[start, stop)` along every axis.
    pub(super) fn slice(&self, start: &[usize], stop: &[usize]) -> Result<Array> {
        let (a, b) = (dims(start)?, dims(stop)?);
        if a.len() != b.len() {
            return Err(Error::invalid("slice", "start and stop differ in length"));
        }
        // SAFETY: live handle; both buffers hold `a.len()` entries.
        wrap("slice", unsafe {
            athena_mlx_slice(self.raw(), a.as_ptr(), b.as_ptr(), a.len())
        })
    }

    /// Arrays joined along `axis`.
    pub(super) fn concatenate(arrays: &[&Array], axis: i32) -> Result<Array> {
        let raw: Vec<*const RawArray> = arrays.iter().map(|a| a.raw()).collect();
        // SAFETY: `raw` holds `raw.len()` live handles.
        wrap("concatenate", unsafe {
            athena_mlx_concatenate(raw.as_ptr(), raw.len(), axis)
        })
    }

    binary!(
        /// Elementwise sum (broadcasting).
        add, athena_mlx_add
    );
    binary!(
        /// Elementwise product (broadcasting).
        multiply, athena_mlx_multiply
    );
    binary!(
        /// Elementwise quotient (broadcasting).
        divide, athena_mlx_divide
    );
    binary!(
        /// Elementwise floor division (broadcasting).
        floor_divide, athena_mlx_floor_divide
    );
    binary!(
        /// Matrix product.
        matmul, athena_mlx_matmul
    );
    unary!(
        /// −x.
        negative, athena_mlx_negative
    );
    unary!(
        /// 1 / (1 + e^−x).
        sigmoid, athena_mlx_sigmoid
    );

    /// Clamped to [lo, hi].
    pub(super) fn clip(&self, lo: f32, hi: f32) -> Result<Array> {
        // SAFETY: live handle.
        wrap("clip", unsafe { athena_mlx_clip(self.raw(), lo, hi) })
    }

    /// Sum along `axis`.
    pub(super) fn sum(&self, axis: i32, keepdims: bool) -> Result<Array> {
        // SAFETY: live handle.
        wrap("sum", unsafe {
            athena_mlx_sum(self.raw(), axis, keepdims as c_int)
        })
    }

    /// `bias + self @ b`.
    pub(super) fn addmm(bias: &Array, a: &Array, b: &Array) -> Result<Array> {
        // SAFETY: live handles.
        wrap("addmm", unsafe {
            athena_mlx_addmm(bias.raw(), a.raw(), b.raw())
        })
    }

    /// `self @ dequantize(w).T` for an affine-quantized `w`.
    pub(super) fn quantized_matmul(
        &self,
        w: &Array,
        scales: &Array,
        biases: &Array,
        group_size: usize,
        bits: u8,
    ) -> Result<Array> {
        // SAFETY: live handles; plain values.
        wrap("quantized_matmul", unsafe {
            athena_mlx_quantized_matmul(
                self.raw(),
                w.raw(),
                scales.raw(),
                biases.raw(),
                group_size as c_int,
                bits as c_int,
            )
        })
    }

    /// The float matrix of an affine-quantized `w`.
    pub(super) fn dequantize(
        w: &Array,
        scales: &Array,
        biases: &Array,
        group_size: usize,
        bits: u8,
    ) -> Result<Array> {
        // SAFETY: live handles; plain values.
        wrap("dequantize", unsafe {
            athena_mlx_dequantize(
                w.raw(),
                scales.raw(),
                biases.raw(),
                group_size as c_int,
                bits as c_int,
            )
        })
    }

    /// `self @ b[rhs_indices]`, one matrix of the stack `b` per index.
    pub(super) fn gather_mm(&self, b: &Array, rhs: &Array, sorted: bool) -> Result<Array> {
        // SAFETY: live handles.
        wrap("gather_mm", unsafe {
            athena_mlx_gather_mm(self.raw(), b.raw(), rhs.raw(), sorted as c_int)
        })
    }

    /// `self @ w[rhs_indices].T` for a stack `w` [E, out, in] as stored: [`Self::gather_mm`]
    /// on `w` with its last two axes swapped, the same values bit for bit. On the CPU outside
    /// float32 only the experts picked are widened when they are fewer than E.
    pub(super) fn gather_mm_t(&self, w: &Array, rhs: &Array, sorted: bool) -> Result<Array> {
        // SAFETY: live handles.
        wrap("gather_mm", unsafe {
            athena_mlx_gather_mm_t(self.raw(), w.raw(), rhs.raw(), sorted as c_int)
        })
    }

    /// `self @ dequantize(w[rhs_indices]).T` for a quantized stack `w`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gather_qmm(
        &self,
        w: &Array,
        scales: &Array,
        biases: &Array,
        rhs: &Array,
        group_size: usize,
        bits: u8,
        sorted: bool,
    ) -> Result<Array> {
        // SAFETY: live handles; plain values.
        wrap("gather_qmm", unsafe {
            athena_mlx_gather_qmm(
                self.raw(),
                w.raw(),
                scales.raw(),
                biases.raw(),
                rhs.raw(),
                group_size as c_int,
                bits as c_int,
                sorted as c_int,
            )
        })
    }

    /// RMSNorm over the last axis, times `weight`.
    pub(super) fn rms_norm(&self, weight: Option<&Array>, eps: f32) -> Result<Array> {
        // SAFETY: live handles (the weight may be null).
        wrap("rms_norm", unsafe {
            athena_mlx_rms_norm(self.raw(), opt(weight), eps)
        })
    }

    /// Rotate-half RoPE over the first `dims` of the last axis, positions from `offset`
    /// times `scale`.
    pub(super) fn rope(&self, dims: usize, base: f32, scale: f32, offset: usize) -> Result<Array> {
        // SAFETY: live handle; plain values.
        wrap("rope", unsafe {
            athena_mlx_rope(self.raw(), dims as c_int, 0, base, scale, offset as c_int)
        })
    }

    /// softmax(q·kᵀ·scale [+ causal mask]) · v, heads on axis 1 (GQA broadcast by MLX).
    pub(super) fn sdpa(q: &Array, k: &Array, v: &Array, scale: f32, causal: bool) -> Result<Array> {
        // SAFETY: live handles.
        wrap("scaled_dot_product_attention", unsafe {
            athena_mlx_sdpa(q.raw(), k.raw(), v.raw(), scale, causal as c_int)
        })
    }

    /// Softmax along `axis`; `precise` computes in float32.
    pub(super) fn softmax(&self, axis: i32, precise: bool) -> Result<Array> {
        // SAFETY: live handle.
        wrap("softmax", unsafe {
            athena_mlx_softmax(self.raw(), axis, precise as c_int)
        })
    }

    /// Indices that partition `axis` around its `kth` smallest element.
    pub(super) fn argpartition(&self, kth: usize, axis: i32) -> Result<Array> {
        // SAFETY: live handle.
        wrap("argpartition", unsafe {
            athena_mlx_argpartition(self.raw(), kth as c_int, axis)
        })
    }

    /// Indices that sort `axis`.
    pub(super) fn argsort(&self, axis: i32) -> Result<Array> {
        // SAFETY: live handle.
        wrap("argsort", unsafe { athena_mlx_argsort(self.raw(), axis) })
    }

    /// Entries at `indices` along `axis`.
    pub(super) fn take(&self, indices: &Array, axis: i32) -> Result<Array> {
        // SAFETY: live handles.
        wrap("take", unsafe {
            athena_mlx_take(self.raw(), indices.raw(), axis)
        })
    }

    /// Entries at `indices` (same rank) along `axis`.
    pub(super) fn take_along_axis(&self, indices: &Array, axis: i32) -> Result<Array> {
        // SAFETY: live handles.
        wrap("take_along_axis", unsafe {
            athena_mlx_take_along_axis(self.raw(), indices.raw(), axis)
        })
    }

    /// Converted to `dtype` (rounded to nearest even when narrowing).
    pub(super) fn astype(&self, dtype: Dtype) -> Result<Array> {
        // SAFETY: live handle; the shim checks the dtype code.
        wrap("astype", unsafe {
            athena_mlx_astype(self.raw(), dtype as c_int)
        })
    }

    /// Runs the computations of `arrays` now, so that what they were computed from can be
    /// freed.
    pub(super) fn eval(arrays: &[&Array]) -> Result<()> {
        let raw: Vec<*const RawArray> = arrays.iter().map(|a| a.raw()).collect();
        // SAFETY: `raw` holds `raw.len()` live handles; the shim only reads them.
        check("eval", unsafe { athena_mlx_eval(raw.as_ptr(), raw.len()) })
    }

    /// `mx.quantize(self, group_size, bits)` (affine) along the last axis: the packed codes,
    /// the scales and the biases.
    pub(super) fn quantize(&self, group_size: usize, bits: u8) -> Result<(Array, Array, Array)> {
        let mut out = [std::ptr::null_mut::<RawArray>(); 3];
        // SAFETY: live handle; `out` holds the three slots the shim writes.
        let status = unsafe {
            athena_mlx_quantize(
                self.raw(),
                group_size as c_int,
                bits as c_int,
                out.as_mut_ptr(),
            )
        };
        // Each handle the shim made is owned here, even when a later one failed.
        let [w, s, b] = out.map(NonNull::new);
        let (w, s, b) = (w.map(Array), s.map(Array), b.map(Array));
        check("quantize", status)?;
        match (w, s, b) {
            (Some(w), Some(s), Some(b)) => Ok((w, s, b)),
            _ => Err(last_error("quantize")),
        }
    }
}

impl From<crate::options::ComputeDtype> for Dtype {
    fn from(d: crate::options::ComputeDtype) -> Self {
        match d {
            crate::options::ComputeDtype::F32 => Dtype::F32,
            crate::options::ComputeDtype::Bf16 => Dtype::BF16,
            crate::options::ComputeDtype::F16 => Dtype::F16,
        }
    }
}
