"""``bodycam-model compare``: a worse candidate shows as worse, per condition, in text, JSON and a plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _models import corrupt_weights
from conftest import MakeClip

from bodycam.device.detect.model_spec import default_model_path, sidecar_path
from bodycam.model_compile.cli import main


def test_a_damaged_candidate_compares_worse_than_the_shipped_model(
        clip_maker: MakeClip, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    clip_maker(data / "range1.mp4", seconds=4, shots=3, seed=901, scene="range")
    clip_maker(data / "street1.mp4", seconds=4, shots=2, seed=902, scene="street")
    clip_maker(data / "free1.mp4", seconds=4, shots=0, seed=903, scene="indoor")
    shipped = default_model_path()
    cand = tmp_path / "cand" / shipped.name
    cand.parent.mkdir()
    shutil.copyfile(shipped, cand)
    side = json.loads(sidecar_path(shipped).read_text())
    side["version"] = "9.0.0-damaged"
    sidecar_path(cand).write_text(json.dumps(side))
    corrupt_weights(cand)
    plot = tmp_path / "cmp.png"
    assert main(["compare", str(cand), str(shipped), "--data", str(data), "--json", "--plot", str(plot)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["models"]["candidate"]["version"] == "9.0.0-damaged"
    a = res["all"]
    assert a["candidate"]["shots"] == a["shipped"]["shots"] == 5
    assert a["shipped"]["recall"] > a["candidate"]["recall"]
    assert a["delta"]["recall"] == pytest.approx(a["candidate"]["recall"] - a["shipped"]["recall"], abs=1e-3)
    assert set(res["by_condition"]) == {"bodycam-sim/range", "bodycam-sim/street", "bodycam-sim/indoor"}
    assert plot.stat().st_size > 1000
    assert main(["compare", str(cand), str(shipped), "--data", str(data)]) == 0
    text = capsys.readouterr().out
    assert "candidate shotnet 9.0.0-damaged vs shipped shotnet" in text and "bodycam-sim/street" in text
    assert main(["compare", str(cand), str(shipped), "--data", str(tmp_path / "nothing")]) != 0
