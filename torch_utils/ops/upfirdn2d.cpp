// Python binding and argument checks for the upfirdn2d CUDA kernel.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>

#include "upfirdn2d.h"

static int64_t output_extent(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1, int64_t taps,
                             const char* axis) {
    const int64_t padded = in * up + pad0 + pad1;
    TORCH_CHECK(padded >= taps, "upfirdn2d: empty output along ", axis, " (padded size ", padded,
                " < filter size ", taps, ")");
    return (padded - taps) / down + 1;
}

static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor k, int64_t up_x, int64_t up_y, int64_t down_x,
                               int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W], got ", x.sizes());
    TORCH_CHECK(x.is_contiguous(), "upfirdn2d: x must be contiguous");
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kHalf ||
                    x.scalar_type() == at::kBFloat16,
                "upfirdn2d: unsupported dtype ", x.scalar_type());
    TORCH_CHECK(k.dim() == 2 && k.size(0) >= 1 && k.size(1) >= 1, "upfirdn2d: filter must be 2-D, got ", k.sizes());
    TORCH_CHECK(k.scalar_type() == at::kFloat, "upfirdn2d: filter must be float32");
    TORCH_CHECK(k.device() == x.device(), "upfirdn2d: filter must be on the device of x");
    TORCH_CHECK(k.is_contiguous(), "upfirdn2d: filter must be contiguous");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: scaling factors must be >= 1");

    Upfirdn2dGeometry g;
    g.planes = x.size(0) * x.size(1);
    g.in_h = x.size(2);
    g.in_w = x.size(3);
    g.filter_h = k.size(0);
    g.filter_w = k.size(1);
    g.up_x = up_x;
    g.up_y = up_y;
    g.down_x = down_x;
    g.down_y = down_y;
    g.pad_x0 = pad_x0;
    g.pad_y0 = pad_y0;
    g.out_w = output_extent(g.in_w, up_x, down_x, pad_x0, pad_x1, g.filter_w, "x");
    g.out_h = output_extent(g.in_h, up_y, down_y, pad_y0, pad_y1, g.filter_h, "y");

    const at::cuda::OptionalCUDAGuard device_guard(x.device());
    return upfirdn2d_launch(x, k, g);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR-filter (correlation) and downsample 2-D images");
}
