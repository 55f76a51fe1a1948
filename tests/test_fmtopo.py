"""fmtopo: the platform's hc tree with ASRU, FRU, Label and status lines."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.fmdproc import cli


def test_sim_tree_with_asru_fru_and_labels(root: Path) -> None:
    """-p prints each node's ASRU, FRU and Label in the illumos layout (no daemon needed)."""
    out = cli("fmtopo", "-p", "-o", "platform=sim", root=root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TIME", "UUID"]
    i = next(n for n, line in enumerate(lines) if line.endswith("/chip=3/core=0/strand=1"))
    assert lines[i + 1 : i + 4] == [
        "\tASRU: cpu:///cpuid=13",
        "\tFRU: " + lines[i].rsplit("/core=", 1)[0],
        "\tLabel: CPU 3",
    ]
    dimm = next(
        n for n, line in enumerate(lines)
        if line.endswith("/chip=3/memory-controller=0/dram-channel=1/dimm=0")
    )  # fmt: skip
    assert lines[dimm + 1].startswith("\tASRU: mem:///unum=")
    assert lines[dimm + 2 : dimm + 4] == ["\tFRU: " + lines[dimm], "\tLabel: CPU 3 DIMM 2"]


def test_json_lists_every_node_with_status(root: Path) -> None:
    """--json gives every node; with no faults nothing is unusable."""
    out = cli("fmtopo", "--json", "-o", "platform=sim", root=root)
    assert out.returncode == 0, out.stderr
    nodes = orjson.loads(out.stdout)
    strands = [n for n in nodes if "/strand=" in n["fmri"]]
    assert len(strands) == 16
    assert {n["label"] for n in nodes if n["fmri"].endswith("/dimm=1") and "/chip=0/" in n["fmri"]
            and "/dram-channel=0/" in n["fmri"]} == {"CPU 0 DIMM 1"}  # fmt: skip
    assert not any(n["unusable"] for n in nodes)


def test_status_lines(root: Path) -> None:
    """-S prints Present and Unusable for each node."""
    out = cli("fmtopo", "-S", "-o", "platform=sim", root=root)
    assert out.returncode == 0, out.stderr
    assert "\tPresent: true" in out.stdout
    assert "\tUnusable: false" in out.stdout
