import json

import pytest
import yaml

from sn7.viz.ablation_table import ablation_table, find_runs, main


def fake_run(path, iou, overrides, minutes=None, old=False):
    (path / "evaluate").mkdir(parents=True)
    (path / ".hydra").mkdir()
    head = {"threshold": 0.6, "iou": iou, "precision": 0.5, "recall": 0.4, "f1": 0.45}
    metrics = {
        "aois": ["L15-0357E-1223N_1429_3296_13"],
        "pixel": {"best": head} if old else {"headline": head},
        "building": {"f1": 0.1} if old else {"f1": 0.1, "f1_sn7": 0.3},
    }
    if not old:
        metrics["scot"] = {"scot": 0.123}
    (path / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if minutes is not None:
        summary = {"metrics": {"train/minutes": minutes}}
        (path / "train_summary.json").write_text(json.dumps(summary))
    return path


def test_one_row_per_run_with_its_change_and_numbers(tmp_path):
    sweep = tmp_path / "fold0"
    fake_run(sweep / "pos07", 0.3, ["experiment=ablation", "ablation=pos07"], 7.25, old=True)
    fake_run(sweep / "base", 0.25, ["experiment=ablation", "ablation=base"], 6.0)
    single = fake_run(tmp_path / "single", 0.2, ["data.root=/x", "model.base=16", "split.fold=0"])

    runs = find_runs([sweep, single])
    assert [r.name for r in runs] == ["base", "pos07", "single"]
    lines = ablation_table(runs).splitlines()
    assert len(lines) == 2 + 3
    assert lines[2] == (
        "| base | base | L15-0357E-1223N | 0.60 (selection) | 0.250 | 0.500 | 0.400 | 0.450 "
        "| 0.300 | 0.100 | 0.123 | 6.0 |"
    )
    # an older run chose its threshold on the AOI it reports, and says so
    assert "| 0.60 (reported AOI) |" in lines[3] and lines[3].endswith("| – | 0.100 | – | 7.2 |")
    assert lines[4].startswith("| single | model.base=16 |") and lines[4].endswith("| ? |")


def test_a_folder_without_runs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"no evaluate/metrics\.json"):
        main([str(tmp_path)])


def test_writes_the_table_to_a_file(tmp_path):
    fake_run(tmp_path / "runs" / "a", 0.3, ["ablation=a"], 1.0)
    out = tmp_path / "results" / "ablations.md"
    main([str(tmp_path / "runs"), "--out", str(out)])
    assert out.read_text().count("\n") == 3
