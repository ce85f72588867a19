"""scripts/bench.py --section quality: a --quick run prints the PSNR table and writes the figure,
with breaching's rows when it imports and a skip note when it does not."""

import re


ROW = re.compile(r"^\| LeNet width 32 \| 1 \| (?P<method>[^|]+?) \| (?P<budget>[0-9.]+ (s|it\.)) \| "
                 r"(?P<psnr>[0-9.]+) \[(?P<low>[0-9.]+), (?P<high>[0-9.]+)\] \| (?P<iterations>[0-9]+) \| "
                 r"[0-9.]+ \| [0-9.]+ \|$")


def rows(out: str) -> list[dict[str, str]]:
    return [m.groupdict() for m in map(ROW.match, out.splitlines()) if m]


def test_median_interval_brackets_the_median(bench):
    median, low, high = bench.quality_module().median_interval([10.0, 11.0, 12.0, 13.0, 30.0])
    assert median == 12.0 and 10.0 <= low <= median <= high <= 30.0
    assert bench.quality_module().median_interval([7.0]) == (7.0, 7.0, 7.0)


def test_quick_quality_run_prints_the_table_and_writes_the_figure(bench, capsys, tmp_path):
    figure = tmp_path / "quality.png"
    bench.main(["--quick", "--device", "cpu", "--section", "quality", "--figure", str(figure)])
    out = capsys.readouterr().out
    assert "### Quality: PSNR against attack wall time" in out
    found = rows(out)
    methods = {row["method"] for row in found}
    assert {"deepleak geng_plus (default)", "deepleak geng", "deepleak ig", "deepleak ig FD", "deepleak gradinversion"} <= methods
    for row in found:
        assert 0 < float(row["low"]) <= float(row["psnr"]) <= float(row["high"]) < 100
    # the equal-iteration rows run exactly their count
    assert all(row["iterations"] == "5" for row in found if row["budget"] == "5 it.")
    if bench.breaching_available() is None:
        assert {"breaching ig"} <= methods
        assert {row["budget"] for row in found if row["method"] == "breaching ig"} == {"0.05 s", "0.2 s", "5 it."}
    else:
        assert "breaching rows skipped: breaching not installed" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_breaching_its_rows_are_skipped_with_a_note(bench, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "breaching_available", lambda: "breaching not installed (test)")
    figure = tmp_path / "quality.png"
    bench.main(["--quick", "--device", "cpu", "--section", "quality", "--methods", "ig,breaching",
                "--budgets", "0.05", "--iterations", "", "--figure", str(figure)])
    out = capsys.readouterr().out
    assert [row["method"] for row in rows(out)] == ["deepleak ig"]
    assert "breaching rows skipped: breaching not installed (test)" in out
    assert figure.exists()


def test_fedavg_scenario_runs_the_replay_and_the_pseudo_gradient_route_on_the_shipped_client(bench, capsys, tmp_path):
    figure = tmp_path / "fedavg.png"
    bench.main(["--quick", "--device", "cpu", "--section", "quality", "--scenario", "fedavg", "--batches", "2",
                "--budgets", "0.3", "--methods", "fedavg_replay,pseudo_gradient,breaching", "--figure", str(figure)])
    out = capsys.readouterr().out
    row = re.compile(r"^\| LeNet width 32, FedAvg N 2 B 2 E 2 eta 0.01 \| 2 \| (?P<method>[^|]+?) \| 0.3 s \| "
                     r"(?P<psnr>[0-9.]+) \[")
    found = [m.group("method") for m in map(row.match, out.splitlines()) if m]
    assert found == ["deepleak fedavg_replay (FedAvg default)", "deepleak geng_plus on the pseudo-gradient"]
    assert "breaching rows skipped: the bench drives breaching on FedSGD gradients only" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
