// Fused bias + activation + gain + clamp: declarations shared by bias_act.cpp and bias_act.cu.
#pragma once

#include <ATen/ATen.h>

// Activation codes (activation_funcs[name].cuda_idx in bias_act.py).
enum BiasActCode : int {
    kBiasActLinear = 1,
    kBiasActRelu = 2,
    kBiasActLrelu = 3,
    kBiasActTanh = 4,
    kBiasActSigmoid = 5,
    kBiasActElu = 6,
    kBiasActSelu = 7,
    kBiasActSoftplus = 8,
    kBiasActSwish = 9,
};

// mode 0: out = clamp(gain * act(x + b), -clamp, clamp)      (dy unused)
// mode 1: out = dy * gain * act'(x + b), zeroed where gain * act(x + b) lies outside [-clamp, clamp]
// x, dy, out: contiguous, same shape and dtype. b: empty, or bias_len values indexed by
// (i / bias_stride) % bias_len for flat element i. clamp < 0 disables clamping.
at::Tensor bias_act_launch(const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy, int act, int mode,
                           double alpha, double gain, double clamp, int64_t bias_len, int64_t bias_stride);
