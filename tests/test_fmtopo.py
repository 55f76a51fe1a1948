"""fmtopo: the platform's hc tree with ASRU, FRU, Label and status lines."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson

from fmd.protocol.fmri import sanitize_authority
from tests.fmdproc import cli
from tests.goldens import golden


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


def _normalized(text: str) -> str:
    """The output with what varies between runs and hosts replaced: the snapshot's
    time and uuid (second line) and the host name in the authority."""
    lines = text.splitlines()
    lines[1] = "<time> <uuid>"
    host = sanitize_authority(socket.gethostname())
    return "\n".join(lines).replace(f"server-id={host}", "server-id=HOST")


def test_golden_sim_tree_p(root: Path) -> None:
    """fmtopo -p on the sim platform, line for line (golden file)."""
    out = cli("fmtopo", "-p", "-o", "platform=sim", root=root)
    assert out.returncode == 0, out.stderr
    text = _normalized(out.stdout)
    assert text == golden("fmtopo", "sim-p.txt", text)


def test_golden_sim_tree_json(root: Path) -> None:
    """fmtopo --json on the sim platform (golden file)."""
    out = cli("fmtopo", "--json", "-o", "platform=sim", root=root)
    assert out.returncode == 0, out.stderr
    host = sanitize_authority(socket.gethostname())
    nodes = orjson.loads(out.stdout.replace(f"server-id={host}", "server-id=HOST"))
    text = orjson.dumps(nodes, option=orjson.OPT_INDENT_2).decode()
    assert text == golden("fmtopo", "sim.json", text)
