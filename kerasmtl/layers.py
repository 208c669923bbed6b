"""Small serialisable layers the builders use (all reload with ``safe_mode=True``)."""

from __future__ import annotations

import keras
from keras import ops

# Per-channel statistics of ImageNet, RGB order, on the 0-255 scale.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESSING_MODES = ("unit", "caffe", "torch", "tf", "none")


@keras.saving.register_keras_serializable(package="kerasmtl")
class ImagePreprocessing(keras.layers.Layer):
    """Turns raw 0-255 pixels (any dtype) into what a tower expects.

    Modes:

    - ``"unit"``: divide by 255 (custom towers).
    - ``"caffe"``: RGB -> BGR and subtract the ImageNet BGR mean
      (keras.applications ResNet50 / VGG16, same as their ``preprocess_input``).
    - ``"torch"``: divide by 255, subtract the ImageNet mean and divide by its std
      (torchvision models; for one channel the first channel's statistics are used).
    - ``"tf"``: scale to [-1, 1] (keras.applications MobileNet, MobileNetV2, ResNetV2,
      Inception, Xception, NASNet).
    - ``"none"``: only cast to float32.

    Args:
        mode: one of the modes above.
        output_channels: if 3 and the input has 1 channel, the grey channel is repeated
            (feeding grayscale images to a tower with 3-channel weights). None keeps
            the input's channels.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, mode="unit", output_channels=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"mode must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}"
            )
        if output_channels not in (None, 1, 3):
            raise ValueError(
                f"output_channels must be None, 1 or 3. Received: output_channels={output_channels!r}"
            )
        self.mode = mode
        self.output_channels = output_channels

    def call(self, images):
        x = ops.cast(images, "float32")
        channels = x.shape[-1]
        if self.output_channels == 3 and channels == 1:
            x = ops.concatenate([x, x, x], axis=-1)
            channels = 3
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "caffe":
            if channels == 3:
                x = ops.concatenate([x[..., 2:], x[..., 1:2], x[..., :1]], axis=-1)  # BGR (torch has no ::-1)
                return x - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype="float32")
            return x - CAFFE_MEAN_BGR[1]
        if self.mode == "torch":
            count = 3 if channels == 3 else 1
            mean, std = (ops.convert_to_tensor(values[:count], dtype="float32") for values in (IMAGENET_MEAN, IMAGENET_STD))
            return (x - mean) / std
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return x

    def compute_output_shape(self, input_shape):
        if self.output_channels == 3 and input_shape[-1] == 1:
            return tuple(input_shape[:-1]) + (3,)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "output_channels": self.output_channels})
        return config


@keras.saving.register_keras_serializable(package="kerasmtl")
class Destandardize(keras.layers.Layer):
    """``outputs = inputs * std + mean``: a regression head's output in the data's units.

    The head before it learns standardised targets (zero mean, unit spread per unit),
    which keeps its initial outputs and gradients on the scale of the other tasks;
    this layer, named after the task, gives back values in the units of the data.

    Args:
        mean: one number per output unit.
        std: one positive number per output unit.
        **kwargs: passed to `keras.layers.Layer` (the layer computes in float32).
    """

    def __init__(self, mean, std, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        if len(self.mean) != len(self.std) or not all(v > 0 for v in self.std):
            raise ValueError(f"mean and std need one value per unit, std > 0. Received: mean={self.mean}, std={self.std}")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        return x * ops.convert_to_tensor(self.std, "float32") + ops.convert_to_tensor(self.mean, "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="kerasmtl")
class GroupedConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` with ``groups > 1`` (ResNeXt) run as TensorFlow's own grouped convolution.

    Keras's TensorFlow backend runs every grouped convolution through an XLA-compiled
    ``tf.function`` made anew at each call: each eager call and each new batch shape
    compiles again (``_conv_xla triggered tf.function retracing``), which makes evaluation
    and prediction of a ResNeXt crawl on CPU. TensorFlow 2.21 runs ``tf.nn.convolution``
    with grouped kernels on CPU, gradients included; older TensorFlow gets one
    convolution per group and a concatenation. The kernel is ``Conv2D``'s
    ``(kh, kw, in / groups, filters)``, so weights, checkpoints and torchvision imports are
    those of a grouped ``Conv2D``. Other backends use ``Conv2D``'s own operation.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 or keras.backend.backend() != "tensorflow":
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        channels_last = self.data_format == "channels_last"
        layout = "NHWC" if channels_last else "NCHW"
        convolve = lambda x, k: tf.nn.convolution(  # noqa: E731
            x, k, strides=list(self.strides), padding=self.padding.upper(), dilations=list(self.dilation_rate),
            data_format=layout)
        if _native_grouped_convolution():
            return convolve(inputs, kernel)
        axis = -1 if channels_last else 1
        pieces = zip(tf.split(inputs, self.groups, axis=axis), tf.split(kernel, self.groups, axis=-1))
        return tf.concat([convolve(x, k) for x, k in pieces], axis=axis)


def _native_grouped_convolution() -> bool:
    """Whether this TensorFlow runs grouped kernels in ``tf.nn.convolution`` on CPU (2.21 does)."""
    import tensorflow as tf

    major, minor = (int(part) for part in tf.__version__.split(".")[:2])
    return (major, minor) >= (2, 21)
