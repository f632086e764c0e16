"""VSML behind the learner interface: the network of ``vsml_es.vsml`` run as an online learner."""

from __future__ import annotations

from dataclasses import dataclass

import jax

from vsml_es import fused, vsml
from vsml_es.config import ModelConfig
from vsml_es.learners.base import InitFn, Learner, Params, StepFn


@dataclass(frozen=True)
class VsmlLearner(Learner):
    """Every weight a tiny LSTM with shared meta-learned parameters (``model`` sets its size).

    By default the states stay in the fast layout for the whole episode (one transpose at the
    start, none per step), run by ``vsml.fast_layer_ticks`` or, with ``model.kernel: fused``,
    by the C++ kernel of ``vsml_es.fused``; ``layer_fn`` swaps in another formulation of
    ``vsml.layer_ticks`` (e.g. the per-connection oracle of ``vsml_es.reference``) on the
    public layout.
    """

    model: ModelConfig
    layer_fn: vsml.LayerFn | None = None
    label = "VSML"
    size_free = True
    masks_outputs = True

    def init_params(self, key: jax.Array, num_features: int, num_outputs: int) -> Params:
        del num_features, num_outputs  # the shared LSTM does not depend on the layer sizes
        return vsml.init_params(key, self.model)

    def warm_start(self, params: Params, template: Params) -> Params:
        """Adds the clock's zero gate weights (model.clock_timescales) to a learner stored
        without them: it computes exactly what it did, and meta-training can use the clock."""
        missing = {name: value for name, value in template.items()
                   if name not in params and name.endswith(vsml.CLOCK_PARAM)}
        return {**params, **missing} if missing else params

    @property
    def takes_input_shape(self) -> bool:
        return bool(self.model.conv_layers)

    def make(self, params: Params, num_features: int, num_outputs: int,
             live: jax.Array | None = None,
             input_shape: tuple[int, ...] | None = None) -> tuple[InitFn, StepFn]:
        """``input_shape`` (H, W, C) of one example: needed with conv layers, which see the
        flat features as that image (row-major, as the data pipeline flattens it)."""
        model = self.model
        convs = vsml.conv_geometries(model, input_shape)
        if convs and convs[0].n_in != num_features:
            raise ValueError(f"input shape {input_shape} does not hold {num_features} features")
        sizes = vsml.layer_sizes(model, num_features, num_outputs, convs)
        fast = self.layer_fn is None
        layer_fn = self.layer_fn or (fused.layer_ticks if model.kernel == "fused"
                                     else vsml.fast_layer_ticks)

        def init(key: jax.Array) -> vsml.NetState:
            net = vsml.init_net_state(key, model, sizes, convs)
            return vsml.net_to_fast(net, len(convs)) if fast else net

        def step(net: vsml.NetState, x: jax.Array,
                 y: jax.Array) -> tuple[vsml.NetState, jax.Array]:
            return vsml.learn_step(params, net, x, y, model, layer_fn, live, convs)

        return init, step
