"""ShotNet: a tiny CNN over a window of N stacked low-res frames (Keras).

Only layers that convert to Edge TPU operators: a strided Conv2D over the stacked
frames (it sees the motion between them), depthwise-separable strided blocks,
then global max (REDUCE_MAX: "is there a flash anywhere") concatenated with global
mean (MEAN: "is the whole frame brighter", e.g. a photo flash) and two
FullyConnected layers ending in a Logistic. BatchNorm folds into the convolutions
on conversion.
"""

from __future__ import annotations

from typing import Any

from bodycam.model_compile.config import BuildConfig


def build_model(tf: Any, cfg: BuildConfig, batch_size: int | None = None) -> Any:
    keras = tf.keras
    layers = keras.layers
    spec = cfg.input_spec()
    f0, *rest = cfg.filters
    inp = keras.Input(shape=spec.shape[1:], batch_size=batch_size, name="window")
    x = layers.Conv2D(f0, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for i, f in enumerate(rest):
        stride = 2 if i < 2 else 1
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"dw{i}_bn")(x)
        x = layers.ReLU(6.0, name=f"dw{i}_relu")(x)
        x = layers.Conv2D(f, 1, use_bias=False, name=f"pw{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"pw{i}_bn")(x)
        x = layers.ReLU(6.0, name=f"pw{i}_relu")(x)
    gmax = layers.GlobalMaxPooling2D(name="gmax")(x)
    gavg = layers.GlobalAveragePooling2D(name="gavg")(x)
    x = layers.Concatenate(name="pool")([gmax, gavg])
    x = layers.Dropout(0.2, name="drop")(x)  # training only; no operator in the TFLite graph
    x = layers.Dense(32, activation="relu", name="fc")(x)
    out = layers.Dense(1, activation="sigmoid", name="shot")(x)
    return keras.Model(inp, out, name="shotnet")
