"""Where a command's lines and progress bars go: a terminal (rich), a Jupyter notebook (HTML updated in place, so
the saved notebook shows the final bars), or nowhere (``progress=False``). Names and paths are the user's text,
so lines are printed literally, never as rich markup."""

import contextlib
import html


class Display:
    def __init__(self, enabled: bool = True):
        from rich.console import Console
        self.enabled, self.console = enabled, Console()
        self.notebook = enabled and self.console.is_jupyter

    def say(self, text: str) -> None:
        """A line as it is: never wrapped (a path stays one line, whatever the width) nor read as markup."""
        if self.enabled:
            print(text, flush=True)

    @contextlib.contextmanager
    def bars(self, totals: dict[str, int], first: str):
        """Bars named by ``totals`` (name -> steps), each described as ``first`` until its first ``update``."""
        if not self.enabled:
            yield _Quiet()
        elif self.notebook:
            yield _NotebookBars(totals, first)
        else:
            from rich.markup import escape
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=self.console) as progress:
                yield _RichBars(progress, {name: progress.add_task(f"{escape(name):<10} {escape(first)}", total=n)
                                           for name, n in totals.items()})


class _Quiet:
    def update(self, name: str, advance: int, text: str) -> None:
        pass


class _RichBars:
    def __init__(self, progress, tasks: dict):
        self.progress, self.tasks = progress, tasks

    def update(self, name: str, advance: int, text: str) -> None:
        from rich.markup import escape
        self.progress.update(self.tasks[name], advance=advance, description=f"{escape(name):<10} {escape(text)}")

    def say(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)


class _NotebookBars:
    """An HTML table of <progress> bars, one display updated in place (no widget library needed)."""

    def __init__(self, totals: dict[str, int], first: str):
        from IPython.display import HTML, display
        self.html = HTML
        self.state = {name: [0, total, first] for name, total in totals.items()}
        self.handle = display(self.html(self._render()), display_id=True)

    def _render(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td><progress value={done} max={total}></progress></td>"
                       f"<td>{done}/{total}</td><td>{html.escape(text)}</td></tr>"
                       for name, (done, total, text) in self.state.items())
        return f"<table>{rows}</table>"

    def update(self, name: str, advance: int, text: str) -> None:
        entry = self.state[name]
        entry[0], entry[2] = min(entry[0] + advance, entry[1]), text
        self.handle.update(self.html(self._render()))

    def say(self, text: str) -> None:
        print(text, flush=True)
