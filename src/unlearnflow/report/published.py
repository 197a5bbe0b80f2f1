"""Published tables: every measured table of README.md and docs/*.md rendered from a committed snapshot.

``results/`` is not committed, so a figure quoted from a run could not be checked or regenerated.
A **snapshot** keeps what a table is made of, under ``docs/results/NAME/``:

``summary.csv``
    the run's report summary (every configuration's row);
``summary.md``
    the run's markdown report, where the run wrote one (its datamodels and one-time-cost sections
    hold figures that are not rows of ``summary.csv``);
``config.yaml``
    a copy of the config file the run used;
``snapshot.yaml``
    where it came from: the experiment, the source summary, the commit (and whether the checkout
    had uncommitted changes), the config file and its SHA-256, the command, the date the report
    was written, the machine, and the cost of the experiment's jobs summed from its Snakemake
    ``benchmarks/`` (jobs, wall seconds, CPU seconds), which is not committed either.

:func:`make_snapshot` (``python -m unlearnflow snapshot``) writes one. A table in the markdown is
a **block** between two whole-line markers, ``<!-- table: ID -->`` and ``<!-- /table: ID -->``;
the **manifest** ``docs/results/tables.yaml`` maps each ID to a renderer, its snapshots and the
renderer's options::

    tables:
      digits-methods:
        renderer: method-comparison
        snapshots: [digits]
        options: {methods: {do-nothing: do_nothing, DMM: dmm}, compute: [dmm]}

:func:`publish` (``python -m unlearnflow tables``) rewrites every block from its snapshots;
with ``check`` it changes nothing and names each block whose text differs. The renderers
(:data:`RENDERERS`) are pure functions of snapshots and options to markdown: the source-free
paper's tables, the PGU paper's tables, the method comparison of README's "Measured on digits",
how optimistic in-sample selection is per method, pairwise comparisons of methods, and one
column of each method's headline configuration (``headline-column``, e.g. the challenge score).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from unlearnflow.config import load_config_file
from unlearnflow.errors import UserError
from unlearnflow.evaluation.rows import Row, chosen_by_w1
from unlearnflow.evaluation.selection import ONLY_CONFIG, describe_rule, headline_rows
from unlearnflow.report.pgu_tables import pgu_tables, read_summaries
from unlearnflow.report.sourcefree_tables import experiment_cost, experiment_of, experiment_tables
from unlearnflow.report.summary import DO_NOTHING, RETRAIN, fmt, is_diverged, markdown_line

#: Where snapshots and the manifest live, relative to the repository root.
RESULTS_DIR = Path("docs") / "results"
MANIFEST = RESULTS_DIR / "tables.yaml"
SUMMARY, REPORT, CONFIG, METADATA = "summary.csv", "summary.md", "config.yaml", "snapshot.yaml"
SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: A block marker on a line of its own: ``<!-- table: ID -->`` opens, ``<!-- /table: ID -->`` closes.
MARKER = re.compile(r"<!-- (/?)table: ([A-Za-z0-9_.-]+) -->")
_MANIFEST_KEYS = {"renderer", "snapshots", "options"}


# --- snapshots -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """A committed results snapshot: its name, directory and metadata (``snapshot.yaml``)."""

    name: str
    directory: Path
    metadata: Mapping[str, Any]

    @property
    def summary(self) -> Path:
        return self.directory / SUMMARY

    @property
    def cost(self) -> tuple[int, float, float] | None:
        """(jobs, wall seconds, CPU seconds) of the experiment's jobs, or None where not recorded."""
        cost = self.metadata.get("cost")
        return (cost["jobs"], cost["wall_seconds"], cost["cpu_seconds"]) if cost else None


def read_snapshot(root: Path, name: str) -> Snapshot:
    """The snapshot `name` under `root`'s ``docs/results/``; a UserError when it is not there."""
    directory = root / RESULTS_DIR / name
    missing = [file for file in (SUMMARY, METADATA) if not (directory / file).is_file()]
    if missing:
        raise UserError(f"{directory}: no snapshot '{name}' (no {' or '.join(missing)}); make it with "
                        f"python -m unlearnflow snapshot --name {name} --summary results/X/report/summary.csv "
                        "--config CONFIG")
    return Snapshot(name, directory, yaml.safe_load((directory / METADATA).read_text()) or {})


def make_snapshot(*, name: str, summary: str | os.PathLike, config: str | os.PathLike, command: str | None = None,
                  machine: str | None = None, commit: str | None = None, root: str | os.PathLike = ".") -> Path:
    """Copy a finished run's `summary` (``results/X/report/summary.csv``, with the ``summary.md`` beside
    it) and its `config` into
    ``docs/results/NAME/`` under `root` with their metadata (see the module's description); the
    commit is the one checked out where the summary lies unless given. Returns the directory."""
    summary, config = Path(summary), Path(config)
    if not SNAPSHOT_NAME.fullmatch(name):
        raise UserError(f"snapshot name '{name}' should be of letters, digits, '_', '.' and '-'")
    if not config.is_file():
        raise UserError(f"{config}: no such config file")
    read_summaries([summary], "snapshot")  # a UserError unless it is a report summary
    cost = experiment_cost(summary)
    metadata = {
        "experiment": experiment_of(summary),
        "source": str(summary),
        **checkout_state(summary.resolve().parent, commit),
        "config": str(config),
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "command": command,
        "date": datetime.fromtimestamp(summary.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine or f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "cost": {"jobs": cost[0], "wall_seconds": round(cost[1], 2), "cpu_seconds": round(cost[2], 2)}
        if cost else None,
    }
    directory = Path(root) / RESULTS_DIR / name
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(summary, directory / SUMMARY)
    if (summary.parent / REPORT).is_file():
        shutil.copyfile(summary.parent / REPORT, directory / REPORT)
    shutil.copyfile(config, directory / CONFIG)
    (directory / METADATA).write_text(yaml.safe_dump(metadata, sort_keys=False))
    return directory


def checkout_state(directory: Path, commit: str | None) -> dict[str, Any]:
    """``commit`` (`commit`, or HEAD of the git checkout holding `directory`) and
    ``uncommitted_changes`` (whether tracked files differ from HEAD; None for a given commit)."""
    if commit:
        return {"commit": commit, "uncommitted_changes": None}

    def git(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(directory), *arguments], capture_output=True, text=True)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        raise UserError(f"{directory} is not in a git checkout, so the run's commit is unknown; give --commit")
    return {"commit": head.stdout.strip(), "uncommitted_changes": git("diff", "--quiet", "HEAD", "--").returncode != 0}


# --- renderers -------------------------------------------------------------------------------

def sourcefree_renderer(snapshots: Sequence[Snapshot]) -> str:
    """``sourcefree-table``'s output (:mod:`unlearnflow.report.sourcefree_tables`), the experiment's
    name and cost taken from each snapshot's metadata."""
    return "\n".join(line for snapshot in snapshots
                     for line in experiment_tables(snapshot.summary, snapshot.metadata["experiment"], snapshot.cost))


def pgu_renderer(snapshots: Sequence[Snapshot], acceptance: str | None = None, configurations: bool = False) -> str:
    """``pgu-table``'s output (:mod:`unlearnflow.report.pgu_tables`) over the snapshots' rows;
    `configurations`: Table 4 also for every configuration."""
    return pgu_tables(read_summaries([snapshot.summary for snapshot in snapshots], "tables"), acceptance,
                      configurations)


def method_comparison(snapshots: Sequence[Snapshot], methods: Mapping[str, str], compute: Sequence[str] = (),
                      forget_sets: Sequence[str] | None = None, insample: bool = True,
                      unranked: Sequence[str] = ()) -> str:
    """A line per forget set (`forget_sets` in their order, else all in the snapshots' order), a
    column per method (`methods`: column title -> method) holding the KLOM score of its headline
    configuration (``selected``: chosen without the judged set's oracles), then, where the
    snapshots chose by the W1 of margins, its W1 selection score in parentheses, and, with
    `insample`, the in-sample best's selection score in brackets where that is another
    configuration; the lowest headline selection score of the methods other than ``do_nothing``,
    ``retrain`` and the `unranked` ones (e.g. an implementation check with true oracle targets) in
    bold; then
    per method of `compute` its headline configuration's compute as a percentage of retraining.
    A line under the table names the rules that chose the headline configurations (a method with
    one configuration needs none) and what the brackets hold."""
    headline: dict[tuple[str, str], Row] = {}
    for row in headline_rows(read_summaries([snapshot.summary for snapshot in snapshots], "tables")):
        key = (row["forget_set"], row["method"])
        if key in headline:
            raise UserError(f"tables: method '{key[1]}' has two headline rows on forget set '{key[0]}' "
                            "(snapshots with the same forget set?)")
        headline[key] = row
    present = list(dict.fromkeys(forget_set for forget_set, _ in headline))
    shown = forget_sets or present
    unknown = [name for name in shown if name not in present]
    unknown += [method for method in (*methods.values(), *compute) if all(key[1] != method for key in headline)]
    if unknown:
        raise UserError(f"tables: method-comparison: '{unknown[0]}' is in no snapshot's summary")
    titles = {method: title for title, method in methods.items()}
    by_w1 = chosen_by_w1(headline.values())
    header = ("forget set", *methods, *(f"{titles.get(method, method)} compute" for method in compute))
    lines = [markdown_line(header), markdown_line(("---", *["---:"] * (len(header) - 1)))]
    for forget_set in shown:
        rows = [headline.get((forget_set, method)) for method in methods.values()]
        contenders = [row for row in rows if row and row["method"] not in (DO_NOTHING, RETRAIN, *unranked)
                      and math.isfinite(row["selection_score"]) and not is_diverged(row)]
        best = min(contenders, key=lambda row: row["selection_score"], default=None)
        cells = [_score_cell(row, insample, bold=row is best, with_w1=by_w1) if row else "–" for row in rows]
        computes = [fmt(headline[forget_set, method]["compute_fraction"], ".1%") if (forget_set, method) in headline
                    else "–" for method in compute]
        lines.append(markdown_line((forget_set, *cells, *computes)))
    rules = sorted({row["selection_rule"] for (forget_set, method), row in headline.items()
                    if forget_set in shown and method in titles} - {ONLY_CONFIG})
    notes = ["Cells: KLOM score (W1 selection score); bold: the lowest W1 selection score."] if by_w1 else []
    notes += [f"Headline configuration: {'; '.join(map(describe_rule, rules))}."] if rules else []
    if insample:
        notes.append(f"[In brackets: the in-sample best{chr(39) + 's W1 selection score' if by_w1 else ''}, chosen "
                     "on the set's own oracles, where it is another configuration.]")
    return "\n".join([*lines, "", " ".join(notes)] if notes else lines)


def headline_column(snapshots: Sequence[Snapshot], methods: Mapping[str, str], column: str,
                    forget_sets: Sequence[str] | None = None, spec: str = ".3f") -> str:
    """A line per forget set (`forget_sets` in their order, else all in the snapshots' order), a
    column per method (`methods`: column title -> method) holding `column` of its headline
    configuration (``selected``) formatted with `spec`; a dash where the method has none."""
    headline: dict[tuple[str, str], Row] = {}
    for row in headline_rows(read_summaries([snapshot.summary for snapshot in snapshots], "tables")):
        if (row["forget_set"], row["method"]) in headline:
            raise UserError(f"tables: headline-column: method '{row['method']}' has two headline rows on forget set "
                            f"'{row['forget_set']}' (snapshots with the same forget set?)")
        headline[row["forget_set"], row["method"]] = row
    present = list(dict.fromkeys(forget_set for forget_set, _ in headline))
    unknown = [name for name in (*(forget_sets or ()), *methods.values()) if name not in present
               and all(key[1] != name for key in headline)]
    if unknown or not headline or not isinstance(next(iter(headline.values())).get(column), float):
        raise UserError(f"tables: headline-column: '{unknown[0] if unknown else column}' is no forget set, method "
                        "or numeric column of the snapshots' summaries")
    lines = [markdown_line(("forget set", *methods)), markdown_line(("---", *["---:"] * len(methods)))]
    for forget_set in forget_sets or present:
        lines.append(markdown_line((forget_set, *(_marked(fmt(headline[forget_set, method][column], spec),
                                                          headline[forget_set, method])
                                                  if (forget_set, method) in headline else "–"
                                                  for method in methods.values()))))
    return "\n".join(lines)


def _marked(cell: str, row: Row) -> str:
    """A cell of a diverged configuration says so."""
    return cell + " (diverged)" if is_diverged(row) else cell


def _score_cell(row: Row, insample: bool, bold: bool, with_w1: bool) -> str:
    """A method's headline KLOM score, with `with_w1` its W1 selection score in parentheses (bold
    when `bold`), and, with `insample`, the in-sample best's selection score in brackets where it
    is another configuration."""
    cell = fmt(row["klom_score"], ".3f") + (f" ({fmt(row['selection_score'], '.3f')})" if with_w1 else "")
    cell = f"**{cell}**" if bold else _marked(cell, row)
    if insample and row["insample_config"] != row["config"]:
        cell += f" [{fmt(row['insample_selection_score'], '.3f')}]"
    return cell


def _headline_by_method(snapshots: Sequence[Snapshot]) -> dict[str, list[Row]]:
    """Method -> its headline rows (one per forget set), in the snapshots' order."""
    by_method: dict[str, list[Row]] = {}
    for row in headline_rows(read_summaries([snapshot.summary for snapshot in snapshots], "tables")):
        by_method.setdefault(row["method"], []).append(row)
    return by_method


def selection_optimism(snapshots: Sequence[Snapshot], methods: Sequence[str] | None = None) -> str:
    """How optimistic in-sample selection is, per method with more than one configuration (all of
    them, or `methods` in order): its configurations, the forget sets where the held-out headline
    is another configuration than the in-sample best, and the headline's selection score minus
    the in-sample best's (mean and largest over the forget sets; 0 where they agree) and minus
    the default configuration's (mean; negative: the held-out choice beats the default)."""
    rows = read_summaries([snapshot.summary for snapshot in snapshots], "tables")
    configs: dict[str, set[str]] = {}
    for row in rows:
        configs.setdefault(row["method"], set()).add(row["config"])
    headline = _headline_by_method(snapshots)
    shown = list(methods) if methods else [method for method in headline if len(configs[method]) > 1]
    unknown = [method for method in shown if method not in headline]
    if unknown:
        raise UserError(f"tables: selection-optimism: '{unknown[0]}' is in no snapshot's summary")
    of_w1 = " of the W1 selection score" if chosen_by_w1(rows) else ""
    header = ("method", "configurations", "held-out pick is not the in-sample best",
              f"headline - in-sample best: mean (max){of_w1}", "headline - default: mean")
    lines = [markdown_line(header), markdown_line(("---", "---:", "---:", "---:", "---:"))]
    for method in shown:
        picked = headline[method]
        over_insample = [row["selection_score"] - row["insample_selection_score"] for row in picked]
        over_default = [row["selection_score"] - row["default_selection_score"] for row in picked]
        differs = sum(row["config"] != row["insample_config"] for row in picked)
        lines.append(markdown_line((method, str(len(configs[method])), f"{differs} of {len(picked)}",
                                    f"{fmt(float(np.mean(over_insample)), '+.3f')} "
                                    f"({fmt(float(np.max(over_insample)), '+.3f')})",
                                    fmt(float(np.mean(over_default)), "+.3f"))))
    return "\n".join(lines)


def pairwise_wins(snapshots: Sequence[Snapshot], pairs: Sequence[Sequence[str]]) -> str:
    """One line per pair ``[A, B]`` of methods: on how many forget sets A's headline selection
    score (the W1 of margins', or KLOM's in snapshots made before issue 23) is below B's (ties
    count for neither; a diverged headline of A wins nothing), and which."""
    headline = {method: {row["forget_set"]: row for row in rows}
                for method, rows in _headline_by_method(snapshots).items()}
    by_w1 = chosen_by_w1(row for rows in headline.values() for row in rows.values())
    lines = []
    for pair in pairs:
        if len(pair) != 2 or any(method not in headline for method in pair):
            raise UserError(f"tables: pairwise-wins: pair {list(pair)} should name two methods of the snapshots")
        first, second = pair
        common = [name for name in headline[first] if name in headline[second]]
        wins = [name for name in common if not is_diverged(headline[first][name])
                and headline[first][name]["selection_score"] < headline[second][name]["selection_score"]]
        where = f" ({', '.join(f'`{name}`' for name in wins)})" if wins and len(wins) < len(common) else ""
        scores = f"'s W1 selection score is below `{second}`'s" if by_w1 else f" scores below `{second}`"
        lines.append(f"- `{first}`{scores} on {len(wins)} of {len(common)} forget sets{where}.")
    return "\n".join(lines)


def klom_below_retraining(snapshots: Sequence[Snapshot]) -> str:
    """Every configuration whose KLOM score is below retraining's on its forget set (exact
    unlearning cannot be beaten; docs/klom-blind-spots.md): per snapshot, its KLOM score beside
    retraining's, its test-accuracy gap to the oracles, where the snapshot chose by it the W1
    selection score beside retraining's, and for linear models the weight distance to the oracles
    (0: the weights are the oracles', the one legitimate way below). Headline rows are marked *."""
    header = ("snapshot", "forget set", "method", "config", "KLOM score", "retrain's KLOM", "test acc gap (pt)",
              "W1 selection", "retrain's W1", "weight distance")
    lines = [markdown_line(header), markdown_line(("---", "---", "---", "---", *["---:"] * 6))]
    for snapshot in snapshots:
        rows = read_summaries([snapshot.summary], "tables")
        by_w1 = chosen_by_w1(rows)
        retrain = {row["forget_set"]: row for row in rows if row["method"] == RETRAIN}
        for row in rows:
            reference = retrain.get(row["forget_set"])
            if reference is None or row is reference or not row["klom_score"] < reference["klom_score"]:
                continue
            lines.append(markdown_line((
                snapshot.name, row["forget_set"], row["method"], row["config"] + (" *" if row["selected"] else ""),
                fmt(row["klom_score"], ".3f"), fmt(reference["klom_score"], ".3f"),
                fmt(100 * (row["acc_test"] - row["acc_test_oracle"]), "+.1f"),
                fmt(row["selection_score"], ".3f") if by_w1 else "–",
                fmt(reference["selection_score"], ".3f") if by_w1 else "–",
                fmt(row["weight_distance"], ".3g"))))
    return "\n".join(lines)


def presets(snapshots: Sequence[Snapshot], presets: Mapping[str, str]) -> str:
    """One line per preset (`presets`: config file -> what it reproduces, in order): the snapshots
    made from it (those of `snapshots` whose recorded ``config`` is the file) and their experiments'
    jobs and job-seconds (summed wall seconds of the jobs, from each snapshot's ``cost``: the
    compute a run takes on one core, not its elapsed time); a dash for a preset without snapshot."""
    by_config: dict[str, list[Snapshot]] = {}
    for snapshot in snapshots:
        by_config.setdefault(str(snapshot.metadata.get("config")), []).append(snapshot)
    unknown = sorted(set(by_config) - set(presets))
    if unknown:
        raise UserError(f"tables: presets: snapshot config '{unknown[0]}' is not among the presets")
    lines = [markdown_line(("preset", "reproduces", "snapshots", "jobs", "job-seconds")),
             markdown_line(("---", "---", "---", "---:", "---:"))]
    for config, reproduces in presets.items():
        made = by_config.get(config, [])
        costs = [snapshot.cost for snapshot in made if snapshot.cost]
        jobs = fmt(float(sum(cost[0] for cost in costs)), ",.0f") if costs else "–"
        seconds = fmt(sum(cost[1] for cost in costs), ",.0f") if costs else "–"
        names = ", ".join(f"`{snapshot.name}`" for snapshot in made) or "–"
        lines.append(markdown_line((f"`{config}`", reproduces, names, jobs, seconds)))
    return "\n".join(lines)


#: Renderer name (the manifest's ``renderer``) -> function of the snapshots and the options.
RENDERERS: dict[str, Callable[..., str]] = {
    "sourcefree-table": sourcefree_renderer,
    "pgu-table": pgu_renderer,
    "method-comparison": method_comparison,
    "headline-column": headline_column,
    "selection-optimism": selection_optimism,
    "pairwise-wins": pairwise_wins,
    "klom-below-retraining": klom_below_retraining,
    "presets": presets,
}


# --- blocks and the manifest -----------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """A table block of a markdown file: its ID and the indices of its two marker lines."""

    path: Path
    table: str
    start: int
    end: int


def find_blocks(path: Path, lines: Sequence[str]) -> list[Block]:
    """The blocks of a markdown file's `lines`; a malformed, nested, unmatched or unclosed marker
    is a UserError naming the file and line."""
    blocks: list[Block] = []
    opened: tuple[int, str] | None = None
    for index, line in enumerate(lines):
        text = line.strip()
        if not text.startswith(("<!-- table:", "<!-- /table:")):
            continue
        match = MARKER.fullmatch(text)
        if not match:
            raise UserError(f"{path}:{index + 1}: malformed table marker '{text}' (expected '<!-- table: ID -->' or "
                            "'<!-- /table: ID -->' on a line of its own, ID of letters, digits, '_', '.', '-')")
        closing, table = match.groups()
        if closing:
            if not opened or opened[1] != table:
                raise UserError(f"{path}:{index + 1}: '<!-- /table: {table} -->' closes no open table '{table}'")
            blocks.append(Block(path, table, opened[0], index))
            opened = None
        elif opened:
            raise UserError(f"{path}:{index + 1}: table '{table}' opens inside table '{opened[1]}' "
                            f"(opened on line {opened[0] + 1}, not closed)")
        else:
            opened = (index, table)
    if opened:
        raise UserError(f"{path}:{opened[0] + 1}: table '{opened[1]}' is never closed ('<!-- /table: {opened[1]} -->')")
    return blocks


def read_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """Table ID -> its manifest entry (``renderer``, ``snapshots``, ``options``), each checked."""
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: no such manifest (run from the repository root, or give --root)")
    tables = load_config_file(path).get("tables") or {}
    if not isinstance(tables, dict):
        raise UserError(f"{path}: 'tables' should map table IDs to their renderer, snapshots and options")
    for table, entry in tables.items():
        where = f"{path}: table '{table}'"
        if not isinstance(entry, dict) or set(entry) - _MANIFEST_KEYS or "renderer" not in entry:
            raise UserError(f"{where}: expected a mapping with 'renderer', 'snapshots' and optionally 'options'")
        if entry["renderer"] not in RENDERERS:
            raise UserError(f"{where}: unknown renderer '{entry['renderer']}' (known: {', '.join(RENDERERS)})")
        snapshots = entry.get("snapshots")
        if not isinstance(snapshots, list) or not snapshots:
            raise UserError(f"{where}: 'snapshots' should be a non-empty list of snapshot names")
        try:
            inspect.signature(RENDERERS[entry["renderer"]]).bind(snapshots, **(entry.get("options") or {}))
        except TypeError as error:
            raise UserError(f"{where}: options do not fit renderer '{entry['renderer']}' ({error})") from None
    return tables


def render_table(root: Path, entry: Mapping[str, Any]) -> str:
    """A manifest entry's markdown: its renderer applied to its snapshots and options."""
    snapshots = [read_snapshot(root, name) for name in entry["snapshots"]]
    return RENDERERS[entry["renderer"]](snapshots, **(entry.get("options") or {})).strip("\n")


def markdown_files(root: Path) -> list[Path]:
    """The files whose blocks are rendered: README.md and every docs/**/*.md."""
    return [path for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if path.is_file()]


def publish(root: str | os.PathLike = ".", check: bool = False) -> tuple[int, list[str]]:
    """Render every block of README.md and docs/**/*.md under `root` from its snapshots. Without
    `check`, rewrite the files whose blocks changed; with it, write nothing. Returns the number of
    blocks and one line per block whose committed text differed (``FILE:LINE: table 'ID' ...``).
    A block whose ID is not in the manifest, or a manifest table in no block, is a UserError (and
    nothing is written)."""
    root = Path(root)
    tables = read_manifest(root)
    files = {path: path.read_text().split("\n") for path in markdown_files(root)}
    blocks = [block for path, lines in files.items() for block in find_blocks(path, lines)]
    for block in blocks:
        if block.table not in tables:
            raise UserError(f"{block.path.relative_to(root)}:{block.start + 1}: table '{block.table}' is not in "
                            f"{MANIFEST}")
    unused = sorted(set(tables) - {block.table for block in blocks})
    if unused:
        raise UserError(f"{root / MANIFEST}: table '{unused[0]}' is in no block of README.md or docs/*.md "
                        f"(add '<!-- table: {unused[0]} -->' ... '<!-- /table: {unused[0]} -->' or remove it)")
    rendered = {table: render_table(root, tables[table]) for table in dict.fromkeys(block.table for block in blocks)}
    differing = []
    for path, lines in files.items():
        out, position = [], 0
        for block in (block for block in blocks if block.path == path):
            body = ["", *rendered[block.table].split("\n"), ""]
            if lines[block.start + 1:block.end] != body:
                differing.append(f"{path.relative_to(root)}:{block.start + 1}: table '{block.table}' differs from "
                                 f"what its snapshot(s) {', '.join(tables[block.table]['snapshots'])} render")
            out += [*lines[position:block.start + 1], *body]
            position = block.end
        out += lines[position:]
        if not check and out != lines:
            path.write_text("\n".join(out))
    return len(blocks), differing
