"""The structure of a functional model, read from its public config.

A functional model's ``get_config()`` lists every layer with the layers its calls read
(``keras_history``); ``get_layer(name).input`` / ``.output`` give the tensors of a layer's
first call, which is its call in the model that built it. From these two public views
this module finds the shared representation of a multi-output model (the last tensor
every output depends on) and the tensor a nested model (the base tower) produces in the
outer graph, whose own ``.output`` belongs to its inner graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras


def _histories(value) -> list[str]:
    """The names of the layers whose tensors a serialized call argument holds, in order."""
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [name for item in value.values() for name in _histories(item)]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _histories(item)]
    return []


def _layers(model: keras.Model) -> list[dict]:
    config = model.get_config()
    if "layers" not in config:
        raise TypeError(f"A functional keras.Model is needed. Received: {type(model).__name__}")
    return config["layers"]


def layer_inputs(model: keras.Model) -> dict[str, list[str]]:
    """``{layer name: names of the layers it reads}`` of a functional ``model``'s graph.

    Raises:
        TypeError: ``model`` is not functional (its config lists no layers).
    """
    return {layer["name"]: _histories(layer.get("inbound_nodes", [])) for layer in _layers(model)}


def named_outputs(model: keras.Model, outputs=None) -> dict:
    """``{output name: output}`` of ``model``'s output tensors, or of ``outputs`` (what calling or predicting with it gave)."""
    outputs = model.output if outputs is None else outputs
    if isinstance(outputs, Mapping):
        return dict(outputs)
    return dict(zip(model.output_names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))


def _output_layers(model: keras.Model) -> dict[str, str]:
    """``{output name: name of the layer that produces it}``."""
    def flat(value):  # the config's nested [layer name, node index, tensor index] triples
        if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
            return [value[0]]
        items = value.values() if isinstance(value, Mapping) else value
        return [name for item in items for name in flat(item)]

    return dict(zip(named_outputs(model), flat(model.get_config()["output_layers"])))


def _ancestors(graph: Mapping[str, list[str]], name: str) -> set[str]:
    """``name`` and every layer it depends on."""
    seen, stack = set(), [name]
    while stack:
        layer = stack.pop()
        if layer not in seen:
            seen.add(layer)
            stack.extend(graph[layer])
    return seen


def layer_output(model: keras.Model, name: str):
    """The tensor layer ``name`` produces in ``model``'s graph.

    A nested model's ``.output`` is its inner graph's, so its output in ``model`` is read
    as the input of a layer that consumes it.

    Raises:
        ValueError: the layer is called more than once in ``model``, has several outputs,
            or is read by no layer and is no output of ``model``.
    """
    layer = model.get_layer(name)
    calls = {item["name"]: len(item.get("inbound_nodes", [])) for item in _layers(model)}
    if calls[name] > 1:
        raise ValueError(f"Layer {name!r} is called {calls[name]} times in the model; one call is needed.")
    if not isinstance(layer, keras.Model):
        if isinstance(layer.output, (list, tuple, Mapping)):
            raise ValueError(f"Layer {name!r} has {len(layer.output)} outputs; one is needed.")
        return layer.output
    graph = layer_inputs(model)
    for consumer, sources in graph.items():
        if name in sources:
            inputs = model.get_layer(consumer).input
            inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            if len(inputs) == len(sources):
                return inputs[sources.index(name)]
    for output, producer in _output_layers(model).items():
        if producer == name:
            return named_outputs(model)[output]
    raise ValueError(f"Layer {name!r} is read by no layer of {model.name!r} and is none of its outputs.")


def layer_input(model: keras.Model, name: str):
    """The tensor layer ``name`` reads in ``model``'s graph (a nested model's ``.input``
    is its inner graph's).

    Raises:
        ValueError: the layer reads several tensors (or none).
    """
    layer = model.get_layer(name)
    sources = layer_inputs(model)[name]
    if len(sources) != 1:
        raise ValueError(f"Layer {name!r} reads {len(sources)} tensors; one is needed.")
    return layer_output(model, sources[0]) if isinstance(layer, keras.Model) else layer.input


def shared_representation(model: keras.Model) -> str:
    """The name of the layer whose output is ``model``'s shared representation: the last
    layer every output depends on, through which alone the heads reach the shared layers.

    Raises:
        ValueError: fewer than two outputs, outputs that share no layer, an output that is
            itself the shared representation, or heads that also read an earlier layer of
            the tower.
    """
    graph = layer_inputs(model)
    producers = _output_layers(model)
    inputs = {name for name, sources in graph.items() if not sources}
    where = f"Received: a model with outputs {list(producers)}"
    upstream = [_ancestors(graph, p) for p in producers.values()]
    shared = set.intersection(*upstream) - inputs if upstream else set()
    if len(producers) < 2 or not shared:
        raise ValueError(
            "gradient_level='features' needs at least two outputs computed from a shared representation "
            f"(the base tower's output); use gradient_level='parameters'. {where}"
        )
    last = max(shared, key=lambda name: len(_ancestors(graph, name)))
    if last in producers.values():
        raise ValueError(f"gradient_level='features' found an output as the shared representation. {where}")
    tower = _ancestors(graph, last)
    for head_layer in set.union(*upstream) - tower:
        if any(source in tower and source != last for source in graph[head_layer]):
            raise ValueError(
                f"gradient_level='features' needs the heads to read the shared layers only through one tensor "
                f"(here {last!r}'s output); use gradient_level='parameters'. {where}"
            )
    return last


def all_layers(model: keras.Layer) -> list[keras.Layer]:
    """``model`` and every layer nested in it (through models' ``.layers``), depth first."""
    found = [model]
    for layer in getattr(model, "layers", []):
        found += all_layers(layer)
    return found
