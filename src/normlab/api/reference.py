"""docs/api.md, written from the code: the signature and docstring of every name in ``normlab.__all__``, in that
order, so the reference cannot drift from the API (a test compares the file with ``render()``).

    python -m normlab.api.reference > docs/api.md     # what `make docs` runs
    python -m normlab.api.reference --check docs/api.md
"""

import argparse
import enum
import functools
import inspect
import re
import sys
from pathlib import PurePath

import normlab
from normlab.files import FileProblem, read_text

WIDTH = 100  # a signature longer than this is written one parameter per line
HEADER = """\
# normlab API reference

<!-- Generated from the docstrings by `make docs` (python -m normlab.api.reference > docs/api.md).
     Do not edit by hand: change the docstrings and run `make docs`; a test fails while this file is stale. -->

*Generated from the docstrings by `make docs`; do not edit by hand.*

Everything below is exported by the package itself: `import normlab`, then `normlab.NAME`. The examples are run
as tests, from an empty working folder; some read the run folders (`runs/doc-*`) that earlier examples wrote.
"""


def public(name: str):
    """``normlab.NAME`` as the API exports it (a subpackage of the same name never hides it: ``normlab._Package``)."""
    return getattr(normlab, name)


def _qualified(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _annotation(annotation) -> str:
    """An annotation as source would write it; ``Path``, and the package's public classes by their exported name."""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    text = re.sub(r"\bpathlib\.(Pure)?(Posix|Windows)?Path\b", lambda m: m.group(0).split(".")[1], text)
    for name in normlab.__all__:
        obj = public(name)
        if inspect.isclass(obj):
            text = re.sub(rf"\b{re.escape(_qualified(obj))}\b", name, text)
    return text


def _default(value) -> str:
    """repr, but the same on every machine and run: a Path as ``Path('...')``, no memory addresses."""
    if isinstance(value, PurePath):
        return f"Path({str(value)!r})"
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if inspect.isroutine(value) or inspect.isclass(value):
        return getattr(value, "__qualname__", getattr(value, "__name__", type(value).__name__))
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _parameters(signature: inspect.Signature) -> list[str]:
    """Each parameter as source would write it, with the ``/`` and ``*`` markers where they belong."""
    out, kinds = [], [p.kind for p in signature.parameters.values()]
    for index, param in enumerate(signature.parameters.values()):
        first_keyword = param.kind == param.KEYWORD_ONLY and param.KEYWORD_ONLY not in kinds[:index]
        if first_keyword and param.VAR_POSITIONAL not in kinds:
            out.append("*")
        text = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "") + param.name
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            text += (" = " if param.annotation is not param.empty else "=") + _default(param.default)
        out.append(text)
        if param.kind == param.POSITIONAL_ONLY and param.POSITIONAL_ONLY not in kinds[index + 1:]:
            out.append("/")
    return out


def signature(name: str, obj, drop_first: bool = False) -> str:
    """``name(parameters) -> return``, one line, or one parameter per line when that is longer than ``WIDTH``."""
    sig = inspect.signature(obj)
    if drop_first:
        sig = sig.replace(parameters=list(sig.parameters.values())[1:])
    params = _parameters(sig)
    returns = "" if sig.return_annotation is sig.empty else f" -> {_annotation(sig.return_annotation)}"
    line = f"{name}({', '.join(params)}){returns}"
    if len(line) <= WIDTH or not params:
        return line
    return f"{name}(\n" + "".join(f"    {p},\n" for p in params) + f"){returns}"


def docstring(obj) -> str:
    """The docstring as written (cleaned of its indentation); ``>>>`` examples become Python code blocks."""
    doc = obj.__doc__ if isinstance(obj.__doc__, str) else None
    if not doc:
        return "*(no docstring)*"
    lines, out, index = inspect.cleandoc(doc).splitlines(), [], 0
    while index < len(lines):
        if not lines[index].lstrip().startswith(">>>"):
            out.append(lines[index])
            index += 1
            continue
        indent = len(lines[index]) - len(lines[index].lstrip())
        block = []
        while index < len(lines) and lines[index].strip():  # as in doctest, an example ends at a blank line
            line = lines[index]
            block.append(line[indent:] if line[:indent].isspace() or not indent else line.lstrip())
            index += 1
        if out and out[-1]:
            out.append("")
        out += ["```python", *block, "```", ""]
    return "\n".join(out).strip("\n")


PROPERTIES = (property, functools.cached_property)  # both read as attributes: documented alike


def members(cls: type) -> list[tuple[str, object]]:
    """The public methods and properties of ``cls`` (its own, then its bases'), in the order they are defined."""
    found = {}
    for klass in cls.__mro__[:-1]:
        for name, value in vars(klass).items():
            if not name.startswith("_") and name not in found and (
                    isinstance(value, PROPERTIES + (classmethod, staticmethod)) or inspect.isfunction(value)):
                found[name] = value
    return list(found.items())


def _slug(text: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def _member(cls_name: str, name: str, value, seen: dict[str, int]) -> list[str]:
    """A property's heading says what it returns; a method's code block gives its signature (without self)."""
    if isinstance(value, PROPERTIES):
        getter = value.fget if isinstance(value, property) else value.func
        returns = inspect.signature(getter).return_annotation if getter else inspect.Signature.empty
        kind = "property" + ("" if returns is inspect.Signature.empty else f" -> {_annotation(returns)}")
        _slug(f"{cls_name}.{name} ({kind})", seen)
        return [f"### `{cls_name}.{name}` ({kind})", "", docstring(value), ""]
    func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
    kind = {classmethod: "classmethod", staticmethod: "staticmethod"}.get(type(value), "method")
    _slug(f"{cls_name}.{name}() ({kind})", seen)
    code = signature(f"{cls_name}.{name}", func, drop_first=not isinstance(value, staticmethod))
    return [f"### `{cls_name}.{name}()` ({kind})", "", "```python", code, "```", "", docstring(func), ""]


def render() -> str:
    """The whole of docs/api.md."""
    contents, body, seen = [], [], {}
    for name in normlab.__all__:
        obj = public(name)
        kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "value"
        heading = {"class": f"class normlab.{name}", "function": f"normlab.{name}()"}.get(kind, f"normlab.{name}")
        contents.append(f"- [`{heading}`](#{_slug(heading, seen)})")
        body += [f"## `{heading}`", ""]
        if kind == "class":
            body += [docstring(obj), ""]
            for member, value in members(obj):
                body += _member(name, member, value, seen)
        elif kind == "function":
            body += ["```python", signature(f"normlab.{name}", obj), "```", "", docstring(obj), ""]
        else:
            body += [f"`{_default(obj)}`", ""]
    return "\n".join([HEADER, "## Contents", "", *contents, "", *body]).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normlab.api.reference",
                                     description="Print docs/api.md, the API reference, from the docstrings.")
    parser.add_argument("--check", metavar="FILE", help="exit 1 if FILE differs from what would be printed")
    args = parser.parse_args(argv)
    text = render()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    try:
        current = read_text(args.check, len(text.encode()) + 1)  # one byte more than ours: a longer file differs
    except FileProblem as error:
        print(f"{error}; run `make docs`", file=sys.stderr)
        return 1
    if current != text:
        print(f"{args.check} differs from the docstrings: run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
