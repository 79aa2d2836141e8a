"""What one training step is made of, in XLA's optimised program: the operations of the epoch loop's body.

Every operation XLA's CPU runtime executes in a step is a separate pass over its operands (a kernel call, a
library call or a copy), so their count is what "fewer passes" is measured in; the kinds say which.
"""

import re
from collections import Counter

# An instruction line of HLO text: "%name = f32[...] kind(...)", "ROOT %name = ... kind(...)".
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*.*?\s([a-z][\w\-]*)\(")
FREE = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast"}  # no pass: names and views


def computations(hlo: str) -> dict[str, list[str]]:
    """Each computation's instruction kinds, by name."""
    found, current = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)  # unindented: instructions are not
        if header:
            current = found.setdefault(header.group(1), [])
        elif current is not None and (match := INSTRUCTION.match(line)):
            current.append(match.group(1))
    return found


def step_ops(hlo: str) -> dict:
    """The operations of the largest while-loop body (the epoch's scan over batches): total passes and by kind."""
    bodies = re.findall(r"while\(.*?body=%?([\w.\-]+)", hlo)
    program = computations(hlo)
    body = max(bodies, key=lambda name: len(program.get(name, [])))
    kinds = Counter(kind for kind in program[body] if kind not in FREE)
    return {"passes": sum(kinds.values()), "by_kind": dict(kinds.most_common())}
