"""normlab's public Python API, exported by ``normlab`` itself (``normlab.train(...)``), one module per idea:
``model`` (a model: its summary, variables, weights and predictions), ``settings`` (a run's settings from Python
arguments), ``running`` (the commands), ``files`` (export, evaluate), ``results`` (what runs leave, as objects).
The CLI is a thin layer over the same functions."""
