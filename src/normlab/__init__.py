"""normlab: batch normalization, reproduced, measured and explained.

Importing normlab changes nothing in the process: the entry points (the CLI, a worker, a bench child) call
``normlab.runtime.configure()`` before JAX starts, and a notebook may call it too.
"""

__version__ = "0.1.0"
