"""The ops of the model format, one declaration each, and the registry that holds them.

An op is one :class:`OpSpec` passed to :func:`register`, in the file of its family (``conv``,
``linear``, ``norm``, ``activation``, ``pool``, ``shape``, ``arith``)::

    class LinearAttrs(Attrs):                      # the attributes in model.json, strictly typed
        in_features: Count
        out_features: Count

    register(OpSpec(
        "linear", LinearAttrs,
        build=_build_linear,                       # Build[LinearAttrs] -> Built(fn of the inputs)
        params=(Param("weight", torch.float32, lambda a: (a.out_features, a.in_features)),
                Param("bias", torch.float32, lambda a: (a.out_features,), optional=True)),
        modules={nn.Linear: _export_linear},       # module -> Exported(attrs, float params)
        absorb_affine=fold_into_weight,            # a following BatchNorm folds into it
    ))

The manifest validates each node's attributes, inputs and parameter roles against its op's spec
when ``model.json`` is read; the executor (``graph``) builds nodes with :meth:`OpSpec.make`; the
exporter (``service.export``) turns modules and traced calls into nodes with the matchers. A new
op is one declaration in one of these files (a new family: a new file imported below).
"""

from . import activation, arith, conv, linear, norm, pool, shape
from .registry import (
    Attrs,
    BinaryLayer,
    Build,
    Built,
    Call,
    Count,
    Epilogue,
    Exported,
    ExportError,
    Fn,
    GraphError,
    NoAttrs,
    NonNegativePair,
    OpSpec,
    PadValue,
    Param,
    PositivePair,
    PositivePairOrUnset,
    as_float,
    attrs_problem,
    call_matcher,
    knows_module,
    module_matcher,
    op_spec,
    register,
    register_passthrough,
    registered_ops,
    traced_functions,
    unregister,
)

FAMILIES = (activation, arith, conv, linear, norm, pool, shape)

__all__ = [
    "FAMILIES",
    "Attrs",
    "BinaryLayer",
    "Build",
    "Built",
    "Call",
    "Count",
    "Epilogue",
    "ExportError",
    "Exported",
    "Fn",
    "GraphError",
    "NoAttrs",
    "NonNegativePair",
    "OpSpec",
    "PadValue",
    "Param",
    "PositivePair",
    "PositivePairOrUnset",
    "as_float",
    "attrs_problem",
    "call_matcher",
    "knows_module",
    "module_matcher",
    "op_spec",
    "register",
    "register_passthrough",
    "registered_ops",
    "traced_functions",
    "unregister",
]
