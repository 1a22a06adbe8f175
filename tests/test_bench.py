"""`ebmlab bench`: a tiny suite end to end, resume, a failing run kept apart, and the tables."""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ebmlab.bench import (
    BEGIN,
    END,
    SUITES,
    RunSpec,
    bench,
    plan_runs,
    publish_page,
    run_in_process,
    section_name,
)
from ebmlab.bench.spec import Budget
from ebmlab.bench.tables import dataset_table, read_results, summary_table, write_results
from ebmlab.errors import EbmlabError

TINY_BENCH = {"methods": ["dsm", "bidvl"], "data": ["8gaussians"], "budget": "30"}


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b"
    command = [sys.executable, "-m", "ebmlab", "bench", "--methods", "dsm,bidvl"]
    command += ["--data", "8gaussians", "--budget", "30", "--jobs", "2", "--quiet"]
    result = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return out


def test_tiny_suite_writes_finite_results_leaderboard_and_figures(tiny_bench):
    with (tiny_bench / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["method"], r["data"], r["seed"]) for r in rows) == [
        ("bidvl", "8gaussians", "0"),
        ("dsm", "8gaussians", "0"),
    ]
    for row in rows:
        assert row["status"] == "ok" and row["diverged"] == "no" and row["budget"] == "30 steps"
        assert int(float(row["steps"])) == 30
        assert float(row["peak_mem_mb"]) > 10 and float(row["it_per_s"]) > 0
        for key in ("kl", "nll", "mmd2", "auroc/off-data", "wall_s"):
            assert math.isfinite(float(row[key])), (row["method"], key)
    assert math.isfinite(float(next(r for r in rows if r["method"] == "bidvl")["recon_rmse_test"]))
    board = (tiny_bench / "leaderboard.md").read_text()
    assert "| dsm |" in board and "| bidvl |" in board and "**" in board
    assert "ebmlab bench --suite quick --methods dsm,bidvl" in board
    for figure in ("density_8gaussians.png", "quality_vs_time.png"):
        assert (tiny_bench / figure).stat().st_size > 10_000
        assert f"]({figure})" in board
    curve = (tiny_bench / "runs/dsm_8gaussians_s0/bench.json").read_text()
    assert '"step": 15' in curve  # the quick suite scores each run once half-way


def test_resume_skips_finished_runs_and_adds_new_ones(tiny_bench):
    log = tiny_bench / "runs/dsm_8gaussians_s0/worker.log"
    before = log.stat().st_mtime_ns
    with pytest.raises(EbmlabError, match="--resume"):
        bench("quick", out=tiny_bench, progress=False, **TINY_BENCH)
    bench("quick", out=tiny_bench, resume=True, progress=False, **TINY_BENCH)
    assert log.stat().st_mtime_ns == before
    with pytest.raises(EbmlabError, match="budget 30 steps"):
        bench("quick", out=tiny_bench, resume=True, progress=False, **TINY_BENCH | {"budget": "9"})


def resident_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_a_failing_run_is_recorded_not_raised(tmp_path):
    spec = RunSpec("dsm", "no-such-data", 0, "5", str(tmp_path / "run"))
    result = run_in_process(spec, threads=1)
    assert result["status"] == "failed" and "no-such-data" in result["error"]
    assert (tmp_path / "run/bench.json").is_file()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_memory_is_the_run_s_own_not_the_bench_s(tmp_path):
    ballast = bytearray(700 * 2**20)  # the bench process grows by 700 MB before it forks
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: resident
    parent = resident_mb()
    result = run_in_process(RunSpec("dsm", "no-such-data", 0, "5", str(tmp_path / "r")), 1)
    assert 50 < result["peak_mem_mb"] < parent - 500, (result["peak_mem_mb"], parent)
    del ballast


def test_budget_is_seconds_or_whole_steps():
    assert Budget.parse("90s") == Budget("seconds", 90.0)
    assert Budget.parse("2000") == Budget.parse("2000 steps") == Budget("steps", 2000)
    assert str(Budget.parse("2.5s")) == "2.5s" and str(Budget.parse("40")) == "40 steps"
    assert Budget("seconds", 90.0).limits(0.5) == {"steps": 10**9, "max_seconds": 45.0}
    assert Budget("steps", 30).limits(0.5) == {"steps": 15, "max_seconds": None}
    for bad in ("", "-5", "0", "5min", "2.5"):
        with pytest.raises(EbmlabError):
            Budget.parse(bad)


def test_preset_budget_keeps_the_preset_s_steps_and_is_scored_at_its_end_only():
    preset = Budget.parse("preset")
    assert str(preset) == "preset" and Budget.parse(str(preset)) == preset
    assert preset.limits(1.0) == {"max_seconds": None}
    with pytest.raises(EbmlabError, match="part-way"):
        preset.limits(0.5)


def test_long_suite_scores_images_by_inception_fid_on_2000_samples(tmp_path):
    specs = plan_runs(
        SUITES["long"],
        tmp_path,
        ["cd"],
        {"mnist": "image", "8gaussians": "toy2d"},
        None,
        "preset",
        "cpu",
    )
    by_data = {spec.data: spec for spec in specs}
    assert by_data["mnist"].fid and by_data["mnist"].eval_samples == 2000
    assert by_data["mnist"].budget == "preset" and by_data["mnist"].curve_points == 1
    assert not by_data["8gaussians"].fid
    assert set(SUITES["long"].budgets) == {"mnist", "fashion-mnist"}
    standard = plan_runs(
        SUITES["standard"], tmp_path, ["cd"], {"mnist": "image"}, None, None, "cpu"
    )
    assert not standard[0].fid


def test_an_interrupted_run_continues_from_its_checkpoint(tmp_path):
    import ebmlab

    spec = RunSpec("dsm", "8gaussians", 0, "40 steps", str(tmp_path / "run"))
    run_dir = Path(spec.run_dir)
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    overrides = {"train": {"sample_every": 0, "eval_samples": None, "max_seconds": None}}
    ebmlab.train(
        "dsm",
        "8gaussians",
        steps=20,
        out=run_dir,
        seed=0,
        evaluate=False,
        progress=False,
        overrides=overrides,
    )
    first_rows = (run_dir / "metrics.jsonl").read_text()
    result = run_in_process(spec, threads=1)
    assert result["status"] == "ok" and result["steps"] == 40
    # the rows written before the interruption are kept, wall times and all: continued, not redone
    assert (run_dir / "metrics.jsonl").read_text().startswith(first_rows)
    other = dataclasses.replace(spec, budget="30 steps")
    assert run_in_process(other, threads=1)["steps"] == 30
    assert not (run_dir / "metrics.jsonl").read_text().startswith(first_rows)


def rows_of(values):
    return [
        {
            "method": m,
            "data": "d",
            "seed": s,
            "status": status,
            "kl": kl,
            "wall_s": 1.0,
            "it_per_s": 10.0,
            "peak_mem_mb": 100.0,
            "budget": "10s",
        }
        for m, s, status, kl in values
    ]


def test_leaderboard_cells_are_mean_and_std_of_finished_seeds_best_in_bold():
    rows = rows_of(
        [("a", 0, "ok", 1.0), ("a", 1, "ok", 3.0), ("b", 0, "ok", 0.5), ("b", 1, "diverged", "")]
    )
    table = dataset_table(rows)
    assert table[0].startswith("| method | KL |")
    assert "| a | 2 ± 1.41 |" in table[2] and table[2].endswith("| 0/2 |")
    assert "| b | **0.5** |" in table[3] and table[3].endswith("| 1/2 |")
    summary = summary_table(rows, ["d"], {"d": "toy2d"})
    assert summary[:5] == [
        "KL, mean over seeds:",
        "",
        "| method | d |",
        "| --- | --- |",
        "| a | 2 |",
    ]
    assert summary[5] == "| b | **0.5** |" and summary[7] == "MMD², mean over seeds:"
    assert summary[-1] == "| b | - |"


def test_inception_fid_is_ranked_and_its_floor_is_not():
    rows = rows_of([("a", 0, "ok", ""), ("b", 0, "ok", "")])
    for row, fid, floor in zip(rows, (40.0, 20.0), (3.0, 2.0), strict=True):
        row |= {"fid_inception": fid, "fid_inception_floor": floor}
    table = dataset_table(rows)
    assert table[0].startswith("| method | Inception FID | its train-vs-test floor |")
    assert table[2].startswith("| a | 40 | 3 |") and table[3].startswith("| b | **20** | 2 |")


def test_results_csv_round_trips_numbers_and_blanks(tmp_path):
    from ebmlab.bench.tables import write_results

    rows = rows_of([("a", 0, "ok", 1.5), ("b", 0, "failed", "")])
    write_results(tmp_path / "results.csv", rows)
    back = read_results(tmp_path / "results.csv")
    assert back[0]["kl"] == 1.5 and back[1]["kl"] == "" and back[1]["status"] == "failed"


def test_publish_replaces_only_the_bench_section(tmp_path):
    figure = tmp_path / "q.png"
    figure.write_bytes(b"png")
    page = tmp_path / "docs/results.md"
    page.parent.mkdir()
    page.write_text(f"# Results\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Tabular\nkept\n")
    publish_page(page, "new board", [figure])
    text = page.read_text()
    assert "new board" in text and "old" not in text and "intro" in text and "kept" in text
    assert (tmp_path / "docs/images/bench/q.png").read_bytes() == b"png"
    publish_page(page, "long board", [figure], section_name("long"))
    text = page.read_text()
    assert text.index("new board") < text.index("kept") < text.index("long board")
    assert (tmp_path / "docs/images/bench-long/q.png").is_file()
    publish_page(page, "longer board", [figure], section_name("long"))
    text = page.read_text()
    assert "long board" not in text and text.count("longer board") == 1 and "new board" in text
    assert section_name("standard") == "bench"


RESULT = {"method": "dsm", "data": "8gaussians", "seed": 0, "status": "ok"}


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_jobs_and_threads_count_only_the_cores_this_process_may_use(monkeypatch):
    import ebmlab.bench as bench_module

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # as under `taskset -c 3`
    assert bench_module.default_jobs("cpu") == 1
    seen = []
    monkeypatch.setattr(
        bench_module, "run_in_process", lambda spec, threads: seen.append(threads) or RESULT
    )
    bench_module.execute([RunSpec("dsm", "8gaussians", 0, "5", "r")], 1, lambda r: None, False)
    assert seen == [1]


def test_a_fresh_machine_resumes_from_the_published_rows_and_grids(tmp_path, monkeypatch):
    import ebmlab.bench as bench_module

    page = tmp_path / "docs/results.md"
    images = tmp_path / "docs/images/bench-long"
    images.mkdir(parents=True)
    page.write_text("# Results\n")
    done = {**rows_of([("dsm", 0, "ok", 0.5)])[0], "data": "digits", "budget": "5 steps"}
    write_results(images / "results.csv", [done])
    (images / "samples_digits_dsm.png").write_bytes(b"png")
    (images / "quality_vs_time.png").write_bytes(b"earlier curves")
    ran = []

    def not_run(spec, threads):
        ran.append(spec.method)
        Path(spec.run_dir).mkdir(parents=True)
        return bench_module.failure(spec, "not run", Path(spec.run_dir) / "bench.json")

    monkeypatch.setattr(bench_module, "run_in_process", not_run)
    options = {"methods": ["dsm", "cd"], "data": ["digits"], "budget": "5", "progress": False}
    with pytest.raises(EbmlabError, match="needs a page"):
        bench("long", out=tmp_path / "fresh", continue_published=True, **options)
    out = bench("long", out=tmp_path / "fresh", continue_published=True, publish=page, **options)
    assert ran == ["cd"]  # dsm's row was published by an earlier sitting
    rows = read_results(out / "results.csv")
    assert [(r["method"], r["status"], r["kl"]) for r in rows] == [
        ("dsm", "ok", 0.5),
        ("cd", "failed", ""),
    ]
    assert "](images/bench-long/samples_digits_dsm.png)" in page.read_text()
    assert "1 of the 2 rows (dsm) were measured in an earlier sitting" in page.read_text()
    assert (images / "quality_vs_time.png").read_bytes() == b"earlier curves"  # dsm's curve
    assert (
        "Kept from the earlier sitting, as they need its runs: quality_vs_time;" in page.read_text()
    )
    ran.clear()
    bench("long", out=tmp_path / "fresh2", resume=True, publish=page, **options)
    assert ran == ["dsm", "cd"]  # a plain --resume measures afresh what its own out lacks


def test_image_benches_draw_one_grid_per_method_and_skip_runs_that_are_gone(tmp_path):
    import ebmlab
    from ebmlab.bench.figures import save_model_figures
    from ebmlab.data import load_dataset

    here = tmp_path / "runs/dsm"
    ebmlab.train("dsm", "digits", steps=3, out=here, evaluate=False, progress=False)
    rows = [
        {**row, "data": "digits"} for row in rows_of([("dsm", 0, "ok", ""), ("cd", 0, "ok", "")])
    ]
    run_dirs = {("dsm", "digits", 0): here, ("cd", "digits", 0): tmp_path / "runs/gone"}
    datasets = {"digits": load_dataset("digits")}
    written = save_model_figures(rows, run_dirs, datasets, tmp_path)
    assert [path.name for path in written] == ["samples_digits_dsm.png"]
    assert (tmp_path / "samples_digits_dsm.png").stat().st_size > 5_000
    written = save_model_figures(rows[:1], run_dirs, datasets, tmp_path)
    assert [path.name for path in written] == ["samples_digits_dsm.png", "samples_digits.png"]


def test_a_figure_of_all_methods_is_kept_from_the_page_while_some_of_its_runs_are_gone(tmp_path):
    import ebmlab
    from ebmlab.bench import earlier_figures, in_page_order
    from ebmlab.bench.figures import save_model_figures
    from ebmlab.data import load_dataset

    here = tmp_path / "runs/dsm"
    ebmlab.train("dsm", "8gaussians", steps=3, out=here, evaluate=False, progress=False)
    rows = [
        {**row, "data": "8gaussians"}
        for row in rows_of([("cd", 0, "ok", 0.3), ("dsm", 0, "ok", 0.2)])
    ]
    run_dirs = {("dsm", "8gaussians", 0): here, ("cd", "8gaussians", 0): tmp_path / "runs/gone"}
    datasets = {"8gaussians": load_dataset("8gaussians")}
    assert save_model_figures(rows, run_dirs, datasets, tmp_path) == []
    assert [p.name for p in save_model_figures(rows[1:], run_dirs, datasets, tmp_path)] == [
        "density_8gaussians.png"
    ]
    published = tmp_path / "docs/images/bench"
    published.mkdir(parents=True)
    for name in ["density_8gaussians.png", "samples_d_cd.png", "samples_d.png", "other.png"]:
        (published / name).write_bytes(b"png")
    image_rows = rows_of([("cd", 0, "ok", 0.3), ("dsm", 0, "ok", 0.2)])
    drawn = [tmp_path / "quality_vs_time.png", tmp_path / "samples_d_dsm.png"]
    kept = earlier_figures(rows + image_rows, published, drawn)
    assert sorted(p.name for p in kept) == [
        "density_8gaussians.png",
        "samples_d.png",
        "samples_d_cd.png",
    ]
    (published / "quality_vs_time.png").write_bytes(b"png")
    assert published / "quality_vs_time.png" in earlier_figures(rows, published, drawn[1:])
    ordered = in_page_order(drawn + kept, rows + image_rows)
    assert [p.name for p in ordered] == [
        "quality_vs_time.png",
        "density_8gaussians.png",
        "samples_d_cd.png",
        "samples_d_dsm.png",
        "samples_d.png",
    ]


def test_the_page_names_only_kept_figures_that_leave_out_rows_measured_since():
    from ebmlab.bench import kept_note

    rows = [{"method": "cd", "data": "a"}, {"method": "cd", "data": "b"}]
    kept = [Path(n) for n in ["quality_vs_time.png", "density_a.png", "samples_b.png"]]
    note = kept_note(rows, rows[:1], kept)
    assert "density_a" not in note and ": quality_vs_time, samples_b;" in note
    assert kept_note(rows, rows, kept) == ""  # nothing measured since
