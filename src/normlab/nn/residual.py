r"""Residual blocks (He et al. 2016) as data: ``{kind = "residual", layers = [...], shortcut = [...]}``.

The block's output is ``activation(merge(shortcut(x), layers(x)))``: an empty ``shortcut`` is the identity, a
projection (a strided 1x1 conv, say) otherwise; ``merge = "add"`` is Keras' ``add([shortcut, branch])``;
``activation`` defaults to ``"relu"`` (ResNet v1), ``"linear"`` leaves it out. Blocks nest. ``nn.models`` turns a
spec into a graph of layers (``Node``), the block into its branches' layers, an ``add`` and an activation, so
every layer keeps a Keras name, weights and state of its own.
"""

from normlab.errors import ConfigError, did_you_mean, shown
from normlab.nn.activations import FUNCTIONS

KIND = "residual"
MERGES = {"add": {"kind": "add"}}  # merge -> the layer that joins the branches
OPTIONS = {"layers": "a list of 1 or more layer tables (the residual branch)",
           "shortcut": "a list of layer tables (empty: the identity)",
           "merge": f"one of {', '.join(map(repr, MERGES))}",
           "activation": f"one of {', '.join(map(repr, FUNCTIONS))}"}
EXAMPLE = ('{kind = "residual", layers = [{kind = "conv2d", filters = 16, padding = "same"}], shortcut = [], '
           'activation = "relu"}')


def check(table: dict, where: str, check_list) -> dict:
    """The block with its lists checked by ``check_list(tables, where, allow_empty)`` and defaults filled in."""
    for name in table:
        if name != "kind" and name not in OPTIONS:
            raise ConfigError(f"{where} (residual): unknown option {shown(name)}; {did_you_mean(str(name), OPTIONS)}"
                              f"residual takes {', '.join(OPTIONS)}, e.g. {EXAMPLE}")
    if "layers" not in table:
        raise ConfigError(f"{where} (residual): needs layers, e.g. {EXAMPLE}")
    merge, activation = table.get("merge", "add"), table.get("activation", "relu")
    if merge not in MERGES if isinstance(merge, str) else True:
        raise ConfigError(f"{where} (residual): merge must be {OPTIONS['merge']}, got {shown(merge)}")
    if activation not in FUNCTIONS if isinstance(activation, str) else True:
        raise ConfigError(f"{where} (residual): activation must be {OPTIONS['activation']}, got {shown(activation)}")
    return {"kind": KIND, "layers": check_list(table["layers"], f"{where} layers", False),
            "shortcut": check_list(table.get("shortcut", []), f"{where} shortcut", True),
            "merge": merge, "activation": activation}
