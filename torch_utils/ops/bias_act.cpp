// Python binding and argument checks for the bias_act CUDA kernel.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>

#include "bias_act.h"

static torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor dy, int64_t act, int64_t mode,
                              double alpha, double gain, double clamp, int64_t dim) {
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(x.is_contiguous(), "bias_act: x must be contiguous");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kHalf ||
                    x.scalar_type() == at::kBFloat16,
                "bias_act: unsupported dtype ", x.scalar_type());
    TORCH_CHECK(act >= kBiasActLinear && act <= kBiasActSwish, "bias_act: unknown activation code ", act);
    TORCH_CHECK(mode == 0 || mode == 1, "bias_act: mode must be 0 (forward) or 1 (gradient), got ", mode);
    TORCH_CHECK(x.dim() >= 1, "bias_act: x must have at least one dimension");
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for ", x.dim(), "-D x");

    int64_t bias_len = 1;
    int64_t bias_stride = 1;
    if (b.numel() > 0) {
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: bias must have shape [", x.size(dim),
                    "], got ", b.sizes());
        TORCH_CHECK(b.device() == x.device(), "bias_act: b must be on the same device as x");
        TORCH_CHECK(b.scalar_type() == x.scalar_type(), "bias_act: b must have the same dtype as x");
        TORCH_CHECK(b.is_contiguous(), "bias_act: b must be contiguous");
        bias_len = b.size(0);
        for (int64_t d = dim + 1; d < x.dim(); ++d)
            bias_stride *= x.size(d);
    }
    if (mode == 1) {
        TORCH_CHECK(dy.sizes() == x.sizes(), "bias_act: dy must have the shape of x, got ", dy.sizes(), " and ",
                    x.sizes());
        TORCH_CHECK(dy.device() == x.device(), "bias_act: dy must be on the same device as x");
        TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "bias_act: dy must have the same dtype as x");
        TORCH_CHECK(dy.is_contiguous(), "bias_act: dy must be contiguous");
    }
    TORCH_CHECK(x.numel() < (int64_t(1) << 40), "bias_act: x is too large");

    const at::cuda::OptionalCUDAGuard device_guard(x.device());
    return bias_act_launch(x, b, dy, static_cast<int>(act), static_cast<int>(mode), alpha, gain, clamp, bias_len,
                           bias_stride);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp (mode 0) or its gradient (mode 1)");
}
