/* athena's C ABI over MLX's C++ API: only the operations the OLMoE forward pass needs.
 *
 * Arrays are opaque handles owned by the caller (free with athena_mlx_free). A function that
 * makes an array returns NULL on failure and an int function returns non-zero; either way
 * athena_mlx_last_error() then says why (per thread). No C++ exception leaves this library.
 * MLX is lazy: building an array records work, athena_mlx_eval / athena_mlx_read_f32 run it. */
#ifndef ATHENA_MLX_H
#define ATHENA_MLX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct athena_mlx_array athena_mlx_array;

/* Element types athena moves across the boundary. */
enum athena_mlx_dtype {
  ATHENA_MLX_F32 = 0,
  ATHENA_MLX_F16 = 1,
  ATHENA_MLX_BF16 = 2,
  ATHENA_MLX_U32 = 3,
  ATHENA_MLX_I32 = 4,
};

const char* athena_mlx_last_error(void);
/* The MLX version compiled against, e.g. "0.32.4". */
const char* athena_mlx_version(void);
/* Makes `gpu` (1) or the CPU (0) MLX's default device and runs a tiny computation on it. */
int athena_mlx_set_device(int gpu);
/* Whether MLX has a GPU (Metal or CUDA) in this build and machine. */
int athena_mlx_gpu_available(void);

void athena_mlx_free(athena_mlx_array* a);
/* Copies `data` (row-major, `ndim` dims) into a new array. */
athena_mlx_array* athena_mlx_from_data(
    const void* data, const int32_t* shape, size_t ndim, int dtype);
size_t athena_mlx_ndim(const athena_mlx_array* a);
/* Bytes of the array's elements as stored (0 for a null handle). */
size_t athena_mlx_nbytes(const athena_mlx_array* a);
/* Writes min(ndim, cap) dims into `out`. */
void athena_mlx_shape(const athena_mlx_array* a, int32_t* out, size_t cap);
int athena_mlx_eval(athena_mlx_array* const* arrays, size_t n);
/* Evaluates `a` as float32 and copies its `n` elements (n must equal its size) to `out`. */
int athena_mlx_read_f32(const athena_mlx_array* a, float* out, size_t n);

athena_mlx_array* athena_mlx_astype(const athena_mlx_array* a, int dtype);
athena_mlx_array* athena_mlx_reshape(
    const athena_mlx_array* a, const int32_t* shape, size_t ndim);
athena_mlx_array* athena_mlx_transpose(
    const athena_mlx_array* a, const int32_t* axes, size_t n);
athena_mlx_array* athena_mlx_swapaxes(const athena_mlx_array* a, int i, int j);
athena_mlx_array* athena_mlx_slice(
    const athena_mlx_array* a, const int32_t* start, const int32_t* stop, size_t ndim);
athena_mlx_array* athena_mlx_concatenate(
    const athena_mlx_array* const* arrays, size_t n, int axis);

athena_mlx_array* athena_mlx_add(const athena_mlx_array* a, const athena_mlx_array* b);
athena_mlx_array* athena_mlx_multiply(const athena_mlx_array* a, const athena_mlx_array* b);
athena_mlx_array* athena_mlx_divide(const athena_mlx_array* a, const athena_mlx_array* b);
athena_mlx_array* athena_mlx_floor_divide(
    const athena_mlx_array* a, const athena_mlx_array* b);
athena_mlx_array* athena_mlx_negative(const athena_mlx_array* a);
athena_mlx_array* athena_mlx_sigmoid(const athena_mlx_array* a);
athena_mlx_array* athena_mlx_clip(const athena_mlx_array* a, float lo, float hi);
athena_mlx_array* athena_mlx_sum(const athena_mlx_array* a, int axis, int keepdims);
athena_mlx_array* athena_mlx_mean(const athena_mlx_array* a, int axis, int keepdims);

athena_mlx_array* athena_mlx_matmul(const athena_mlx_array* a, const athena_mlx_array* b);
/* c + a @ b */
athena_mlx_array* athena_mlx_addmm(
    const athena_mlx_array* c, const athena_mlx_array* a, const athena_mlx_array* b);
/* x @ dequantize(w).T (affine); `biases` may be NULL only for modes without them. */
athena_mlx_array* athena_mlx_quantized_matmul(
    const athena_mlx_array* x, const athena_mlx_array* w, const athena_mlx_array* scales,
    const athena_mlx_array* biases, int group_size, int bits);
athena_mlx_array* athena_mlx_dequantize(
    const athena_mlx_array* w, const athena_mlx_array* scales, const athena_mlx_array* biases,
    int group_size, int bits);
/* a @ b[rhs_indices]. On the GPU in a's dtype. On the CPU, whose gather_mm computes float32
 * only, a bf16 or f16 product widens a and b to float32 and rounds the result back to a's
 * dtype: Metal's bf16 gather_mm accumulates in float32 and rounds its output the same way.
 * The widening reads the whole stack b on every call, so float experts run slower in bf16 or
 * f16 than in float32 on the CPU. */
athena_mlx_array* athena_mlx_gather_mm(
    const athena_mlx_array* a, const athena_mlx_array* b, const athena_mlx_array* rhs_indices,
    int sorted_indices);
athena_mlx_array* athena_mlx_gather_qmm(
    const athena_mlx_array* x, const athena_mlx_array* w, const athena_mlx_array* scales,
    const athena_mlx_array* biases, const athena_mlx_array* rhs_indices, int group_size,
    int bits, int sorted_indices);

athena_mlx_array* athena_mlx_rms_norm(
    const athena_mlx_array* x, const athena_mlx_array* weight, float eps);
athena_mlx_array* athena_mlx_rope(
    const athena_mlx_array* x, int dims, int traditional, float base, float scale, int offset);
/* mask: 0 none, 1 causal (aligned to the last query). */
athena_mlx_array* athena_mlx_sdpa(
    const athena_mlx_array* q, const athena_mlx_array* k, const athena_mlx_array* v,
    float scale, int causal);
athena_mlx_array* athena_mlx_softmax(const athena_mlx_array* a, int axis, int precise);
athena_mlx_array* athena_mlx_argpartition(const athena_mlx_array* a, int kth, int axis);
athena_mlx_array* athena_mlx_argsort(const athena_mlx_array* a, int axis);
athena_mlx_array* athena_mlx_take(
    const athena_mlx_array* a, const athena_mlx_array* indices, int axis);
athena_mlx_array* athena_mlx_take_along_axis(
    const athena_mlx_array* a, const athena_mlx_array* indices, int axis);

/* mx::quantize, affine: `w` quantized along its last axis into packed codes, scales and biases
 * (three new arrays written to `out`, NULL on failure). */
int athena_mlx_quantize(
    const athena_mlx_array* w, int group_size, int bits, athena_mlx_array** out);

/* x @ w[rhs_indices]^T for a stack of experts `w` [E, out, in] (as stored): the same product as
 * athena_mlx_gather_mm on `w` with its last two axes swapped. On the CPU, outside float32, only
 * the experts the indices select are widened to float32 when they are fewer than E (each
 * product then reads the same float32 values, so the result is the same, bit for bit). */
athena_mlx_array* athena_mlx_gather_mm_t(
    const athena_mlx_array* x, const athena_mlx_array* w, const athena_mlx_array* rhs_indices,
    int sorted_indices);

#ifdef __cplusplus
}
#endif

#endif
