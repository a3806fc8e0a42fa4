// athena's C ABI over MLX (see athena_mlx.h). Every entry point catches C++ exceptions and
// turns them into the per-thread error string: none may unwind into Rust.

#include "athena_mlx.h"

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "mlx/mlx.h"

namespace mx = mlx::core;

struct athena_mlx_array {
  mx::array a;
};

namespace {

thread_local std::string last_error;

void fail(const char* op, const char* what) {
  last_error = std::string(op) + ": " + what;
}

template <typename F>
athena_mlx_array* make(const char* op, F&& f) {
  try {
    return new athena_mlx_array{f()};
  } catch (const std::exception& e) {
    fail(op, e.what());
  } catch (...) {
    fail(op, "unknown C++ exception");
  }
  return nullptr;
}

template <typename F>
int status(const char* op, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    fail(op, e.what());
  } catch (...) {
    fail(op, "unknown C++ exception");
  }
  return 1;
}

mx::Dtype dtype_of(int code) {
  switch (code) {
    case ATHENA_MLX_F32:
      return mx::float32;
    case ATHENA_MLX_F16:
      return mx::float16;
    case ATHENA_MLX_BF16:
      return mx::bfloat16;
    case ATHENA_MLX_U32:
      return mx::uint32;
    case ATHENA_MLX_I32:
      return mx::int32;
    default:
      throw std::invalid_argument("unknown dtype code " + std::to_string(code));
  }
}

mx::Shape shape_of(const int32_t* dims, size_t n) {
  return mx::Shape(dims, dims + n);
}

const mx::array& get(const athena_mlx_array* a) {
  if (a == nullptr) {
    throw std::invalid_argument("null array handle");
  }
  return a->a;
}

std::optional<mx::array> opt(const athena_mlx_array* a) {
  if (a == nullptr) {
    return std::nullopt;
  }
  return a->a;
}

} // namespace

extern "C" {

const char* athena_mlx_last_error(void) {
  return last_error.c_str();
}

const char* athena_mlx_version(void) {
  return mx::version();
}

int athena_mlx_gpu_available(void) {
  try {
    return mx::is_available(mx::Device(mx::Device::gpu)) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

int athena_mlx_set_device(int gpu) {
  return status("set_device", [&] {
    mx::Device d(gpu ? mx::Device::gpu : mx::Device::cpu);
    if (!mx::is_available(d)) {
      throw std::runtime_error(
          gpu ? "this MLX build has no usable GPU" : "the MLX CPU device is not available");
    }
    mx::set_default_device(d);
    auto x = mx::add(mx::array({1.0f, 2.0f}), mx::array(1.0f));
    mx::eval(x);
    if (x.data<float>()[1] != 3.0f) {
      throw std::runtime_error("a test computation gave a wrong result");
    }
  });
}

void athena_mlx_free(athena_mlx_array* a) {
  delete a;
}

athena_mlx_array* athena_mlx_from_data(
    const void* data, const int32_t* shape, size_t ndim, int dtype) {
  return make("from_data", [&]() -> mx::array {
    auto s = shape_of(shape, ndim);
    switch (dtype) {
      case ATHENA_MLX_F32:
        return mx::array(static_cast<const float*>(data), s, mx::float32);
      case ATHENA_MLX_F16:
        return mx::array(static_cast<const mx::float16_t*>(data), s, mx::float16);
      case ATHENA_MLX_BF16:
        return mx::array(static_cast<const mx::bfloat16_t*>(data), s, mx::bfloat16);
      case ATHENA_MLX_U32:
        return mx::array(static_cast<const uint32_t*>(data), s, mx::uint32);
      case ATHENA_MLX_I32:
        return mx::array(static_cast<const int32_t*>(data), s, mx::int32);
      default:
        throw std::invalid_argument("unknown dtype code " + std::to_string(dtype));
    }
  });
}

size_t athena_mlx_ndim(const athena_mlx_array* a) {
  return a == nullptr ? 0 : a->a.ndim();
}

size_t athena_mlx_nbytes(const athena_mlx_array* a) {
  return a == nullptr ? 0 : a->a.nbytes();
}

void athena_mlx_shape(const athena_mlx_array* a, int32_t* out, size_t cap) {
  if (a == nullptr) {
    return;
  }
  const auto& s = a->a.shape();
  for (size_t i = 0; i < s.size() && i < cap; ++i) {
    out[i] = s[i];
  }
}

int athena_mlx_eval(athena_mlx_array* const* arrays, size_t n) {
  return status("eval", [&] {
    std::vector<mx::array> v;
    v.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      v.push_back(get(arrays[i]));
    }
    mx::eval(v);
  });
}

int athena_mlx_read_f32(const athena_mlx_array* a, float* out, size_t n) {
  return status("read_f32", [&] {
    auto x = mx::contiguous(mx::astype(get(a), mx::float32));
    mx::eval(x);
    if (x.size() != n) {
      throw std::invalid_argument(
          "array has " + std::to_string(x.size()) + " elements, the buffer " +
          std::to_string(n));
    }
    if (!x.flags().row_contiguous) {
      throw std::runtime_error("array is not row-contiguous after contiguous()");
    }
    std::memcpy(out, x.data<float>(), n * sizeof(float));
  });
}

athena_mlx_array* athena_mlx_astype(const athena_mlx_array* a, int dtype) {
  return make("astype", [&] { return mx::astype(get(a), dtype_of(dtype)); });
}

athena_mlx_array* athena_mlx_reshape(
    const athena_mlx_array* a, const int32_t* shape, size_t ndim) {
  return make("reshape", [&] { return mx::reshape(get(a), shape_of(shape, ndim)); });
}

athena_mlx_array* athena_mlx_transpose(
    const athena_mlx_array* a, const int32_t* axes, size_t n) {
  return make("transpose", [&] {
    return mx::transpose(get(a), std::vector<int>(axes, axes + n));
  });
}

athena_mlx_array* athena_mlx_swapaxes(const athena_mlx_array* a, int i, int j) {
  return make("swapaxes", [&] { return mx::swapaxes(get(a), i, j); });
}

athena_mlx_array* athena_mlx_slice(
    const athena_mlx_array* a, const int32_t* start, const int32_t* stop, size_t ndim) {
  return make("slice", [&] {
    return mx::slice(get(a), shape_of(start, ndim), shape_of(stop, ndim));
  });
}

athena_mlx_array* athena_mlx_concatenate(
    const athena_mlx_array* const* arrays, size_t n, int axis) {
  return make("concatenate", [&] {
    std::vector<mx::array> v;
    v.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      v.push_back(get(arrays[i]));
    }
    return mx::concatenate(std::move(v), axis);
  });
}

athena_mlx_array* athena_mlx_add(const athena_mlx_array* a, const athena_mlx_array* b) {
  return make("add", [&] { return mx::add(get(a), get(b)); });
}

athena_mlx_array* athena_mlx_multiply(const athena_mlx_array* a, const athena_mlx_array* b) {
  return make("multiply", [&] { return mx::multiply(get(a), get(b)); });
}

athena_mlx_array* athena_mlx_divide(const athena_mlx_array* a, const athena_mlx_array* b) {
  return make("divide", [&] { return mx::divide(get(a), get(b)); });
}

athena_mlx_array* athena_mlx_floor_divide(
    const athena_mlx_array* a, const athena_mlx_array* b) {
  return make("floor_divide", [&] { return mx::floor_divide(get(a), get(b)); });
}

athena_mlx_array* athena_mlx_negative(const athena_mlx_array* a) {
  return make("negative", [&] { return mx::negative(get(a)); });
}

athena_mlx_array* athena_mlx_sigmoid(const athena_mlx_array* a) {
  return make("sigmoid", [&] { return mx::sigmoid(get(a)); });
}

athena_mlx_array* athena_mlx_clip(const athena_mlx_array* a, float lo, float hi) {
  return make("clip", [&] {
    const auto& x = get(a);
    return mx::clip(x, mx::array(lo, x.dtype()), mx::array(hi, x.dtype()));
  });
}

athena_mlx_array* athena_mlx_sum(const athena_mlx_array* a, int axis, int keepdims) {
  return make("sum", [&] { return mx::sum(get(a), axis, keepdims != 0); });
}

athena_mlx_array* athena_mlx_mean(const athena_mlx_array* a, int axis, int keepdims) {
  return make("mean", [&] { return mx::mean(get(a), axis, keepdims != 0); });
}

athena_mlx_array* athena_mlx_matmul(const athena_mlx_array* a, const athena_mlx_array* b) {
  return make("matmul", [&] { return mx::matmul(get(a), get(b)); });
}

athena_mlx_array* athena_mlx_addmm(
    const athena_mlx_array* c, const athena_mlx_array* a, const athena_mlx_array* b) {
  return make("addmm", [&] { return mx::addmm(get(c), get(a), get(b)); });
}

athena_mlx_array* athena_mlx_quantized_matmul(
    const athena_mlx_array* x, const athena_mlx_array* w, const athena_mlx_array* scales,
    const athena_mlx_array* biases, int group_size, int bits) {
  return make("quantized_matmul", [&] {
    return mx::quantized_matmul(
        get(x), get(w), get(scales), opt(biases), true, group_size, bits, "affine");
  });
}

athena_mlx_array* athena_mlx_dequantize(
    const athena_mlx_array* w, const athena_mlx_array* scales, const athena_mlx_array* biases,
    int group_size, int bits) {
  return make("dequantize", [&] {
    return mx::dequantize(get(w), get(scales), opt(biases), group_size, bits, "affine");
  });
}

athena_mlx_array* athena_mlx_gather_mm(
    const athena_mlx_array* a, const athena_mlx_array* b, const athena_mlx_array* rhs_indices,
    int sorted_indices) {
  return make("gather_mm", [&] {
    const auto& x = get(a);
    const auto& w = get(b);
    auto rhs = opt(rhs_indices);
    bool sorted = sorted_indices != 0;
    if (x.dtype() == mx::float32 || mx::default_device().type != mx::Device::cpu) {
      return mx::gather_mm(x, w, std::nullopt, rhs, sorted);
    }
    // MLX's CPU gather_mm computes float32 only: widen, multiply, round back to x's dtype.
    auto y = mx::gather_mm(
        mx::astype(x, mx::float32), mx::astype(w, mx::float32), std::nullopt, rhs, sorted);
    return mx::astype(y, x.dtype());
  });
}

athena_mlx_array* athena_mlx_gather_qmm(
    const athena_mlx_array* x, const athena_mlx_array* w, const athena_mlx_array* scales,
    const athena_mlx_array* biases, const athena_mlx_array* rhs_indices, int group_size,
    int bits, int sorted_indices) {
  return make("gather_qmm", [&] {
    return mx::gather_qmm(
        get(x), get(w), get(scales), opt(biases), std::nullopt, opt(rhs_indices), true,
        group_size, bits, "affine", std::nullopt, sorted_indices != 0);
  });
}

athena_mlx_array* athena_mlx_rms_norm(
    const athena_mlx_array* x, const athena_mlx_array* weight, float eps) {
  return make("rms_norm", [&] { return mx::fast::rms_norm(get(x), opt(weight), eps); });
}

athena_mlx_array* athena_mlx_rope(
    const athena_mlx_array* x, int dims, int traditional, float base, float scale, int offset) {
  return make("rope", [&] {
    return mx::fast::rope(get(x), dims, traditional != 0, base, scale, offset);
  });
}

athena_mlx_array* athena_mlx_sdpa(
    const athena_mlx_array* q, const athena_mlx_array* k, const athena_mlx_array* v,
    float scale, int causal) {
  return make("scaled_dot_product_attention", [&] {
    return mx::fast::scaled_dot_product_attention(
        get(q), get(k), get(v), scale, causal ? "causal" : "");
  });
}

athena_mlx_array* athena_mlx_softmax(const athena_mlx_array* a, int axis, int precise) {
  return make("softmax", [&] { return mx::softmax(get(a), axis, precise != 0); });
}

athena_mlx_array* athena_mlx_argpartition(const athena_mlx_array* a, int kth, int axis) {
  return make("argpartition", [&] { return mx::argpartition(get(a), kth, axis); });
}

athena_mlx_array* athena_mlx_argsort(const athena_mlx_array* a, int axis) {
  return make("argsort", [&] { return mx::argsort(get(a), axis); });
}

athena_mlx_array* athena_mlx_take(
    const athena_mlx_array* a, const athena_mlx_array* indices, int axis) {
  return make("take", [&] { return mx::take(get(a), get(indices), axis); });
}

athena_mlx_array* athena_mlx_take_along_axis(
    const athena_mlx_array* a, const athena_mlx_array* indices, int axis) {
  return make("take_along_axis", [&] {
    return mx::take_along_axis(get(a), get(indices), axis);
  });
}

int athena_mlx_quantize(
    const athena_mlx_array* w, int group_size, int bits, athena_mlx_array** out) {
  for (int i = 0; i < 3; ++i) {
    out[i] = nullptr;
  }
  return status("quantize", [&] {
    auto parts = mx::quantize(get(w), group_size, bits, "affine");
    if (parts.size() != 3) {
      throw std::runtime_error(
          "affine quantization returned " + std::to_string(parts.size()) +
          " arrays, expected 3");
    }
    for (int i = 0; i < 3; ++i) {
      out[i] = new athena_mlx_array{parts[i]};
    }
  });
}

} // extern "C"

athena_mlx_array* athena_mlx_gather_mm_t(
    const athena_mlx_array* x, const athena_mlx_array* w, const athena_mlx_array* rhs_indices,
    int sorted_indices) {
  return make("gather_mm", [&] {
    const auto& a = get(x);
    const auto& weights = get(w);
    const auto& rhs = get(rhs_indices);
    bool sorted = sorted_indices != 0;
    if (a.dtype() == mx::float32 || mx::default_device().type != mx::Device::cpu) {
      return mx::gather_mm(a, mx::swapaxes(weights, -1, -2), std::nullopt, rhs, sorted);
    }
    // MLX's CPU gather_mm computes float32 only: widen, multiply, round back to a's dtype. A
    // decode step routes a few rows to a few experts: widen only those (the indices become
    // positions in the widened pick, still in the same order).
    auto a32 = mx::astype(a, mx::float32);
    if (static_cast<int64_t>(rhs.size()) < static_cast<int64_t>(weights.shape(0))) {
      auto flat = mx::flatten(rhs);
      auto picked = mx::astype(mx::take(weights, flat, 0), mx::float32);
      auto local = mx::reshape(mx::arange(0, static_cast<int>(flat.size()), rhs.dtype()), rhs.shape());
      auto y = mx::gather_mm(a32, mx::swapaxes(picked, -1, -2), std::nullopt, local, sorted);
      return mx::astype(y, a.dtype());
    }
    auto y = mx::gather_mm(
        a32, mx::astype(mx::swapaxes(weights, -1, -2), mx::float32), std::nullopt, rhs, sorted);
    return mx::astype(y, a.dtype());
  });
}
