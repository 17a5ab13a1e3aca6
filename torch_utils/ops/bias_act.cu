// CUDA kernel for bias_act: one thread per element (grid-stride loop).
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "bias_act.h"

namespace {

__device__ __forceinline__ float exp_(float v) { return expf(v); }
__device__ __forceinline__ double exp_(double v) { return exp(v); }
__device__ __forceinline__ float tanh_(float v) { return tanhf(v); }
__device__ __forceinline__ double tanh_(double v) { return tanh(v); }
__device__ __forceinline__ float log1p_(float v) { return log1pf(v); }
__device__ __forceinline__ double log1p_(double v) { return log1p(v); }

template <typename T>
__device__ __forceinline__ T sigmoid_(T z) {
    return T(1) / (T(1) + exp_(-z));
}

constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSoftplusThreshold = 20.0;  // same as torch.nn.functional.softplus

template <typename T>
__device__ __forceinline__ T activation(int act, T z, T alpha) {
    const T zero = T(0);
    switch (act) {
        case kBiasActRelu: return z > zero ? z : zero;
        case kBiasActLrelu: return z > zero ? z : z * alpha;
        case kBiasActTanh: return tanh_(z);
        case kBiasActSigmoid: return sigmoid_(z);
        case kBiasActElu: return z > zero ? z : exp_(z) - T(1);
        case kBiasActSelu: return z > zero ? T(kSeluScale) * z : T(kSeluScale * kSeluAlpha) * (exp_(z) - T(1));
        case kBiasActSoftplus: return z > T(kSoftplusThreshold) ? z : log1p_(exp_(z));
        case kBiasActSwish: return z * sigmoid_(z);
        default: return z;  // linear
    }
}

template <typename T>
__device__ __forceinline__ T activation_grad(int act, T z, T alpha) {
    const T zero = T(0);
    const T one = T(1);
    switch (act) {
        case kBiasActRelu: return z > zero ? one : zero;
        case kBiasActLrelu: return z > zero ? one : alpha;
        case kBiasActTanh: {
            const T t = tanh_(z);
            return one - t * t;
        }
        case kBiasActSigmoid: {
            const T s = sigmoid_(z);
            return s * (one - s);
        }
        case kBiasActElu: return z > zero ? one : exp_(z);
        case kBiasActSelu: return z > zero ? T(kSeluScale) : T(kSeluScale * kSeluAlpha) * exp_(z);
        case kBiasActSoftplus: return z > T(kSoftplusThreshold) ? one : sigmoid_(z);
        case kBiasActSwish: {
            const T s = sigmoid_(z);
            return s + z * s * (one - s);
        }
        default: return one;  // linear
    }
}

template <typename scalar_t, typename acc_t>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ dy, scalar_t* __restrict__ out, int64_t n,
                                int64_t bias_len, int64_t bias_stride, int act, int mode, acc_t alpha, acc_t gain,
                                acc_t clamp) {
    const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
        acc_t z = static_cast<acc_t>(x[i]);
        if (b != nullptr)
            z += static_cast<acc_t>(b[(i / bias_stride) % bias_len]);
        const acc_t v = activation<acc_t>(act, z, alpha) * gain;
        if (mode == 0) {
            acc_t y = v;
            if (clamp >= acc_t(0))
                y = y > clamp ? clamp : (y < -clamp ? -clamp : y);
            out[i] = static_cast<scalar_t>(y);
        } else {
            acc_t g = static_cast<acc_t>(dy[i]) * activation_grad<acc_t>(act, z, alpha) * gain;
            if (clamp >= acc_t(0) && (v > clamp || v < -clamp))
                g = acc_t(0);
            out[i] = static_cast<scalar_t>(g);
        }
    }
}

}  // namespace

at::Tensor bias_act_launch(const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy, int act, int mode,
                           double alpha, double gain, double clamp, int64_t bias_len, int64_t bias_stride) {
    at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
    const int64_t n = x.numel();
    if (n == 0)
        return out;
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        bias_act_kernel<scalar_t, acc_t><<<static_cast<unsigned int>(blocks), threads, 0, stream>>>(
            x.data_ptr<scalar_t>(), b.numel() > 0 ? b.data_ptr<scalar_t>() : nullptr,
            mode == 1 ? dy.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), n, bias_len, bias_stride, act,
            mode, static_cast<acc_t>(alpha), static_cast<acc_t>(gain), static_cast<acc_t>(clamp));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
}
