"""`rnnserve train` / `rnnserve export`: clear one-line errors (exit 2) and determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from rnnserve.export.cli import export_main, train_main

# A tiny training run: one small GRU, one epoch, a short window (a few seconds).
TINY = ["--cells", "gru", "--hidden", "4", "--layers", "1", "--epochs", "1", "--window", "48",
        "--stride", "96", "--no-plots", "--quiet"]


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"rnnserve {command}: error: "), err
    return err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cells", "lstm,transformer"], "unknown cell(s) 'transformer'"),
        (["--cells", ","], "unknown cell"),
        (["--data", "/nonexistent/tmy.csv"], "does not exist"),
        (["--data", "atlantis"], "does not exist"),
        (["--features", "temperature_f,visibility"], "unknown feature(s) 'visibility'"),
        (["--features", "hour_sin,temperature_f"], "temperature_f first"),
        (["--test-months", "4,13"], "--test-months must list months 1-12"),
        (["--val-months", "x"], "invalid _months value"),
        (["--val-months", "4"], "both validation and test"),
        (["--window", "0"], "--window must be at least 1"),
        (["--stride", "0"], "--stride must be at least 1"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--hidden", "abc"], "invalid int value"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_train_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                         message: str) -> None:
    code = train_main(["--out", str(tmp_path / "m"), "--checkpoints", str(tmp_path / "c"),
                       *TINY, *extra])
    assert code == 2
    assert message in one_line_error(capsys, "train")


def test_train_bad_data_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("station\ndate,temp\n2010-01-01,50\n")
    empty = tmp_path / "empty.tm2"
    empty.write_text("")
    out_file = tmp_path / "a_file"
    out_file.write_text("x")
    cases = [
        (["--data", str(garbage)], "is not a readable TMY3 file"),
        (["--data", str(empty)], "is not a readable TMY2 file"),
        (["--window", "800"], "longer than month"),
        (["--out", str(out_file)], "is a file, not a directory"),
    ]
    for extra, message in cases:
        assert train_main([*TINY, "--checkpoints", str(tmp_path / "c"),
                           "--out", str(tmp_path / "m"), *extra]) == 2
        assert message in one_line_error(capsys, "train")


def test_export_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_ckpt = tmp_path / "x.pt"
    not_ckpt.write_text("hello")
    cases = [
        ([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")], "does not exist"),
        ([str(not_ckpt), "--out", str(tmp_path / "o")], "not a readable checkpoint"),
        ([str(tmp_path), "--out", str(tmp_path / "o")], "is a directory"),
        ([str(not_ckpt)], "required: --out"),
    ]
    for argv, message in cases:
        assert export_main(argv) == 2
        assert message in one_line_error(capsys, "export")


def test_tiny_training_is_bit_for_bit_reproducible_and_exportable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digests = []
    for run in ("a", "b"):
        assert train_main([*TINY, "--out", str(tmp_path / run),
                           "--checkpoints", str(tmp_path / f"ckpt-{run}")]) == 0
        digests.append(hashlib.sha256(
            (tmp_path / run / "temperature-gru" / "model.onnx").read_bytes()).hexdigest())
        assert (tmp_path / run / "temperature-gru" / "metrics.json").is_file()
    assert digests[0] == digests[1]
    assert "| gru |" in capsys.readouterr().out  # the summary table

    # Re-exporting the checkpoint gives the same bytes as the training run wrote.
    assert export_main([str(tmp_path / "ckpt-a" / "temperature-gru.pt"),
                        "--out", str(tmp_path / "re"), "--name", "temperature-gru"]) == 0
    again = hashlib.sha256((tmp_path / "re" / "model.onnx").read_bytes()).hexdigest()
    assert again == digests[0]
    assert ((tmp_path / "re" / "model.json").read_text()
            == (tmp_path / "a" / "temperature-gru" / "model.json").read_text())


def test_a_feature_subset_is_trained_declared_and_scored(tmp_path: Path) -> None:
    """--features picks any subset of the vocabulary: the model takes that width, model.json
    lists the names with units and declares the data, and metrics.json scores it beside every
    baseline at every site."""
    assert train_main([*TINY, "--features", "temperature_f,dew_point_f,hour_sin,hour_cos",
                       "--out", str(tmp_path / "m"), "--checkpoints", str(tmp_path / "c")]) == 0
    folder = tmp_path / "m" / "temperature-gru"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["input_size"] == 4
    assert meta["features"] == [{"name": "temperature_f", "unit": "degF"},
                                {"name": "dew_point_f", "unit": "degF"},
                                {"name": "hour_sin", "unit": "1"},
                                {"name": "hour_cos", "unit": "1"}]
    assert meta["data"]["file"] == "pvlib/data/723170TYA.CSV"
    assert (meta["data"]["val_months"], meta["data"]["test_months"]) == ([1, 7], [4, 10])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["sites"]) == {"greensboro", "sand_point", "miami"}
    for scopes in metrics["sites"].values():
        for entry in scopes.values():
            assert set(entry["rmse_f"]) == {"model", "persistence", "same_hour_yesterday",
                                            "linear_ar"}
