"""Write one benchmark's table into bench/RESULTS.md, replacing only that benchmark's section."""

from __future__ import annotations

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
