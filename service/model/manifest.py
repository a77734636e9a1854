"""The ``model.json`` schema (pydantic): what a model folder in the store declares about itself.

A model folder holds ``model.json`` (this manifest) and a safetensors weights file. The manifest
carries the input spec, the labels, the network as a list of nodes in execution order, and a
declaration (dtype and shape) and sha256 for every tensor in the weights file. Each node's
attributes, input count and parameter roles are checked against its op's spec (``ops``) here,
so a malformed node is reported when the manifest is read.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .ops import Attrs, NoAttrs, attrs_problem, op_spec, registered_ops

FORMAT: Final = "bnn-model"
FORMAT_VERSION: Final = 1
GRAPH_INPUT = "input"
MANIFEST_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"

ResizePolicy = Literal["stretch", "fit", "center_crop", "none"]
TensorDType = Literal["uint8", "float32"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,255}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What ``predict`` takes and how ``preprocess`` gets there from an image.

    resize: ``stretch`` (to width x height, ignoring the aspect ratio), ``fit`` (keep the aspect
    ratio, pad with black to the size), ``center_crop`` (scale the shorter side, crop the middle)
    or ``none`` (the image must already have the size). ``invert`` maps each pixel p to 1 - p
    (after scaling to [0, 1], before ``(p - mean) / std``).
    """

    channels: Literal[1, 3]
    height: int = Field(ge=1, le=8192)
    width: int = Field(ge=1, le=8192)
    resize: ResizePolicy = "stretch"
    mean: list[float]
    std: list[float]
    invert: bool = False

    @model_validator(mode="after")
    def _per_channel(self) -> InputSpec:
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) != self.channels:
                raise ValueError(f"{field} needs one value per channel ({self.channels}), got {len(values)}")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        return self


class TensorSpec(_Strict):
    dtype: TensorDType
    shape: list[int]

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int]) -> list[int]:
        if any(d < 0 for d in shape):
            raise ValueError(f"dimensions must be >= 0, got {shape}")
        return shape


class WeightsSpec(_Strict):
    file: str = WEIGHTS_FILE
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tensors: dict[str, TensorSpec]


class Node(_Strict):
    """One operation: ``inputs`` name the graph input or earlier nodes; ``params`` map a role
    (``weight``, ``scale``, ``bias``...) to a tensor name in the weights file. ``attrs`` are
    validated by the op's own :class:`~service.model.ops.Attrs` model."""

    name: str
    op: str
    inputs: list[str]
    attrs: SerializeAsAny[Attrs] = Field(default_factory=dict, validate_default=True)
    params: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _node_name(cls, name: str) -> str:
        if name == GRAPH_INPUT or not _NODE_NAME.match(name):
            raise ValueError(f"invalid node name {name!r}")
        return name

    @field_validator("op")
    @classmethod
    def _known_op(cls, op: str, info: ValidationInfo) -> str:
        if op_spec(op) is None:
            raise ValueError(f"node {info.data.get('name')!r}: unknown op {op!r} (known: {list(registered_ops())})")
        return op

    @field_validator("attrs", mode="before")
    @classmethod
    def _op_attrs(cls, value: Any, info: ValidationInfo) -> Attrs:
        spec = op_spec(info.data.get("op", ""))
        if spec is None:  # the op is reported on its own
            return NoAttrs()
        if isinstance(value, spec.attrs):
            return value
        where = f"node {info.data.get('name')!r} ({spec.name})"
        if not isinstance(value, dict):
            raise ValueError(f"{where}: attrs must be an object, got {type(value).__name__}")
        try:
            return spec.attrs.model_validate(value)
        except ValidationError as e:
            raise ValueError(f"{where}: {attrs_problem(e)}") from None

    @model_validator(mode="after")
    def _fits_op(self) -> Node:
        spec = op_spec(self.op)
        if spec is not None and (problems := spec.node_problems(len(self.inputs), set(self.params))):
            raise ValueError(f"node {self.name!r} ({self.op}): {'; '.join(problems)}")
        return self


class Graph(_Strict):
    nodes: list[Node] = Field(min_length=1)
    output: str

    @model_validator(mode="after")
    def _references(self) -> Graph:
        defined = {GRAPH_INPUT}
        for node in self.nodes:
            if node.name in defined:
                raise ValueError(f"node name {node.name!r} is used twice")
            for ref in node.inputs:
                if ref not in defined:
                    raise ValueError(f"node {node.name!r} takes input {ref!r}, which is not defined before it")
            defined.add(node.name)
        if self.output not in defined or self.output == GRAPH_INPUT:
            raise ValueError(f"graph output {self.output!r} is not a node")
        return self


class Manifest(_Strict):
    format: Literal["bnn-model"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    name: str
    version: str = Field(min_length=1, max_length=64)
    description: str = ""
    input: InputSpec
    labels: list[str] = Field(min_length=1)
    graph: Graph
    weights: WeightsSpec

    @field_validator("name")
    @classmethod
    def _model_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"model name {name!r} must be 1-128 of [A-Za-z0-9._-], starting alphanumeric")
        return name

    @model_validator(mode="after")
    def _tensor_references(self) -> Manifest:
        used: set[str] = set()
        for node in self.graph.nodes:
            for role, tensor in node.params.items():
                if tensor not in self.weights.tensors:
                    raise ValueError(f"node {node.name!r} {role} refers to tensor {tensor!r}, not declared in weights")
                if tensor in used:
                    raise ValueError(f"tensor {tensor!r} is used by more than one parameter")
                used.add(tensor)
        unused = sorted(set(self.weights.tensors) - used)
        if unused:
            raise ValueError(f"weights declare tensors no node uses: {unused[:5]}")
        return self
