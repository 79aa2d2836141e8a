"""The public API's reference (docs/api.md) and its examples: the file is what the docstrings say, every public name
is documented with an example, and every example runs and prints what it shows, as a reader would run it."""

import doctest
import functools
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

import normlab
from normlab.api import reference

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# A run folder an example writes (``out="runs/..."``), and any run path an example names.
WRITES = re.compile(r"""\bout\s*=\s*["'](runs/[^"']+)["']""")
NAMES_PATH = re.compile(r"""["'](runs/[^"']+)["']""")
# The calls that read Fashion-MNIST: an example making one, or reading what one wrote, needs the real data.
DATA_CALL = re.compile(r"\bnormlab\.(data|train|reproduce|run|diagnose|evaluate)\(")


def doctests(name: str) -> list[doctest.DocTest]:
    """The examples of ``normlab.NAME`` (a class's and its methods' too), with only ``normlab`` imported: what a
    reader has after ``import normlab``."""
    obj = reference.public(name)
    found = doctest.DocTestFinder().find(obj, f"normlab.{name}", module=inspect.getmodule(obj),
                                         globs={"normlab": normlab})
    return [test for test in found if test.examples]


@functools.cache
def sources(name: str) -> str:
    return "\n".join(example.source for test in doctests(name) for example in test.examples)


def writers() -> dict[str, str]:
    """run path -> the public name whose example writes it."""
    return {path: name for name in normlab.__all__ for path in WRITES.findall(sources(name))}


def depends_on(name: str) -> list[str]:
    """The public names whose examples write a run folder that ``name``'s examples read."""
    written, own = writers(), sources(name)
    needed = [written[path] for read in NAMES_PATH.findall(own) for path in written
              if read == path or read.startswith(path + "/")]
    return [other for other in dict.fromkeys(needed) if other != name]


def needs_data(name: str, seen: frozenset = frozenset()) -> bool:
    return bool(DATA_CALL.search(sources(name))) or any(
        needs_data(other, seen | {name}) for other in depends_on(name) if other not in seen)


def by_name(check):
    """One test per public name; the examples that read Fashion-MNIST marked ``full_data``."""
    return pytest.mark.parametrize("name", [
        pytest.param(name, marks=[pytest.mark.full_data] if check and needs_data(name) else [])
        for name in normlab.__all__])


def test_docs_api_md_is_rendered_from_the_docstrings():
    assert DOCS.is_file(), "docs/api.md is missing: run `make docs`"
    assert DOCS.read_text(encoding="utf-8") == reference.render(), "docs/api.md is out of date: run `make docs`"


def test_check_exits_1_with_one_line_when_the_file_differs(tmp_path, capsys):
    text = reference.render()
    same, stale = tmp_path / "same.md", tmp_path / "stale.md"
    same.write_text(text, encoding="utf-8")
    stale.write_text(text.replace("normlab.model(", "normlab.modle(", 1), encoding="utf-8")
    assert reference.main(["--check", str(same)]) == 0
    assert capsys.readouterr().err == ""
    assert reference.main(["--check", str(stale)]) == 1
    assert reference.main(["--check", str(tmp_path / "missing.md")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("run `make docs`" in line for line in err)


def test_the_reference_lists_every_name_in_order_with_its_examples_as_python_blocks():
    text = reference.render()
    headings = re.findall(r"^## `(?:class )?normlab\.(\w+)(?:\(\))?`$", text, re.M)
    assert headings == normlab.__all__
    blocks = "\n".join(re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S))
    for name in normlab.__all__:
        for test in doctests(name):
            for example in test.examples:
                first = example.source.splitlines()[0]
                assert f">>> {first}\n" in blocks, f"{test.name}: {first!r} is not in a python block"
                if example.want:
                    assert example.want.splitlines()[0] in blocks, f"{test.name}: output of {first!r} is not shown"


def test_signatures_are_written_like_source_with_paths_as_paths():
    def short(folder=Path("runs") / "x", *, seed: int | None = None, **options) -> Path:
        ...

    def long(alpha_parameter_name: str, beta_parameter_name: int = 1, gamma_parameter_name: float = 0.5, /,
             delta_parameter_name=None, *rest, epsilon_parameter_name: bool = True):
        ...

    assert reference.signature("f", short) == "f(folder=Path('runs/x'), *, seed: int | None = None, **options) -> Path"
    assert reference.signature("g", long) == (
        "g(\n    alpha_parameter_name: str,\n    beta_parameter_name: int = 1,\n"
        "    gamma_parameter_name: float = 0.5,\n    /,\n    delta_parameter_name=None,\n    *rest,\n"
        "    epsilon_parameter_name: bool = True,\n)")


@by_name(check=False)
def test_a_public_name_is_the_api_object_not_a_subpackage(name):
    """``normlab.data``, ``normlab.train``, ... must stay the API's even after the package imported its
    subpackage of the same name (Python then binds the subpackage to the attribute)."""
    if importlib.util.find_spec(f"normlab.{name}") is not None:
        importlib.import_module(f"normlab.{name}")
    obj = getattr(normlab, name)
    assert not inspect.ismodule(obj), (f"normlab.{name} is the subpackage {obj.__name__} once that is imported: "
                                       f"normlab.{name}(...) then fails")


@by_name(check=False)
def test_a_public_name_has_a_docstring_and_a_function_an_example(name):
    obj = reference.public(name)
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        pytest.skip(f"normlab.{name} is neither a function nor a class")
    assert inspect.getdoc(obj), f"normlab.{name} has no docstring"
    if inspect.isfunction(obj):
        assert any(">>>" in line for line in obj.__doc__.splitlines()), f"normlab.{name} has no >>> example"
    else:
        bare = [member for member, value in reference.members(obj)
                if not inspect.getdoc(value.fget if isinstance(value, property) else value)]
        assert not bare, f"normlab.{name}: {', '.join(bare)} without a docstring (docs/api.md shows them)"


class Examples:
    """Runs each public name's examples once per module, in one working folder, after the examples whose run
    folders they read (``normlab.load("runs/doc-train")`` needs ``normlab.train``'s)."""

    def __init__(self, folder: Path):
        self.folder, self.outcome = folder, {}

    def run(self, name: str) -> str:
        """What went wrong ("" if nothing): the doctest runner's own report, or the example it depends on."""
        if name in self.outcome:
            return self.outcome[name]
        self.outcome[name] = f"normlab.{name}'s examples depend on themselves"  # a cycle, if one comes back here
        for other in depends_on(name):
            if self.run(other):
                self.outcome[name] = (f"normlab.{name}'s examples read what normlab.{other}'s write, and those "
                                      f"failed (see the test of {other})")
                return self.outcome[name]
        report, runner = [], doctest.DocTestRunner(optionflags=FLAGS)
        for test in doctests(name):
            runner.run(test, out=report.append)
        self.outcome[name] = "".join(report)
        return self.outcome[name]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return Examples(tmp_path_factory.mktemp("api-examples"))


@by_name(check=True)
def test_the_examples_run_and_print_what_they_show(name, examples, cli_env, monkeypatch, request):
    if not doctests(name):
        pytest.skip(f"normlab.{name} has no examples")
    if needs_data(name):
        request.getfixturevalue("real_data")
    monkeypatch.chdir(examples.folder)
    monkeypatch.setenv("XDG_CACHE_HOME", cli_env["XDG_CACHE_HOME"])
    failed = examples.run(name)
    if failed:
        pytest.fail(failed, pytrace=False)
