"""The diagnosis scripts run end to end on a tiny run and print what they promise."""

import re
import subprocess
import sys

import torch

from metarl.trainer import run_training
from tests.test_training import ROOT, checkout_env, tiny


def script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=300, env=checkout_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_inner_step_sweep_and_meta_gradient_parts(tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny(run={"dir": str(run_dir)}, evaluation={"at_end": False}), progress=False)
    page = tmp_path / "sweep.md"
    out = script("inner_step_sweep.py", str(run_dir), "--inner-lr", "0.1", "1", "--episodes", "2", "--tasks", "3",
                 "--out", str(page))
    rows = [line for line in page.read_text().splitlines() if line.startswith("| 0.1 |") or line.startswith("| 1 |")]
    assert len(rows) == 2 and "inner_step_sweep.py" in page.read_text() and "| gain |" in out
    before = {row.split("|")[3] for row in rows}
    assert len(before) == 1  # the same rollouts before the step, whatever its size
    out = script("meta_gradient_parts.py", str(run_dir), "--tasks", "3")
    assert re.fullmatch(r"3 tasks: first-order part \S+, second-order part \S+ \(\S+x\), cosine\(MAML, first-order\) "
                        r"-?[0-9.]+\n", out), out
    single = out
    out = script("meta_gradient_parts.py", str(run_dir), "--tasks", "3", "--batches", "3", "--out", str(tmp_path / "p.md"))
    assert f"## `python scripts/meta_gradient_parts.py {run_dir} --tasks 3 --batches 3 --out" in (tmp_path / "p.md").read_text()
    assert out.strip() in (tmp_path / "p.md").read_text()
    lines = out.splitlines()
    assert lines[0] == single.strip() and "3 independent batches" in out  # batch 0: the same rollouts
    rows = {cells[1].strip(): cells[2:4] for cells in (line.split("|") for line in lines) if len(cells) == 5}
    cosines = [float(rows[part][1]) for part in ("first-order", "second-order", "MAML")]
    assert all(-1 <= c < 1 for c in cosines), out  # independent batches differ
    shares = [float(line.split("|")[2]) for line in lines[lines.index("| --- | --- |") + 1:]]
    assert len(shares) >= 2 and abs(sum(shares) - 1) < 1e-3, out
    other = tmp_path / "other.pt"
    torch.save({k: torch.zeros_like(v) for k, v in torch.load(run_dir / "params.pt").items()}, other)
    elsewhere = script("meta_gradient_parts.py", str(run_dir), "--tasks", "3", "--params", str(other))
    assert elsewhere != single  # estimated at the given parameters


def test_trpo_finite_difference_compares_finn_et_al_s_product_with_the_exact_one(tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny(run={"dir": str(run_dir)}, evaluation={"at_end": False}), progress=False)
    page = tmp_path / "page.md"
    out = script("trpo_finite_difference.py", str(run_dir), "--exact", "--iterations", "1", "2", "--out", str(page))
    assert out.strip() in page.read_text(encoding="utf-8") and "--iterations 1 2 --out" in page.read_text(encoding="utf-8")
    assert "| meta-batch | ‖g‖ | product |" in out  # no bare || to split the markdown cells
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines()[2:]]
    assert [(row[0], row[2]) for row in rows] == [("1", "finite difference, float32"), ("1", "exact"),
                                                  ("2", "finite difference, float32"), ("2", "exact")], out
    for iteration, norm, name, cos, ratio, curvature, moved in rows:
        assert -1 <= float(cos) <= 1 and float(ratio) > 0 and float(curvature) > 0 and float(norm) > 0
        shares = [float(s) for s in moved.split(",")] if name != "exact" else []
        assert (1 <= len(shares) <= 11 if name != "exact" else not shares) and all(0 <= s <= 1 for s in shares), out
    assert rows[0][3:6] != rows[1][3:6]  # the finite difference in float32 is not the exact product
