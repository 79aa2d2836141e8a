"""A model as a notebook user meets it: Keras' ``summary()`` and ``variables``, without training anything."""

import html

from normlab.api.command import public
from normlab.errors import ConfigError, shown
from normlab.nn import models
from normlab.nn.summary import Variable, layer_rows, param_counts, variables


class Summary:
    """Keras' ``model.summary()`` table: printed as text, shown as HTML in a notebook."""

    def __init__(self, model: models.Model):
        self.name = model.name
        self.rows = [(f"{row.name} ({row.kind})", str(row.output_shape), f"{row.params:,}")
                     for row in layer_rows(model)]
        self.counts = param_counts(model)

    def totals(self) -> list[str]:
        return [f"Total params: {self.counts['total']:,}", f"Trainable params: {self.counts['trainable']:,}",
                f"Non-trainable params: {self.counts['non_trainable']:,}"]

    def __str__(self) -> str:
        header = ("Layer (type)", "Output Shape", "Param #")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(3)]
        line = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"  # noqa: E731
        return "\n".join([f'Model: "{self.name}"', line(header), *map(line, self.rows), *self.totals()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{h}</th>" for h in ("Layer (type)", "Output Shape", "Param #"))
        body = "".join(f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td style='text-align:right'>{c}</td></tr>"
                       for a, b, c in self.rows)
        return (f"<p>Model: &quot;{esc(self.name)}&quot;</p><table><tr>{head}</tr>{body}</table>"
                f"<p>{'<br>'.join(self.totals())}</p>")


class Model:
    """A preset or a study's model: its layers, Keras-style summary and variables.

    >>> m = normlab.model("bn-after")
    >>> m.counts
    {'total': 271346, 'trainable': 268978, 'non_trainable': 2368}
    >>> [(v.path, v.trainable) for v in m.variables()][:4]
    [('batch_normalization/gamma', True), ('batch_normalization/beta', True), \
('batch_normalization/moving_mean', False), ('batch_normalization/moving_variance', False)]
    """

    def __init__(self, built: models.Model):
        self.built = built

    @property
    def name(self) -> str:
        """The preset's or study model's name: its run folders and TensorBoard runs are named after it."""
        return self.built.name

    @property
    def spec(self) -> list[dict]:
        """Every layer's kind and options, defaults filled in: the model as data (a study's ``[models.NAME]``)."""
        return [dict(layer) for layer in self.built.spec]

    @property
    def layers(self) -> list[tuple[str, str]]:
        """(layer name, Keras class) in order, named as Keras names them."""
        return [(name, layer.kind) for name, layer in self.built.layers]

    @property
    def counts(self) -> dict[str, int]:
        """Total, trainable and non-trainable parameters, as Keras counts them."""
        return param_counts(self.built)

    def summary(self) -> Summary:
        """Keras' table: each layer's output shape and parameters, then the totals.

        >>> print(normlab.model("baseline").summary())  # doctest: +ELLIPSIS
        Model: "baseline"
        ...
        Total params: 266,610
        Trainable params: 266,610
        Non-trainable params: 0
        """
        return Summary(self.built)

    def variables(self) -> list[Variable]:
        """Every variable as (path, shape, trainable), in Keras' order: kernel, bias, gamma, beta, moving stats."""
        return variables(self.built)

    def folded(self) -> "Model":
        """The inference model with every batch norm folded into its neighbouring Dense/Conv2D where it can be.

        >>> normlab.model("bn-after").folded().counts
        {'total': 266610, 'trainable': 266610, 'non_trainable': 0}
        """
        from normlab.nn.fold import folded
        return Model(folded(self.built))

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    def __repr__(self) -> str:
        return f"<normlab.Model {self.name!r}: {len(self.layers)} layers, {self.counts['total']:,} params>"


@public
def model(name: str, study=None, data=None) -> Model:
    """A preset (baseline, bn-after, bn-before, cnn-bn, ...) or a ``[models.NAME]`` of a study file, built with
    the study's settings (the seed study's by default) for ``data``'s images and classes (the study's dataset by
    default; a name, a path or arrays, as ``normlab.data`` takes them).

    >>> normlab.model("bn-before")
    <normlab.Model 'bn-before': 9 layers, 270,946 params>
    >>> normlab.model("bn-before", data="cifar10")
    <normlab.Model 'bn-before': 9 layers, 966,498 params>
    """
    from normlab.api.running import study_config
    if not isinstance(name, str):
        raise ConfigError(f"name must be a preset or study model's name (text), got {shown(name)}")
    # The data first: the study's presets are checked against it, then this one (resnet20 fits CIFAR's images only).
    return Model(study_config(study, {"data": data, "presets": [name]}).model(name))
