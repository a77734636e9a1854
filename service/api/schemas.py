"""Request and response bodies (pydantic only; the routes live in routes/)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

# Strict: a number must be a JSON number ("1e5", true and "2" are refused, not converted).
IntOrPair = StrictInt | tuple[StrictInt, StrictInt]
PadValue = Annotated[StrictInt, Field(ge=-1, le=1)]


class ErrorBody(BaseModel):
    error: str = Field(examples=["model 'nope' not found; available: ['fashion-mnist-bnn']"])


# ---- /predict ----------------------------------------------------------------------------


class Prediction(BaseModel):
    index: int = Field(examples=[9])
    label: str = Field(examples=["Ankle boot"])
    probability: float = Field(examples=[0.93])


class ImageResult(BaseModel):
    filename: str = Field(examples=["boot.png"])
    predictions: list[Prediction]


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "fashion-mnist-bnn",
                    "version": "1",
                    "results": [
                        {
                            "filename": "boot.png",
                            "predictions": [
                                {"index": 9, "label": "Ankle boot", "probability": 0.93},
                                {"index": 7, "label": "Sneaker", "probability": 0.05},
                            ],
                        }
                    ],
                }
            ]
        }
    )

    model: str
    version: str
    results: list[ImageResult]


# ---- /conv -------------------------------------------------------------------------------


class TensorBody(BaseModel):
    """A float32 tensor: ``data`` (flat, row-major) or ``b64`` (little-endian float32 bytes), not both."""

    model_config = ConfigDict(extra="forbid")

    shape: list[StrictInt] = Field(min_length=1, max_length=8, examples=[[1, 1, 3, 3]])
    dtype: Literal["float32"] = "float32"
    data: list[StrictFloat] | None = Field(None, examples=[[1, -1, 1, -1, 1, -1, 1, -1, 1]])
    b64: str | None = Field(None, examples=["AACAPwAAgL8AAIA/AACAvwAAgD8AAIC/AACAPwAAgL8AAIA/"])


class LayerRef(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(examples=["fashion-mnist-bnn"])
    layer: str = Field(examples=["features.3"])


class ConvRequest(BaseModel):
    """Binary convolution of sign(input) with sign(weight), exactly as ``service.kernel.binary_conv2d``.

    Binarisation: +1 where x >= 0 (so 0 and +inf give +1), -1 otherwise (so NaN and -inf give -1).
    Give either ``weight`` or ``model`` + ``layer`` (a loaded model's binary layer, whose stored
    stride/padding/dilation/pad_value apply; geometry given in the request must then match it).
    The result is the raw correlation of the ±1 values: a layer's fused scale and bias are not applied.
    """

    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "input": {"shape": [1, 1, 3, 3], "data": [1, -1, 1, -1, 1, -1, 1, -1, 1]},
                    "weight": {"shape": [1, 1, 2, 2], "data": [1, 1, -1, -1]},
                    "stride": 1,
                    "padding": 0,
                    "dilation": 1,
                    "pad_value": 0,
                },
                {
                    "input": {"shape": [1, 16, 14, 14], "dtype": "float32", "b64": "<3136 float32 values, base64>"},
                    "model": "fashion-mnist-bnn",
                    "layer": "features.3",
                },
            ]
        },
    )

    input: TensorBody
    weight: TensorBody | None = None
    model: str | None = None
    layer: str | None = None
    stride: IntOrPair | None = Field(None, description="int or [h, w], >= 1 (default 1)")
    padding: IntOrPair | None = Field(None, description="int or [h, w], >= 0 (default 0)")
    dilation: IntOrPair | None = Field(None, description="int or [h, w], >= 1 (default 1)")
    pad_value: PadValue | None = Field(None, description="value of padded cells: -1, 0 or 1 (default 0)")


class ConvResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [1, 1, 2, 2], "data": [0.0, 0.0, 0.0, 0.0]}]})

    shape: list[int]
    dtype: Literal["float32"] = "float32"
    data: list[float] | None = None
    b64: str | None = None


# ---- /models -----------------------------------------------------------------------------


class ModelStatus(BaseModel):
    name: str = Field(examples=["fashion-mnist-bnn"])
    version: str | None = Field(None, examples=["1"])
    ready: bool
    error: str | None = Field(None, examples=[None])
    packed_size_bytes: int | None = Field(None, examples=[23104])


class ModelList(BaseModel):
    default_model: str | None
    models: list[ModelStatus]


class ModelDetail(ModelStatus):
    summary: dict[str, Any] | None = Field(None, description="The model's own summary: input, labels, layers, sizes.")


# ---- Open Inference Protocol v2 ----------------------------------------------------------


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, dict[str, Any]] | None = Field(
        None,
        description="Per tensor name, what its values mean: for the input its layout and the preprocessing "
        "that maps an image's 0..255 pixels to it (scale, invert, mean, std, resize) and the BYTES form that "
        "takes encoded images instead; for the outputs their labels.",
        examples=[
            {
                "input": {
                    "datatype": "FP32",
                    "shape": [-1, 1, 28, 28],
                    "layout": "NCHW",
                    "color_mode": "L",
                    "value": "(pixel * scale - mean[c]) / std[c]",
                    "scale": 1 / 255,
                    "channels": 1,
                    "height": 28,
                    "width": 28,
                    "resize": "stretch",
                    "mean": [0.286],
                    "std": [0.353],
                    "invert": False,
                    "encoded_datatype": "BYTES",
                    "encoded_shape": [-1],
                    "encoded_formats": ["PNG", "JPEG", "WEBP", "BMP"],
                },
                "logits": {"datatype": "FP32", "shape": [-1, 10], "value": "class scores", "labels": ["T-shirt"]},
            }
        ],
    )


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2InputTensor(BaseModel):
    name: str = Field(examples=["input"])
    shape: list[int] = Field(examples=[[1, 1, 28, 28]])
    datatype: str = Field(examples=["FP32"])
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size` (binary tensor extension): the values follow the JSON in the body."
    )
    data: list[Any] | None = Field(None, description="Row-major values, flat or nested (absent for binary data).")


class V2RequestedOutput(BaseModel):
    name: str = Field(examples=["logits"])
    parameters: dict[str, Any] | None = Field(None, examples=[{"classification": 3}])


class V2InferRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}],
                    "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
                }
            ]
        }
    )

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2InputTensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None  # absent when the values are sent as binary data after the JSON


class V2InferResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2OutputTensor]


# ---- Triton's model configuration and statistics extensions ------------------------------


class TritonTensorConfig(BaseModel):
    """One input or output of a Triton model configuration; ``dims`` exclude the batch dimension."""

    name: str
    data_type: str = Field(examples=["TYPE_FP32"])
    format: str | None = Field(None, examples=["FORMAT_NCHW"])
    dims: list[int] = Field(examples=[[1, 28, 28]])
    is_shape_tensor: bool = False


class TritonDynamicBatching(BaseModel):
    preferred_batch_size: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = Field(description="Setting BNN_MAX_QUEUE_DELAY_MS, in microseconds.")
    preserve_ordering: bool = True


class TritonInstanceGroup(BaseModel):
    name: str
    kind: str = "KIND_CPU"
    count: int = 1


class V2ModelConfig(BaseModel):
    """The model's configuration in the shape Triton's ``GET /v2/models/{name}/config`` answers (its
    ``ModelConfig`` protobuf as JSON), as tritonclient's ``get_model_config`` returns it."""

    name: str
    platform: str
    backend: str
    max_batch_size: int = Field(description="Most images one model call takes (setting BNN_MAX_BATCH_SIZE).")
    input: list[TritonTensorConfig]
    output: list[TritonTensorConfig]
    dynamic_batching: TritonDynamicBatching
    instance_group: list[TritonInstanceGroup]
    parameters: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="The input's preprocessing, as Triton's string parameters.",
        examples=[{"mean": {"string_value": "[0.286]"}}],
    )


class V2DurationStat(BaseModel):
    count: int
    ns: int


class V2InferenceStats(BaseModel):
    success: V2DurationStat
    fail: V2DurationStat
    queue: V2DurationStat
    compute_input: V2DurationStat
    compute_infer: V2DurationStat
    compute_output: V2DurationStat
    cache_hit: V2DurationStat
    cache_miss: V2DurationStat


class V2BatchStat(BaseModel):
    batch_size: int
    compute_input: V2DurationStat
    compute_infer: V2DurationStat
    compute_output: V2DurationStat


class V2ModelStat(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="The last model call, in milliseconds since the epoch (0: none yet).")
    inference_count: int = Field(description="Images inferred.")
    execution_count: int = Field(description="Model calls (batches).")
    inference_stats: V2InferenceStats
    batch_stats: list[V2BatchStat]


class V2ModelStatsResponse(BaseModel):
    """Triton's statistics extension: ``GET /v2/models[/{name}[/versions/{version}]]/stats``."""

    model_config = ConfigDict(protected_namespaces=())

    model_stats: list[V2ModelStat]


class RepositoryIndexEntry(BaseModel):
    """One line of ``POST /v2/repository/index`` (Triton's model repository extension)."""

    name: str
    version: str = Field(description="A served version; empty for a model folder that is not served.")
    state: Literal["READY", "UNAVAILABLE"]
    reason: str = Field("", description="Why it is not served (the load error, or 'unloaded').")
