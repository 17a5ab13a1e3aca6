"""StyleGAN2 generator and discriminator with NVIDIA stylegan2-ada-pytorch's names, arguments and numerics.

This file's full text is stored in every network pickle (torch_utils.persistence) and executed when a
snapshot is loaded, also by NVIDIA's own code. So it may use only the torch_utils / dnnlib API that
upstream has, must parse on Python 3.7, and must never import `plugins`.

Extension points for plugins (plugins/hookspecs.py attaches them, nothing here knows a method):
  * `G.mapping.extensions` (a ModuleDict). Each module may define any of
      transform_embed(e, c)                 -> e       class embedding before normalisation
      stream_inputs(x, y, e, c, streams)    -> streams dict of name -> fc0 input (x = norm(z), y = norm(e))
      after_layer(idx, h, stream, e, c)     -> h       after mapping layer idx
      w_avg_buffer(stream)                  -> tensor  running average for an extra stream (or None)
      broadcast(streams, num_ws)            -> ws [N, num_ws, w_dim] (first module that returns one wins)
  * `D.extensions` (a ModuleDict) holds extra heads; the loss-side plugin code calls them with the
    features captured from D's forward.
  * `capture`: an optional dict passed to forward(); the networks store intermediate results in it:
      mapping:   capture['w_streams'] = {stream: w before truncation}, capture['w_avgs'] = {stream: avg}
      synthesis: capture['block_outputs'][res] = (x, img) after each block
      D:         capture['b4_in'] (epilogue input before minibatch-stddev), capture['fc'] (fc output),
                 capture['logits'] = {'D': D's output, plus any head's logits by name}
An empty extension dict adds no parameters or buffers, so plain networks keep NVIDIA's exact names.
"""

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d

# ----------------------------------------------------------------------------
# Building blocks.


@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


@misc.profiled_function
def modulated_conv2d(
    x,                          # Input tensor of shape [batch_size, in_channels, in_height, in_width].
    weight,                     # Weight tensor of shape [out_channels, in_channels, kernel_height, kernel_width].
    styles,                     # Modulation coefficients of shape [batch_size, in_channels].
    noise=None,                 # Optional noise tensor to add to the output activations.
    up=1,                       # Integer upsampling factor.
    down=1,                     # Integer downsampling factor.
    padding=0,                  # Padding with respect to the upsampled image.
    resample_filter=None,       # Low-pass filter to apply when resampling activations.
    demodulate=True,            # Apply weight demodulation?
    flip_weight=True,           # False = convolution, True = correlation (matches torch.nn.functional.conv2d).
    fused_modconv=True,         # Perform modulation, convolution, and demodulation as a single fused operation?
):
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(weight, [out_channels, in_channels, kh, kw])
    misc.assert_shape(x, [None, in_channels, None, None])
    misc.assert_shape(styles, [batch_size, in_channels])

    # In fp16 the demodulated product can overflow; rescaling both factors first cancels out in demodulation.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    per_sample_w = None
    dcoefs = None
    if demodulate or fused_modconv:
        per_sample_w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [NOIkk]
    if demodulate:
        dcoefs = (per_sample_w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [NO]
    if demodulate and fused_modconv:
        per_sample_w = per_sample_w * dcoefs.reshape(batch_size, -1, 1, 1, 1)

    if not fused_modconv:
        # Scale activations before and after a shared-weight convolution.
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                            padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x

    # One grouped convolution with a separate kernel per sample.
    with misc.suppress_tracer_warnings():
        batch_size = int(batch_size)
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    x = x.reshape(1, -1, *x.shape[2:])
    per_sample_w = per_sample_w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=per_sample_w.to(x.dtype), f=resample_filter, up=up, down=down,
                                        padding=padding, groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        bias=True,                  # Apply additive bias before the activation function?
        activation="linear",        # Activation function: 'relu', 'lrelu', etc.
        lr_multiplier=1,            # Learning rate multiplier.
        bias_init=0,                # Initial value for the additive bias.
    ):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        # Python floats, not numpy scalars: numpy-2 pickles of numpy scalars do not load under numpy 1.
        self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
        self.bias_gain = float(lr_multiplier)

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act.bias_act(x, b, act=self.activation)


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        kernel_size,                    # Width and height of the convolution kernel.
        bias=True,                      # Apply additive bias before the activation function?
        activation="linear",            # Activation function: 'relu', 'lrelu', etc.
        up=1,                           # Integer upsampling factor.
        down=1,                         # Integer downsampling factor.
        resample_filter=[1, 3, 3, 1],   # Low-pass filter to apply when resampling activations.
        conv_clamp=None,                # Clamp the output to +-X, None = disable clamping.
        channels_last=False,            # Expect the input to have memory_format=channels_last?
        trainable=True,                 # Update the weights of this layer during training?
    ):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = float(1 / np.sqrt(in_channels * (kernel_size ** 2)))
        self.act_gain = float(bias_act.activation_funcs[activation].def_gain)

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:  # Frozen layers (Freeze-D) keep their tensors as buffers so optimisers never see them.
            self.register_buffer("weight", weight)
            if bias is not None:
                self.register_buffer("bias", bias)
            else:
                self.bias = None

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = (self.up == 1)  # Slightly faster, and required by the transposed conv when up > 1.
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                                            padding=self.padding, flip_weight=flip_weight)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)


# ----------------------------------------------------------------------------
# Mapping network.


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    rank_averaged_buffers = ("w_avg",)  # A running mean of the batch: the loop averages it over ranks.

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality, 0 = no latent.
        c_dim,                      # Conditioning label (C) dimensionality, 0 = no label.
        w_dim,                      # Intermediate latent (W) dimensionality.
        num_ws,                     # Number of intermediate latents to output, None = do not broadcast.
        num_layers=8,               # Number of mapping layers.
        embed_features=None,        # Label embedding dimensionality, None = same as w_dim.
        layer_features=None,        # Number of intermediate features in the mapping layers, None = same as w_dim.
        activation="lrelu",         # Activation function: 'relu', 'lrelu', etc.
        lr_multiplier=0.01,         # Learning rate multiplier for the mapping layers.
        w_avg_beta=0.995,           # Decay for tracking the moving average of W during training, None = do not track.
        c_in_fc0=True,              # Feed the normalised label embedding to fc0 (NVIDIA)? False: fc0 takes norm(z) only and
                                    # c enters through an extension's after_layer (transitional-cGAN).
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.c_in_fc0 = c_in_fc0 or z_dim == 0  # D's label mapping has no z: its fc0 always takes the embedding.

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features_list = [z_dim + (embed_features if self.c_in_fc0 else 0)] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features_list[idx], features_list[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))
        self.extensions = torch.nn.ModuleDict()  # Plugin modules; empty = NVIDIA's network exactly.

    def _ext_call(self, method, *args):
        """Modules in self.extensions that implement `method`, in attachment order."""
        return [getattr(ext, method) for ext in self.extensions.values() if hasattr(ext, method)]

    def _stream_inputs(self, z, c):
        """{stream name: input of fc0}. The NVIDIA path has the single stream 'w'."""
        x = y = e = None
        with torch.autograd.profiler.record_function("input"):
            if self.z_dim > 0:
                misc.assert_shape(z, [None, self.z_dim])
                x = normalize_2nd_moment(z.to(torch.float32))
            if self.c_dim > 0:
                misc.assert_shape(c, [None, self.c_dim])
                e = self.embed(c.to(torch.float32))
                for fn in self._ext_call("transform_embed"):
                    e = fn(e, c)
                y = normalize_2nd_moment(e)
        if not self.c_in_fc0:
            y = None  # fc0 sees z only; extensions still receive the embedding e (and c).
        h = torch.cat([x, y], dim=1) if (x is not None and y is not None) else (x if x is not None else y)
        streams = {"w": h}
        for fn in self._ext_call("stream_inputs"):
            streams = fn(x, y, e, c, streams)
        return streams, e

    def _avg_for(self, stream):
        if stream == "w":
            return self.w_avg
        for fn in self._ext_call("w_avg_buffer"):
            buf = fn(stream)
            if buf is not None:
                return buf
        return self.w_avg

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, capture=None):
        streams, e = self._stream_inputs(z, c)
        after_layer = self._ext_call("after_layer")
        for name in list(streams):
            h = streams[name]
            for idx in range(self.num_layers):
                h = getattr(self, f"fc{idx}")(h)
                for fn in after_layer:
                    h = fn(idx, h, name, e, c)
            streams[name] = h

        # Track the running average of W (one buffer per stream).
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.autograd.profiler.record_function("update_w_avg"):
                for name, w in streams.items():
                    avg = self._avg_for(name)
                    avg.copy_(w.detach().mean(dim=0).lerp(avg, self.w_avg_beta))
        if capture is not None:
            capture["w_streams"] = dict(streams)

        if self.num_ws is None:
            x = streams["w"]
            if truncation_psi != 1:
                assert self.w_avg_beta is not None
                x = self.w_avg.lerp(x, truncation_psi)
            return x

        with torch.autograd.profiler.record_function("broadcast"):
            x = None
            for fn in self._ext_call("broadcast"):
                x = fn(streams, self.num_ws)
                if x is not None:
                    break
            if x is None:
                x = streams["w"].unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            with torch.autograd.profiler.record_function("truncate"):
                assert self.w_avg_beta is not None
                if len(streams) == 1:
                    avg = self.w_avg
                else:  # Each layer is pulled towards the average of the stream that drives it.
                    avgs = {name: self._avg_for(name).unsqueeze(0).repeat([x.shape[0], 1]) for name in streams}
                    avg = None
                    for fn in self._ext_call("broadcast"):
                        avg = fn(avgs, self.num_ws)
                        if avg is not None:
                            break
                    avg = avg if avg is not None else self.w_avg
                if truncation_cutoff is None:
                    x = avg.lerp(x, truncation_psi)
                else:
                    avg_cut = avg if avg.ndim == 1 else avg[:, :truncation_cutoff]
                    x[:, :truncation_cutoff] = avg_cut.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


# ----------------------------------------------------------------------------
# Synthesis network.


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        w_dim,                          # Intermediate latent (W) dimensionality.
        resolution,                     # Resolution of this layer.
        kernel_size=3,                  # Convolution kernel size.
        up=1,                           # Integer upsampling factor.
        use_noise=True,                 # Enable noise input?
        activation="lrelu",             # Activation function: 'relu', 'lrelu', etc.
        resample_filter=[1, 3, 3, 1],   # Low-pass filter to apply when resampling activations.
        conv_clamp=None,                # Clamp the output of convolution layers to +-X, None = disable clamping.
        channels_last=False,            # Use channels_last format for the weights?
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = float(bias_act.activation_funcs[activation].def_gain)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1):
        assert noise_mode in ["random", "const", "none"], f"noise_mode must be random, const or none, not {noise_mode!r}"
        in_resolution = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], in_resolution, in_resolution])
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        flip_weight = (self.up == 1)  # Slightly faster.
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=flip_weight, fused_modconv=fused_modconv)

        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = float(1 / np.sqrt(in_channels * (kernel_size ** 2)))

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    def __init__(self,
        in_channels,                        # Number of input channels, 0 = first block.
        out_channels,                       # Number of output channels.
        w_dim,                              # Intermediate latent (W) dimensionality.
        resolution,                         # Resolution of this block.
        img_channels,                       # Number of output color channels.
        is_last,                            # Is this the last block?
        architecture="skip",                # Architecture: 'orig', 'skip', 'resnet'.
        resample_filter=[1, 3, 3, 1],       # Low-pass filter to apply when resampling activations.
        conv_clamp=None,                    # Clamp the output of convolution layers to +-X, None = disable clamping.
        use_fp16=False,                     # Use FP16 for this block?
        fp16_channels_last=False,           # Use channels-last memory format with FP16?
        channels_last=None,                 # Channels-last for this block regardless of FP16 (CPU); None = as NVIDIA.
        **layer_kwargs,                     # Arguments for SynthesisLayer.
    ):
        assert architecture in ["orig", "skip", "resnet"], f"architecture must be orig, skip or resnet, not {architecture!r}"
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last) if channels_last is None else bool(channels_last)
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        # Half precision only where it is fast and supported well: CUDA. On other devices run fp32.
        use_fp16 = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            with misc.suppress_tracer_warnings():  # this value will be treated as a constant
                # NVIDIA's rule, on CUDA only: a CPU runs the per-sample grouped convolution 3x slower than the
                # batched convolution with the styles applied to the activations (16 px tiny G, 2-core CPU).
                fused_modconv = ((not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)
                                 and ws.device.type == "cuda")

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.contiguous(memory_format=memory_format)  # The const is 3-D: its batch first.
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output image resolution.
        img_channels,               # Number of color channels.
        channel_base=32768,         # Overall multiplier for the number of channels.
        channel_max=512,            # Maximum number of channels in any layer.
        num_fp16_res=0,             # Use FP16 for the N highest resolutions.
        separate_torgb_ws=False,    # Give every toRGB its own w slot (num_ws = sum of convs and toRGBs).
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.separate_torgb_ws = separate_torgb_ws
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res // 2] if res > 4 else 0
            out_channels = channels_dict[res]
            use_fp16 = (res >= fp16_resolution)
            is_last = (res == self.img_resolution)
            block = SynthesisBlock(in_channels, out_channels, w_dim=w_dim, resolution=res, img_channels=img_channels,
                                   is_last=is_last, use_fp16=use_fp16, **block_kwargs)
            self.num_ws += block.num_conv
            if is_last or separate_torgb_ws:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def block_ws_offsets(self):
        """{res: (first w index, number of ws)} of every block."""
        offsets = {}
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            offsets[res] = (w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv + (block.num_torgb if self.separate_torgb_ws else 0)
        return offsets

    def forward(self, ws, capture=None, **block_kwargs):
        with torch.autograd.profiler.record_function("split_ws"):
            misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
            ws = ws.to(torch.float32)
            block_ws = [ws.narrow(1, start, count) for start, count in self.block_ws_offsets().values()]

        x = img = None
        for res, cur_ws in zip(self.block_resolutions, block_ws):
            block = getattr(self, f"b{res}")
            x, img = block(x, img, cur_ws, **block_kwargs)
            if capture is not None:
                capture.setdefault("block_outputs", {})[res] = (x, img)
        return img


@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality.
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output resolution.
        img_channels,               # Number of output color channels.
        mapping_kwargs={},          # Arguments for MappingNetwork.
        synthesis_kwargs={},        # Arguments for SynthesisNetwork.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, capture=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, capture=capture)
        return self.synthesis(ws, capture=capture, **synthesis_kwargs)


# ----------------------------------------------------------------------------
# Discriminator.


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    def __init__(self,
        in_channels,                        # Number of input channels, 0 = first block.
        tmp_channels,                       # Number of intermediate channels.
        out_channels,                       # Number of output channels.
        resolution,                         # Resolution of this block.
        img_channels,                       # Number of input color channels.
        first_layer_idx,                    # Index of the first layer.
        architecture="resnet",              # Architecture: 'orig', 'skip', 'resnet'.
        activation="lrelu",                 # Activation function: 'relu', 'lrelu', etc.
        resample_filter=[1, 3, 3, 1],       # Low-pass filter to apply when resampling activations.
        conv_clamp=None,                    # Clamp the output of convolution layers to +-X, None = disable clamping.
        use_fp16=False,                     # Use FP16 for this block?
        fp16_channels_last=False,           # Use channels-last memory format with FP16?
        channels_last=None,                 # Channels-last for this block regardless of FP16 (CPU); None = as NVIDIA.
        freeze_layers=0,                    # Freeze-D: Number of layers to freeze.
    ):
        assert in_channels in [0, tmp_channels]
        assert architecture in ["orig", "skip", "resnet"], f"architecture must be orig, skip or resnet, not {architecture!r}"
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last) if channels_last is None else bool(channels_last)
        self.register_buffer("resample_filter", upfirdn2d.setup_filter(resample_filter))

        self.num_layers = 0

        def next_trainable():
            trainable = (first_layer_idx + self.num_layers) >= freeze_layers
            self.num_layers += 1
            return trainable

        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=next_trainable(), conv_clamp=conv_clamp,
                                       channels_last=self.channels_last)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=next_trainable(), conv_clamp=conv_clamp, channels_last=self.channels_last)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=next_trainable(), resample_filter=resample_filter, conv_clamp=conv_clamp,
                                 channels_last=self.channels_last)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=next_trainable(), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False):
        use_fp16 = self.use_fp16 and not force_fp32 and (img if img is not None else x).device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == "skip":
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)

        assert x.dtype == dtype
        return x, img


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        with misc.suppress_tracer_warnings():  # as_tensor results are registered as constants
            G = torch.min(torch.as_tensor(self.group_size), torch.as_tensor(N)) if self.group_size is not None else N
        F = self.num_channels
        c = C // F
        if isinstance(N, int) and isinstance(G, torch.Tensor) and N % int(G) != 0:
            raise ValueError(f"Minibatch-stddev needs the batch ({N}) to be divisible by the group size ({int(G)}); "
                             f"use a per-GPU batch that is a multiple of mbstd_group_size={self.group_size}")

        # Sample i belongs to group i mod (N/G): rows are split as [G, N/G, ...].
        y = x.reshape(G, -1, F, c, H, W)    # [GnFcHW] Split minibatch N into n groups of size G, channels C into F groups of size c.
        y = y - y.mean(dim=0)               # [GnFcHW] Subtract mean over group.
        y = y.square().mean(dim=0)          # [nFcHW]  Calc variance over group.
        y = (y + 1e-8).sqrt()               # [nFcHW]  Calc stddev over group.
        y = y.mean(dim=[2, 3, 4])           # [nF]     Take average over channels and pixels.
        y = y.reshape(-1, F, 1, 1)          # [nF11]   Add missing dimensions.
        y = y.repeat(G, 1, H, W)            # [NFHW]   Replicate over group and pixels.
        return torch.cat([x, y], dim=1)     # [NCHW]   Append to input as new channels.


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    def __init__(self,
        in_channels,                    # Number of input channels.
        cmap_dim,                       # Dimensionality of mapped conditioning label, 0 = no label.
        resolution,                     # Resolution of this block.
        img_channels,                   # Number of input color channels.
        architecture="resnet",          # Architecture: 'orig', 'skip', 'resnet'.
        mbstd_group_size=4,             # Group size for the minibatch standard deviation layer, None = entire minibatch.
        mbstd_num_channels=1,           # Number of features for the minibatch standard deviation layer, 0 = disable.
        activation="lrelu",             # Activation function: 'relu', 'lrelu', etc.
        conv_clamp=None,                # Clamp the output of convolution layers to +-X, None = disable clamping.
    ):
        assert architecture in ["orig", "skip", "resnet"], f"architecture must be orig, skip or resnet, not {architecture!r}"
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution ** 2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False, capture=None, head=None):
        """head(features, cmap, capture) -> logits replaces `out` and the projection (a plugin's heads)."""
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        dtype = torch.float32
        memory_format = torch.contiguous_format

        x = x.to(dtype=dtype, memory_format=memory_format)
        if self.architecture == "skip":
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            x = x + self.fromrgb(img)
        if capture is not None:
            capture["b4_in"] = x

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        if capture is not None:
            capture["fc"] = x
        if head is not None:
            x = head(x, cmap, capture)
        else:
            x = self.out(x)
            if self.cmap_dim > 0:
                misc.assert_shape(cmap, [None, self.cmap_dim])
                x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        if capture is not None:  # Every head's logits by name; "D" is D's output (what the base loss uses).
            capture.setdefault("logits", {})["D"] = x

        assert x.dtype == dtype
        return x


@persistence.persistent_class
class LabelPrior(torch.nn.Module):
    """Class probabilities of a network whose labels are not the dataset's (e.g. self-conditioning's clusters).

    Attached as ``G.mapping.extensions['label_prior']`` (see set_label_prior); generate.py and the metrics
    draw c from it when it is there, so snapshots sample sensible labels without the plugin that set it.
    The mapping network ignores it (it implements none of the extension methods).
    """

    def __init__(self, c_dim):
        super().__init__()
        self.c_dim = c_dim
        self.register_buffer("probs", torch.full([c_dim], 1.0 / max(c_dim, 1)))

    def sample(self, n, generator=None):
        """One-hot labels [n, c_dim] drawn from probs (on probs' device)."""
        ids = torch.multinomial(self.probs.float(), n, replacement=True, generator=generator)
        return torch.nn.functional.one_hot(ids, self.c_dim).to(torch.float32)


def set_label_prior(G, probs):
    """Create or update G's label prior: probs is a [c_dim] array of non-negative weights (normalised here)."""
    probs = torch.as_tensor(np.asarray(probs, dtype=np.float32))
    if probs.ndim != 1 or probs.shape[0] != G.c_dim or not torch.isfinite(probs).all() or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"a label prior needs {G.c_dim} finite non-negative weights with a positive sum, got {probs.tolist()}")
    if "label_prior" not in G.mapping.extensions:
        G.mapping.extensions["label_prior"] = LabelPrior(G.c_dim).to(G.mapping.w_avg.device if hasattr(G.mapping, "w_avg") else "cpu")
    prior = G.mapping.extensions["label_prior"]
    prior.probs.copy_(probs / probs.sum())
    return prior


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality.
        img_resolution,                 # Input resolution.
        img_channels,                   # Number of input color channels.
        architecture="resnet",          # Architecture: 'orig', 'skip', 'resnet'.
        channel_base=32768,             # Overall multiplier for the number of channels.
        channel_max=512,                # Maximum number of channels in any layer.
        num_fp16_res=0,                 # Use FP16 for the N highest resolutions.
        conv_clamp=None,                # Clamp the output of convolution layers to +-X, None = disable clamping.
        cmap_dim=None,                  # Dimensionality of mapped conditioning label, None = default.
        block_kwargs={},                # Arguments for DiscriminatorBlock.
        mapping_kwargs={},              # Arguments for MappingNetwork.
        epilogue_kwargs={},             # Arguments for DiscriminatorEpilogue.
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        if cmap_dim is None:
            cmap_dim = channels_dict[4]
        if c_dim == 0:
            cmap_dim = 0

        common_kwargs = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res] if res < img_resolution else 0
            tmp_channels = channels_dict[res]
            out_channels = channels_dict[res // 2]
            use_fp16 = (res >= fp16_resolution)
            block = DiscriminatorBlock(in_channels, tmp_channels, out_channels, resolution=res,
                                       first_layer_idx=cur_layer_idx, use_fp16=use_fp16, **block_kwargs, **common_kwargs)
            setattr(self, f"b{res}", block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels_dict[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common_kwargs)
        self.extensions = torch.nn.ModuleDict()  # Plugin heads; empty = NVIDIA's network exactly.

    @property
    def feature_dims(self):
        """{capture key: per-sample shape} of what forward(..., capture=dict) records, for sizing plugin heads:
        'b4_in' the epilogue input (before minibatch-stddev), 'fc' the epilogue's last features, 'cmap' the
        mapped label (conditional D only)."""
        c4 = self.b4.in_channels
        dims = {"b4_in": (c4, 4, 4), "fc": (c4,)}
        if self.c_dim > 0:
            dims["cmap"] = (self.b4.cmap_dim,)
        return dims

    def forward(self, img, c, capture=None, **block_kwargs):
        x = None
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, **block_kwargs)

        cmap = None
        if self.c_dim > 0:
            cmap = self.mapping(None, c)
        if capture is not None:
            capture["cmap"] = cmap
        # A D extension with `epilogue_head` supplies D's output from the epilogue features (transitional-cGAN).
        heads = [ext.epilogue_head for ext in self.extensions.values() if hasattr(ext, "epilogue_head")]
        return self.b4(x, img, cmap, capture=capture, head=heads[0] if heads else None)
