"""Write one benchmark's table into bench/RESULTS.md, replacing only that benchmark's section,
and describe the machine it ran on."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by the benchmark named in it; ratios compare against a baseline measured in the same run.\n"


def write_section(name: str, markdown: str, path: Path = RESULTS_PATH) -> None:
    """Replace the section delimited by markers for `name` (or append it) in RESULTS.md."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def publish(name: str, markdown: str, mismatch: bool = False) -> None:
    """Print a benchmark's section, write it into RESULTS.md, and exit with status 1 when the
    benchmark found results that should have been equal and were not (`mismatch`)."""
    print(markdown)
    write_section(name, markdown)
    if mismatch:
        raise SystemExit(1)


def machine_note(loads: tuple[float, float] | list[float]) -> str:
    """The footnote every benchmark writes: the machine and the 1-min load average before and after."""
    return (f"Machine: {machine()}; other processes share it: 1-min load average {loads[0]:.2f} at the start, "
            f"{loads[1]:.2f} at the end")


def machine() -> str:
    """CPU model, CPU count, torch version and torch threads, for a benchmark's footnote."""
    import torch

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} thread(s)"
