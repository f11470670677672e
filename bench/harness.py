"""The benchmark harness: a registry of scenarios, a runner that takes medians, and writers.

Running
-------
``python -m tidings.bench [SCENARIO ...] [--quick] [--out DIR] [--repeats N]`` (or
``bench.main(argv)``, which ``tidings bench`` calls) runs the named scenarios (default:
every registered one, in registration order) and writes to ``DIR`` (default
``bench-results/<timestamp>/``):

- ``results.md``: one Markdown table per scenario (median, unit, runs, engine ÷ baseline),
- ``results.json``: the same with every sample, the machine and the options,
- ``<scenario>.png``: a bar chart per scenario, engine vs its baselines with the ratios.

Adding a scenario
-----------------
Write a module ``bench/<name>.py`` with one function decorated by `scenario`, and import
the module in ``bench/__init__.py`` (importing it is what registers it)::

    from tidings.bench.harness import Progress, Row, row, scenario

    @scenario("webhook", repeats=5, quick_repeats=1)
    def webhook(quick: bool, progress: Progress) -> list[Row]:
        '''One-line description, shown by ``python -m tidings.bench --list``.'''
        n = 1_000 if quick else 50_000
        engine_rate = ...   # measure the engine (its own trio.run is fine)
        progress(0.5, "baseline")  # fraction of this repetition done, and what runs now
        raw_rate = ...      # measure the baseline on the same workload, in the same call
        return [
            row("webhook engine", engine_rate, "req/s"),
            row("webhook raw hypercorn", raw_rate, "req/s", baseline_of="webhook engine"),
        ]

A scenario that takes command-line options names them: ``@scenario("chaos",
options=("trials", "store"))`` gets ``trials=`` and ``store=`` keyword arguments from
``--trials N`` and ``--store KIND`` (None when not given); naming such an option for a
scenario that does not take it is an error.

A scenario is a plain (synchronous) function ``(quick, progress) -> list[Row]``. The
harness calls it ``repeats`` times (``quick_repeats`` with ``--quick``), each call measuring
the engine *and* its baselines once, and reports for every row name the **median** of the
samples. A row is a dict ``{"name", "value", "unit"}`` with optional keys:

- ``baseline_of``: the name of the engine row this row is a baseline for; the harness
  reports ``ratio = median(engine row) / median(this row)`` (so for a rate > 1 means the
  engine is faster; for bytes or latency < 1 means the engine is smaller or quicker),
- ``better``: ``"higher"`` (default) or ``"lower"``, so readers know which way is good,
- ``note``: a short remark printed under the table (e.g. why a baseline ran smaller).

Rows must keep the same names from one repetition to the next. A figure that does not
vary between runs (memory from ``tracemalloc``) or a very slow baseline may be measured
only when ``progress.repetition == 0``; its row is then absent from later repetitions and
its "median" is over the samples there are (the ``runs`` column says how many). Scenarios start their own
``trio.run`` per measurement, so ``bench.main`` must not be called from inside a running
trio loop (use a thread or a subprocess there). Timing uses the real clock.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NotRequired, Protocol, TextIO, TypedDict


class Row(TypedDict):
    """One measured figure from one repetition of a scenario."""

    name: str
    value: float
    unit: str
    baseline_of: NotRequired[str]
    better: NotRequired[str]
    note: NotRequired[str]


def row(
    name: str,
    value: float,
    unit: str,
    *,
    baseline_of: str | None = None,
    better: str = "higher",
    note: str | None = None,
) -> Row:
    """Make a `Row`; `baseline_of` names the engine row this one is the baseline for."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    made = Row(name=name, value=float(value), unit=unit, better=better)
    if baseline_of is not None:
        made["baseline_of"] = baseline_of
    if note is not None:
        made["note"] = note
    return made


class Progress(Protocol):
    """What a scenario calls to report how far one repetition has got (0.0 to 1.0).

    `repetition` is the index (from 0) of the repetition running now: a scenario may
    measure deterministic or very slow figures only when it is 0 (see the module doc).
    """

    repetition: int

    def __call__(self, fraction: float, label: str = "") -> None: ...


ScenarioFn = Callable[..., list[Row]]  # (quick, progress, **its options) -> rows
OPTIONS = ("trials", "store", "loadgen")  # what `main` can pass to scenarios that name them


@dataclass(frozen=True)
class Scenario:
    """A registered scenario: its function and how many times to run it."""

    name: str
    fn: ScenarioFn
    repeats: int = 5
    quick_repeats: int = 1
    options: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The first line of the scenario function's docstring."""
        doc = (self.fn.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


SCENARIOS: dict[str, Scenario] = {}
"""Every registered scenario by name, in registration order."""


def scenario(
    name: str, *, repeats: int = 5, quick_repeats: int = 1, options: tuple[str, ...] = ()
) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register the decorated function as scenario `name` (see the module docstring);
    `options` are the command-line options (of `OPTIONS`) it takes as keywords."""

    def register(fn: ScenarioFn) -> ScenarioFn:
        if name in SCENARIOS and SCENARIOS[name].fn is not fn:
            raise ValueError(f"a scenario named {name!r} is already registered")
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; known: {OPTIONS}")
        SCENARIOS[name] = Scenario(name, fn, repeats, quick_repeats, options)
        return fn

    return register


# -- results ------------------------------------------------------------------------------


@dataclass
class Figure:
    """The samples of one row name across repetitions, and their median."""

    name: str
    unit: str
    samples: list[float]
    baseline_of: str | None = None
    better: str = "higher"
    note: str | None = None
    ratio: float | None = None  # median(engine row) / median(this row), for baselines

    @property
    def median(self) -> float:
        """The median of the samples."""
        return statistics.median(self.samples)

    def to_json(self) -> dict[str, Any]:
        """This figure as plain JSON data."""
        return {
            "name": self.name,
            "median": self.median,
            "unit": self.unit,
            "samples": self.samples,
            "baseline_of": self.baseline_of,
            "ratio": self.ratio,
            "better": self.better,
            "note": self.note,
        }


@dataclass
class ScenarioResult:
    """All figures of one scenario run."""

    name: str
    description: str
    repeats: int
    seconds: float
    figures: list[Figure] = field(default_factory=list)

    def figure(self, name: str) -> Figure:
        """The figure called `name`."""
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(name)


def collect(name: str, description: str, runs: list[list[Row]], seconds: float) -> ScenarioResult:
    """Fold the rows of several repetitions into figures with medians and ratios."""
    result = ScenarioResult(name, description, len(runs), seconds)
    by_name: dict[str, Figure] = {}
    for rows in runs:
        for r in rows:
            f = by_name.get(r["name"])
            if f is None:
                f = Figure(
                    r["name"],
                    r["unit"],
                    [],
                    r.get("baseline_of"),
                    r.get("better", "higher"),
                    r.get("note"),
                )
                by_name[r["name"]] = f
                result.figures.append(f)
            f.samples.append(r["value"])
    for f in result.figures:
        if f.baseline_of is None:
            continue
        engine = by_name.get(f.baseline_of)
        if engine is None:
            raise ValueError(f"{name}: {f.name!r} is a baseline of unknown row {f.baseline_of!r}")
        f.ratio = engine.median / f.median if f.median else math.inf
    return result


# -- progress -----------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on stderr (redrawn at most 10 times a second).

    When stderr is not a terminal it prints only a line per change of label, so logs of CI
    runs stay readable.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.title = ""
        self.total = 1
        self.repetition = 0
        self._last_draw = 0.0
        self._last_label = ""
        self._started = time.perf_counter()

    def begin(self, title: str, total: int) -> None:
        """Start a bar for `total` repetitions of `title`."""
        self.title, self.total, self.repetition = title, max(total, 1), 0
        self._started = time.perf_counter()
        self._last_label = ""
        self(0.0, "starting")

    def start_repetition(self, index: int) -> None:
        """Repetition `index` (from 0) starts."""
        self.repetition = index
        self(0.0, "")

    def __call__(self, fraction: float, label: str = "") -> None:
        overall = min(max((self.repetition + min(max(fraction, 0.0), 1.0)) / self.total, 0.0), 1.0)
        text = f"{self.title} {self.repetition + 1}/{self.total}" + (f": {label}" if label else "")
        now = time.perf_counter()
        if self.tty:
            if now - self._last_draw < 0.1 and overall < 1.0 and label == self._last_label:
                return
            filled = int(overall * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            elapsed = now - self._started
            line = f"\r[{bar}] {overall * 100:5.1f}% {elapsed:6.1f}s {text}"
            self.stream.write(line[:160].ljust(100))
            self.stream.flush()
        elif label and label != self._last_label:
            self.stream.write(f"  {text} ({overall * 100:.0f}%)\n")
            self.stream.flush()
        self._last_draw = now
        self._last_label = label

    def end(self, message: str) -> None:
        """Finish the bar with `message`."""
        if self.tty:
            self.stream.write("\r" + " " * 110 + "\r")
        self.stream.write(message + "\n")
        self.stream.flush()


def run_scenario(
    spec: Scenario,
    quick: bool,
    bar: ProgressBar,
    repeats: int | None = None,
    options: dict[str, Any] | None = None,
) -> ScenarioResult:
    """Run `spec` its number of times (or `repeats`) and fold the rows into medians;
    `options` are passed to a scenario that names them."""
    given = {k: v for k, v in (options or {}).items() if k in spec.options}
    n = repeats if repeats is not None else (spec.quick_repeats if quick else spec.repeats)
    bar.begin(spec.name, n)
    started = time.perf_counter()
    runs: list[list[Row]] = []
    for i in range(n):
        bar.start_repetition(i)
        runs.append(spec.fn(quick, bar, **given))
    seconds = time.perf_counter() - started
    bar.end(f"{spec.name}: {n} run(s) in {seconds:.1f} s")
    return collect(spec.name, spec.description, runs, seconds)


# -- writers ------------------------------------------------------------------------------


def fmt(value: float) -> str:
    """A figure for a table: thousands separators, three significant decimals when small."""
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def ratio_text(f: Figure) -> str:
    """How the engine compares with baseline `f`, in words that say which way is good."""
    if f.ratio is None:
        return ""
    if abs(f.ratio - 1) < 0.02:
        return f"{f.ratio:.2f}× (on par)"
    good = f.ratio >= 1 if f.better == "higher" else f.ratio <= 1
    return f"{f.ratio:.2f}× ({'engine better' if good else 'engine worse'})"


def machine() -> dict[str, Any]:
    """What ran the benchmarks."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _load() -> str:
    if not hasattr(os, "getloadavg"):
        return ""
    return " · load average {:.1f} {:.1f} {:.1f} at the end".format(*os.getloadavg())


def write_markdown(path: Path, results: list[ScenarioResult], quick: bool) -> None:
    """Write the Markdown tables of `results` to `path`."""
    lines = [
        f"# tidings benchmarks{' (quick)' if quick else ''}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} · Python {platform.python_version()} · "
        f"{os.cpu_count()} CPUs · {platform.platform()}{_load()}",
        "",
        "Medians of the runs; *engine ÷ baseline* is the ratio of medians "
        "(higher-is-better figures: > 1 means the engine wins; lower-is-better: < 1).",
    ]
    for res in results:
        lines += ["", f"## {res.name}", ""]
        if res.description:
            lines += [res.description, ""]
        lines += [
            "| measurement | median | unit | runs | engine ÷ baseline |",
            "|---|---:|---|---:|---|",
        ]
        for f in res.figures:
            better = "↑" if f.better == "higher" else "↓"
            lines.append(
                f"| {f.name} | {fmt(f.median)} | {f.unit} {better} | {len(f.samples)} "
                f"| {ratio_text(f)} |"
            )
        notes = [f"- {f.name}: {f.note}" for f in res.figures if f.note]
        if notes:
            lines += ["", *notes]
        lines += ["", f"{res.repeats} run(s), {res.seconds:.1f} s in all."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_json(path: Path, results: list[ScenarioResult], quick: bool) -> None:
    """Write `results` with every sample to `path` as JSON."""
    data = {
        "created": datetime.now(UTC).isoformat(),
        "quick": quick,
        "machine": machine(),
        "scenarios": {
            res.name: {
                "description": res.description,
                "repeats": res.repeats,
                "seconds": res.seconds,
                "figures": [f.to_json() for f in res.figures],
            }
            for res in results
        },
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def chart_groups(res: ScenarioResult) -> list[list[Figure]]:
    """The figures to draw side by side: each engine row with its baselines, or alone."""
    groups: list[list[Figure]] = []
    baselines: dict[str, list[Figure]] = {}
    for f in res.figures:
        if f.baseline_of is not None:
            baselines.setdefault(f.baseline_of, []).append(f)
    for f in res.figures:
        if f.baseline_of is None:
            groups.append([f, *baselines.get(f.name, [])])
    return groups


def write_chart(path: Path, res: ScenarioResult) -> None:
    """Draw the bar chart of `res` (engine vs baselines, with ratios) to `path` as PNG."""
    import matplotlib  # lazily: the engine itself does not need matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    groups = chart_groups(res)
    cols = min(len(groups), 3) or 1
    rows = math.ceil(len(groups) / cols) or 1
    widest = max((len(g) for g in groups), default=1)
    width = max(1.6 * widest + 1.4, 4.0)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, group in zip(axes.flat, groups, strict=False):
        labels = ["engine" if i == 0 else _wrap(f.name, 18) for i, f in enumerate(group)]
        values = [f.median for f in group]
        colours = ["#2b6cb0"] + ["#a0aec0"] * (len(group) - 1)
        bars = ax.bar(range(len(group)), values, color=colours)
        for bar, f in zip(bars, group, strict=True):
            text = fmt(f.median) + (f"\n{f.ratio:.2f}×" if f.ratio is not None else "")
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(range(len(group)), labels, fontsize=7)
        ax.set_ylabel(
            f"{group[0].unit} ({'higher' if group[0].better == 'higher' else 'lower'} is better)",
            fontsize=8,
        )
        ax.set_title(_wrap(group[0].name, 40), fontsize=9)
        ax.margins(y=0.25)
        ax.tick_params(axis="y", labelsize=7)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    fig.suptitle(
        f"{res.name}: engine (blue) vs baselines, medians of {res.repeats} run(s); "
        "× = engine ÷ baseline",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _wrap(text: str, width: int = 22) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    return "\n".join(lines)


def write_results(out: Path, results: list[ScenarioResult], quick: bool) -> list[Path]:
    """Write the Markdown, JSON and charts of `results` into `out`; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.md", out / "results.json"]
    write_markdown(paths[0], results, quick)
    write_json(paths[1], results, quick)
    for res in results:
        chart = out / f"{res.name}.png"
        write_chart(chart, res)
        paths.append(chart)
    return paths


BENCH_EXTRA = ("matplotlib", "pykka")  # charts; the actors scenario's baseline

# -- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run benchmarks from command-line arguments; return the exit status."""
    missing = [name for name in BENCH_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"tidings bench needs {', '.join(missing)}: pip install 'tidings[bench]'",
            file=sys.stderr,
        )
        return 2

    parser = argparse.ArgumentParser(prog="python -m tidings.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="default: all")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--out", type=Path, help="results folder (default bench-results/<time>/)")
    parser.add_argument("--repeats", type=int, help="runs per scenario (default: its own)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--trials", type=int, help="trials (scenarios that take it: chaos)")
    parser.add_argument(
        "--store", choices=("sqlite", "redis"), help="the store (scenarios that take it: chaos)"
    )
    parser.add_argument(
        "--loadgen",
        choices=("wrk", "python"),
        help="the HTTP load generator (scenarios that take it: webhook; default wrk if installed)",
    )
    args = parser.parse_args([str(a) for a in (sys.argv[1:] if argv is None else argv)])
    if args.list:
        for spec in SCENARIOS.values():
            print(f"{spec.name:12} {spec.description}")
        return 0
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.trials is not None and args.trials < 1:
        parser.error("--trials must be at least 1")
    options = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    for option in options:
        takers = [n for n in names if option in SCENARIOS[n].options]
        if len(takers) < len(names):
            others = ", ".join(n for n in names if n not in takers)
            parser.error(f"--{option} is not an option of {others}")
    out: Path = args.out or Path("bench-results") / datetime.now().strftime("%Y%m%d-%H%M%S")
    bar = ProgressBar()
    results = [run_scenario(SCENARIOS[n], args.quick, bar, args.repeats, options) for n in names]
    for path in write_results(out, results, args.quick):
        print(path)
    return 0
