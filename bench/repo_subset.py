"""A model repository of the fetched models only, for a machine that cannot hold them all.

``python bench/repo_subset.py SRC DST`` links each fetched model folder of ``SRC`` into ``DST``
and writes ``DST/pipeline.toml`` without the sections of the models that are missing and without
the policies fed by them. Why: the GPU check machine takes at most 64 MiB of files, which holds
open_nsfw and YAMNet but not MiniLM (90 MB), so its GPU Session runs vision and audio only.
Point ``ENGINE_MODEL_REPO`` at ``DST`` and the tests (tests/conftest.py) and the bench suites
(bench/workload.py) use it. The lock file is copied as is: present models are verified as usual.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tomllib
from pathlib import Path

# pipeline section -> the policy source it feeds (engine.pipeline.POLICY_SOURCES)
SECTIONS = {"vision": "vision", "audio": "audio", "text.embedding": "text_similarity",
            "text.classifier": "text_classifier"}
HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?")


def fetched(model_dir: Path) -> bool:
    """A model folder with config.pbtxt and a version folder holding at least one file."""
    return (model_dir / "config.pbtxt").is_file() and any(
        v.is_dir() and v.name.isdigit() and any(v.iterdir()) for v in model_dir.iterdir())


def _tables(text: str) -> list[tuple[str | None, list[str]]]:
    """The file as (table header name or None for the preamble, its lines), in order."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines(keepends=True):
        m = HEADER.match(line)
        if m:
            blocks.append((m.group(1), []))
        blocks[-1][1].append(line)
    return blocks


def subset_pipeline(text: str, present: set[str]) -> tuple[str, list[str]]:
    """(pipeline text without the sections of missing models and their policies, dropped names)."""
    spec = tomllib.loads(text)
    dropped_sections = []
    for section in SECTIONS:
        table = spec
        for key in section.split("."):
            table = table.get(key, {}) if isinstance(table, dict) else {}
        if table and table.get("model") not in present:
            dropped_sections.append(section)
    dropped_sources = {SECTIONS[s] for s in dropped_sections}
    policies = iter(spec.get("policies", []))
    out, dropped = [], [f"[{s}]" for s in dropped_sections]
    for name, lines in _tables(text):
        if name == "policies":
            policy = next(policies)
            if policy.get("source") in dropped_sources:
                dropped.append(f"policy {policy.get('name')}")
                continue
        elif name and any(name == s or name.startswith(s + ".") for s in dropped_sections):
            continue
        out.extend(lines)
    result = "".join(out)
    tomllib.loads(result)  # still TOML
    return result, dropped


def make_subset(src: Path, dst: Path) -> tuple[list[str], list[str]]:
    """Fill ``dst`` from ``src``; returns (models kept, sections and policies dropped)."""
    dst.mkdir(parents=True, exist_ok=True)
    present = sorted(d.name for d in src.iterdir() if d.is_dir() and fetched(d))
    for name in present:
        link = dst / name
        if not link.exists():
            link.symlink_to(src.resolve() / name, target_is_directory=True)
    for extra in ("models.lock",):
        if (src / extra).is_file():
            shutil.copyfile(src / extra, dst / extra)
    text, dropped = subset_pipeline((src / "pipeline.toml").read_text(), set(present))
    (dst / "pipeline.toml").write_text(text)
    return present, dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="the full repository (model_repo)")
    ap.add_argument("dst", type=Path, help="where the subset goes (created)")
    args = ap.parse_args(argv)
    kept, dropped = make_subset(args.src, args.dst)
    print(f"{args.dst}: models {', '.join(kept) or 'none'}; dropped {', '.join(dropped) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
