"""``normlab bench``: the same model and training in normlab and in Keras (TF, JAX) and PyTorch, timed apart.

Each system trains in its own child process (``python -m normlab.bench.<module>``) that writes one JSON result,
so import cost, threads and peak RSS belong to that system alone. `runner` spawns them and gathers the results,
`report` prints the table and draws the figure, `command` is the CLI entry. This package imports nothing
heavy, so a child pays only for its own framework.
"""
