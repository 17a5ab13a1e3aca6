// upfirdn2d: declarations shared by upfirdn2d.cpp and upfirdn2d.cu.
#pragma once

#include <ATen/ATen.h>

struct Upfirdn2dGeometry {
    int64_t planes;          // N * C
    int64_t in_h, in_w;      // input size
    int64_t out_h, out_w;    // output size
    int64_t filter_h, filter_w;
    int64_t up_x, up_y;
    int64_t down_x, down_y;
    int64_t pad_x0, pad_y0;  // leading padding (negative = crop); trailing padding only sets out_h/out_w
};

// y[p, oy, ox] = sum_{ky, kx} U[p, oy * down_y + ky - pad_y0, ox * down_x + kx - pad_x0] * k[ky, kx],
// where U is x with up-1 zeros inserted after every pixel (U[u, v] = x[u / up_y, v / up_x] when both
// indices are multiples of the factors and inside the image, else 0). k is a float32 correlation
// kernel (already flipped and scaled by the Python side). x: [N, C, H, W] contiguous.
at::Tensor upfirdn2d_launch(const at::Tensor& x, const at::Tensor& k, const Upfirdn2dGeometry& g);
