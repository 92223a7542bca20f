"""lorm.reporting: tables and figures from fabricated metrics JSON files."""

from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest

from lorm.reporting import MetricsError, load_runs
from lorm.reporting.figures import figure_paths, make_figures, method_order, method_style, paper_parity
from lorm.reporting.table import write_tables

T = 4  # tasks
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(method: str, seed: int, beta: float = 0.5, experiment: str = "exp", offset: float = 0.0) -> dict:
    """A plausible metrics dict; numbers depend on method, seed and beta so that aggregates are distinct."""
    base = {"lorm": 80.0, "fedavg-lora": 60.0, "joint": 90.0}[method] + offset - 10.0 * (beta != 0.5)
    if method == "joint":
        after = [T - 1]
        matrix = [[base + seed + j for j in range(T)]]
        forgetting = None
        comm = {"upload_bytes_per_client_round": 0, "download_bytes_per_client_round": 0}
    else:
        after = list(range(T))
        matrix = [[base - 5.0 * (i - j) + 1.5 * seed + 0.25 * j for j in range(i + 1)] for i in range(T)]
        forgetting = statistics.fmean(matrix[j][j] - matrix[-1][j] for j in range(T - 1))
        up = {"lorm": 1_234_567, "fedavg-lora": 2_000_000}[method] + 1000 * seed
        comm = {"upload_bytes_per_client_round": up, "download_bytes_per_client_round": up // 2}
    sizes = [10, 10, 20, 20]
    last = matrix[-1]
    return {
        "experiment": experiment,
        "method": method,
        "seed": seed,
        "beta": beta,
        "eval_after_task": after,
        "accuracy_matrix": matrix,
        "task_test_sizes": sizes,
        "final_avg_accuracy": statistics.fmean(last),
        "final_avg_accuracy_weighted": sum(a * n for a, n in zip(last, sizes)) / sum(sizes),
        "avg_forgetting": forgetting,
        "communication": {**comm, "upload_bytes_total": 8 * comm["upload_bytes_per_client_round"] + 100,
                          "download_bytes_total": 8 * comm["download_bytes_per_client_round"], "client_rounds": 8},
        "wall_time_s": {"train": 10.0 + seed + len(method), "statistics": 1.0, "merge": 0.5, "evaluation": 2.0,
                        "total": 20.0},
        "config": {"experiment": experiment, "fcil": {"num_clients": 4}},
    }


def _write(tmp_path, metrics: dict) -> str:
    path = tmp_path / f"beta{metrics['beta']}" / metrics["method"] / f"seed{metrics['seed']}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return str(path)


@pytest.fixture
def runs(tmp_path):
    """Two methods x two seeds + one joint run (method order of first appearance: fedavg-lora, lorm, joint)."""
    items = [_metrics(m, s) for m in ("fedavg-lora", "lorm") for s in (0, 1)] + [_metrics("joint", 0)]
    return [_write(tmp_path / "runs", m) for m in items], items


# ------------------------------------------------------------------------------------------------------ table


def test_table_numbers(tmp_path, runs):
    paths, items = runs
    csv, md = tmp_path / "t" / "main.csv", tmp_path / "t" / "main.md"
    frame = write_tables(paths, str(csv), str(md))
    table = pd.read_csv(csv)
    assert list(table["method"]) == ["fedavg-lora", "lorm", "joint"]
    assert list(table["n_seeds"]) == [2, 2, 1]
    assert list(table["experiment"]) == ["exp"] * 3 and list(table["beta"]) == [0.5] * 3
    assert len(frame) == 3

    for method in ("fedavg-lora", "lorm"):
        row = table[table["method"] == method].iloc[0]
        mine = [m for m in items if m["method"] == method]
        for col, values in {
            "faa": [m["final_avg_accuracy"] for m in mine],
            "faa_weighted": [m["final_avg_accuracy_weighted"] for m in mine],
            "forgetting": [m["avg_forgetting"] for m in mine],
            "upload_mb": [m["communication"]["upload_bytes_per_client_round"] / 1e6 for m in mine],
            "download_mb": [m["communication"]["download_bytes_per_client_round"] / 1e6 for m in mine],
            "train_time_s": [m["wall_time_s"]["train"] for m in mine],
            "total_mb": [(m["communication"]["upload_bytes_total"] + m["communication"]["download_bytes_total"])
                         / 4 / 1e6 for m in mine],
        }.items():
            assert row[f"{col}_mean"] == pytest.approx(statistics.mean(values))
            assert row[f"{col}_std"] == pytest.approx(statistics.stdev(values))  # ddof = 1

    joint = table[table["method"] == "joint"].iloc[0]
    assert joint["faa_mean"] == pytest.approx(items[-1]["final_avg_accuracy"])
    assert math.isnan(joint["faa_std"])  # one seed: empty std
    assert math.isnan(joint["forgetting_mean"])  # null forgetting
    # the CSV has plain numeric columns with empty cells for undefined values
    raw = csv.read_text().splitlines()
    assert raw[0].startswith("experiment,beta,method,n_seeds,seeds,faa_mean,faa_std,")
    assert ",," in raw[3]


def test_table_says_when_runs_were_evaluated_on_validation(tmp_path):
    items = [_metrics(m, 0) for m in ("lorm", "fedavg-lora")]
    for item in items:
        item["config"]["dataset"] = {"evaluate_on": "validation"}
    paths = [_write(tmp_path / "val", m) for m in items]
    write_tables(paths, str(tmp_path / "val.csv"), str(tmp_path / "val.md"))
    assert "**Evaluated on the validation split**" in (tmp_path / "val.md").read_text()
    test_paths = [_write(tmp_path / "test", _metrics(m, 0)) for m in ("lorm", "fedavg-lora")]
    write_tables(test_paths, str(tmp_path / "test.csv"), str(tmp_path / "test.md"))
    assert "validation" not in (tmp_path / "test.md").read_text()


def test_table_markdown(tmp_path, runs):
    paths, items = runs
    md = tmp_path / "main.md"
    write_tables(paths, str(tmp_path / "main.csv"), str(md))
    text = md.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Results: experiment exp; β = 0.5"
    header = next(line for line in lines if line.startswith("| Method"))
    for name in ("FAA task-mean (%)", "FAA sample-weighted (%)", "Forgetting (pp)", "Upload MB/client/round",
                 "Download MB/client/round", "Train time (s)"):
        assert name in header
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    lorm = [m["final_avg_accuracy"] for m in items if m["method"] == "lorm"]
    expected = f"{statistics.mean(lorm):.2f} ± {statistics.stdev(lorm):.2f}"
    assert expected in rows["lorm"].split(" | ")[2]
    joint_cells = [c.strip() for c in rows["joint"].strip("|").split("|")]
    assert joint_cells[1] == "1"  # seeds
    assert joint_cells[2] == f"{items[-1]['final_avg_accuracy']:.2f}"  # no "±" for one seed
    assert joint_cells[4] == "–"  # forgetting undefined
    assert all(line.count("|") == header.count("|") for line in lines if line.startswith("|"))


def test_table_several_betas_and_experiments(tmp_path):
    items = [_metrics("lorm", 0, beta=b, experiment=e) for e in ("e1", "e2") for b in (0.5, 1)]
    paths = [_write(tmp_path / e, m) for e, m in zip(("a", "b", "c", "d"), items)]
    frame = write_tables(paths, str(tmp_path / "m.csv"), str(tmp_path / "m.md"))
    assert list(zip(frame["experiment"], frame["beta"])) == [("e1", 0.5), ("e1", 1.0), ("e2", 0.5), ("e2", 1.0)]
    text = (tmp_path / "m.md").read_text()
    assert text.splitlines()[0] == "# Results: experiments e1, e2; β = 0.5, 1.0"
    assert "| Experiment | β | Method |" in text


def test_missing_key_is_a_one_line_error(tmp_path, runs):
    paths, items = runs
    broken = dict(items[0])
    del broken["final_avg_accuracy_weighted"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    with pytest.raises(MetricsError) as info:
        write_tables([*paths, str(bad)], str(tmp_path / "x.csv"), str(tmp_path / "x.md"))
    message = str(info.value)
    assert "\n" not in message and str(bad) in message and "final_avg_accuracy_weighted" in message

    nested = json.loads(json.dumps(items[0]))
    del nested["communication"]["upload_bytes_per_client_round"]
    bad.write_text(json.dumps(nested))
    with pytest.raises(MetricsError, match="communication.upload_bytes_per_client_round"):
        load_runs([str(bad)])


def test_missing_file_and_duplicates(tmp_path, runs):
    paths, _ = runs
    with pytest.raises(MetricsError, match="not found") as info:
        write_tables([str(tmp_path / "nope.json")], str(tmp_path / "x.csv"), str(tmp_path / "x.md"))
    assert "nope.json" in str(info.value)
    with pytest.raises(MetricsError, match="same experiment, beta, method and seed"):
        load_runs([paths[0], paths[0]])
    with pytest.raises(MetricsError, match="no metrics files"):
        load_runs([])


# ---------------------------------------------------------------------------------------------------- figures


def _assert_png(path) -> None:
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


def _assert_pdf(path) -> None:
    assert open(path, "rb").read()[:5] == b"%PDF-"


def _assert_figures(paths) -> None:
    for path in paths:
        (_assert_png if path.endswith(".png") else _assert_pdf)(path)


STEMS = ["accuracy_per_task", "accuracy_matrix", "accuracy_vs_communication", "forgetting_and_accuracy"]


def test_figures_written(tmp_path, runs):
    paths, _ = runs
    out = tmp_path / "figures"
    written = make_figures(paths, str(out))
    assert written == [str(out / f"{stem}.{fmt}") for stem in STEMS for fmt in ("png", "pdf")]
    assert written == figure_paths([0.5], str(out))
    _assert_figures(written)


def test_figures_are_deterministic(tmp_path, runs):
    paths, _ = runs
    first = make_figures(paths, str(tmp_path / "a"), ["accuracy_vs_communication"])
    second = make_figures(paths, str(tmp_path / "b"), ["accuracy_vs_communication"])
    for a, b in zip(first, second):
        assert open(a, "rb").read() == open(b, "rb").read(), a


def test_point_labels_never_overlap_each_other_or_markers():
    from lorm.reporting.figures import _label_points, _new_figure

    # eight methods at the same communication and nearly the same accuracy (the LoRA aggregators' case)
    points = [(8.0, 30.0 + 0.3 * k, name) for k, name in enumerate(
        ["lorm", "lorm-a-only", "lorm-b-only", "fedavg-lora", "ta", "knots-ties", "knots-dare-ties", "ffa-lora"])]
    points += [(900.0, 12.0, "fedavg"), (900.0, 55.0, "ewc")]
    fig = _new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    ax.plot([p[0] for p in points], [p[1] for p in points], "o", label="points")
    ax.set_xscale("log")
    ax.legend(loc="upper center")
    _label_points(fig, ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
    assert "lorm" in boxes and "fedavg" in boxes and "ewc" in boxes  # isolated points and LoRM are always named
    assert 1 < len(boxes) < len(points)  # the crowded column cannot name everyone
    names = list(boxes)
    assert not any(boxes[a].overlaps(boxes[b]) for i, a in enumerate(names) for b in names[i + 1:])
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(box.overlaps(legend) for box in boxes.values())


def test_long_legends_go_outside_the_axes():
    from lorm.reporting.figures import LEGEND_INSIDE_MAX, _legend, _new_figure

    for count, outside in ((3, False), (LEGEND_INSIDE_MAX + 1, True), (25, True)):
        fig = _new_figure(6.5, 4.5)
        ax = fig.add_subplot()
        for k in range(count):
            ax.plot([0, 1], [k, k + 1], label=f"method-{k}")
        ax.legend()  # as seaborn draws one itself
        _legend(ax, loc="best")
        assert (ax.get_legend() is None) == outside and len(fig.legends) == int(outside), count
        if outside:  # widened so the axes keep room; two columns above twice the limit
            assert fig.get_size_inches()[0] > 6.5 and fig.legends[0]._ncols == (1 if count <= 16 else 2)


def test_figures_per_beta(tmp_path):
    items = [_metrics(m, s, beta=b) for b in (0.5, 0.1) for m in ("lorm", "joint") for s in (0, 1)]
    paths = [_write(tmp_path / "runs", m) for m in items]
    written = make_figures(paths, str(tmp_path / "f"))
    names = [p.rsplit("/", 1)[1] for p in written]
    assert names == [f"{stem}_beta{beta}.{fmt}" for beta in ("0.5", "0.1") for stem in STEMS for fmt in ("png", "pdf")
                     ] + ["faa_vs_beta.png", "faa_vs_beta.pdf"]
    assert written == figure_paths([0.5, 0.1, 0.5], str(tmp_path / "f"))
    _assert_figures(written)


def test_method_order_and_style_are_fixed():
    assert method_order(["joint", "lorm-filler", "fedavg-lora", "lorm"]) == ["lorm", "fedavg-lora", "joint",
                                                                          "lorm-filler"]
    lorm = method_style("lorm")
    assert lorm["linewidth"] > method_style("fedavg-lora")["linewidth"] and lorm["bold"]
    default = ["lorm", "lorm-a-only", "lorm-b-only", "fedavg-lora", "ffa-lora", "joint", "ta", "knots-ties",
               "knots-dare-ties"]  # config/config.yaml's methods: ten colours, all distinct
    assert len({method_style(m)["color"] for m in default}) == len(default)
    assert method_style("lorm-filler") == method_style("lorm-filler")


def test_paper_parity_figure(tmp_path):
    frame = pd.DataFrame({
        "our_method": ["lorm", "fedavg-lora", "lorm"], "dataset": ["CIFAR-100", "CIFAR-100", "ImageNet-R"],
        "ours_faa_weighted_mean": [70.0, 60.0, 50.0], "ours_faa_weighted_std": [1.0, None, 2.0],
        "paper_value": ["72.1", "65.0", ""],
    })
    csv = tmp_path / "paper.csv"
    frame.to_csv(csv, index=False)
    written = paper_parity(str(csv), str(tmp_path / "parity"))
    assert [p.rsplit("/", 1)[1] for p in written] == ["parity.png", "parity.pdf"]
    _assert_figures(written)
    frame.drop(columns=["paper_value"]).to_csv(csv, index=False)
    with pytest.raises(MetricsError, match="paper.csv: missing column 'paper_value'"):
        paper_parity(str(csv), str(tmp_path / "parity"))
def test_figure_paths_beta_labels():
    assert figure_paths([1], stems=STEMS[:2], formats=["png"]) == figure_paths([1.0], stems=STEMS[:2], formats=["png"])
    assert figure_paths([1], stems=STEMS[:2], formats=["png"]) == ["figures/accuracy_per_task.png",
                                                                   "figures/accuracy_matrix.png"]
    assert figure_paths([1, 0.05], "f")[0] == "f/accuracy_per_task_beta1.0.png"
    assert figure_paths([1, 0.05], "f", formats=["png"])[5] == "f/accuracy_matrix_beta0.05.png"
    assert figure_paths([1, 0.05], "f")[-1] == "f/faa_vs_beta.pdf"
    assert "faa_vs_beta" not in " ".join(figure_paths([1]))


# ------------------------------------------------------------------------------------------------ paper table

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
PAPER_CSV = REPO / "workflow" / "resources" / "paper-table-lorm.csv"


def _paper_run(tmp_path, method: str, seed: int, dataset: str, beta: float, faa: float, experiment: str | None = None):
    """A metrics file of one run on ``dataset`` whose sample-weighted FAA is ``faa``."""
    base = method if method in ("lorm", "fedavg-lora", "joint") else "fedavg-lora"
    metrics = _metrics(base, seed, beta=beta, experiment=experiment or f"{dataset}-beta{beta}")
    metrics["method"] = method
    metrics["final_avg_accuracy_weighted"] = faa
    metrics["final_avg_accuracy"] = faa - 1.0
    metrics["config"] = {"experiment": metrics["experiment"], "dataset": {"name": dataset}}
    path = tmp_path / metrics["experiment"] / method / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return str(path)


@pytest.fixture
def paper_runs(tmp_path):
    runs = []
    for seed, (lorm, joint) in enumerate([(85.0, 91.0), (86.0, 92.0), (87.5, 93.0)]):
        runs.append(_paper_run(tmp_path, "lorm", seed, "cifar100", 0.5, lorm))
        runs.append(_paper_run(tmp_path, "joint", seed, "cifar100", 0.5, joint))
        runs.append(_paper_run(tmp_path, "ffa-lora", seed, "cifar100", 0.5, 70.0 + seed))
    runs.append(_paper_run(tmp_path, "lorm", 0, "eurosat", 1.0, 80.0))
    runs.append(_paper_run(tmp_path, "lorm", 1, "eurosat", 1.0, 82.0))
    return runs


def _md_rows(text: str, beta: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and {row label: cells} of the table under '## β = <beta>'."""
    section = text.split(f"## β = {beta}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    header = split(lines[0])
    return header, {split(line)[0]: split(line)[1:] for line in lines[2:]}


def test_paper_table_ours_beside_paper_and_markers(tmp_path, paper_runs):
    from lorm.reporting.paper import write_paper_tables

    csv_path, md_path = tmp_path / "t" / "paper.csv", tmp_path / "t" / "paper.md"
    write_paper_tables(paper_runs, str(PAPER_CSV), str(csv_path), str(md_path))
    text = md_path.read_text()
    assert "paper's main FCIL table" in text and "sample-weighted" in text  # labelled as the paper's numbers

    header, rows = _md_rows(text, "0.5")
    assert header[:5] == ["Method", "CIFAR-100 ours", "CIFAR-100 paper", "ImageNet-R ours", "ImageNet-R paper"]
    assert len(header) == 1 + 2 * 6  # six data sets of the paper, a column pair each
    lorm = rows["LoRM (`lorm`)"]
    assert lorm[0] == f"{statistics.mean([85.0, 86.0, 87.5]):.2f} ± {statistics.stdev([85.0, 86.0, 87.5]):.2f}"
    assert lorm[1] == "86.95" and lorm[2] == "not run" and lorm[3] == "72.48"
    assert lorm[header.index("EuroSAT paper") - 1] == "84.23†"  # beta unstated for EuroSAT in the paper
    joint = rows["Joint (`joint`)"]
    assert joint[0] == "92.00 ± 1.00" and joint[1] == "92.75"
    assert rows["EWC (`ewc`)"][0] == "not run" and rows["EWC (`ewc`)"][1] == "78.46"  # ours, without runs here
    assert rows["L2P (`l2p`)"][0] == "not run" and rows["L2P (`l2p`)"][1] == "83.88"  # ours, without runs here
    assert rows["TARGET (`target`)"][0] == "not run" and rows["TARGET (`target`)"][1] == "74.72"
    assert rows["FFA-LoRA (`ffa-lora`)"][0] == "71.00 ± 1.00" and rows["FFA-LoRA (`ffa-lora`)"][1] == "—"
    assert list(rows)[:12] == ["Joint (`joint`)", "EWC (`ewc`)", "LwF (`lwf`)", "FisherAVG (`fisheravg`)",
                               "RegMean (`regmean`)", "CCVR (`ccvr`)", "L2P (`l2p`)", "CODA-P (`coda-p`)",
                               "FedProto (`fedproto`)",
                               "TARGET (`target`)", "PILoRA (`pilora`)", "LoRM (`lorm`)"]  # the paper's row order

    header, rows = _md_rows(text, "1.0")  # a beta the paper's table does not cover
    assert header == ["Method", "EuroSAT ours", "EuroSAT paper"]
    assert rows == {"LoRM (`lorm`)": ["81.00 ± 1.41 (n=2)", "—"]}  # 2 seeds where 3 are usual
    assert "The paper's table has no numbers for this β." in text.split("## β = 1.0", 1)[1]


def test_paper_table_keeps_the_paper_numbers_verbatim(tmp_path, paper_runs):
    import csv

    from lorm.reporting.paper import write_paper_tables

    csv_path, md_path = tmp_path / "paper.csv", tmp_path / "paper.md"
    write_paper_tables(paper_runs, str(PAPER_CSV), str(csv_path), str(md_path))
    out = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    text = md_path.read_text()
    with open(PAPER_CSV, newline="") as fh:
        reference = list(csv.DictReader(fh))
    assert len(reference) == 74  # 12 methods x 6 data sets at beta 0.5, and LoRM's CIFAR-100 beta 0.1 / 0.05
    for ref in reference:
        beta = ref["beta"] if ref["beta"] in ("0.1", "0.05") else "0.5"
        match = out[(out["paper_method"] == ref["method"]) & (out["dataset"] == ref["dataset"]) & (out["beta"] == beta)]
        assert list(match["paper_value"]) == [ref["value"]], ref  # "76.10" stays "76.10"
        assert list(match["paper_beta"]) == [ref["beta"]] and list(match["paper_note"]) == [ref["note"]]
        assert f"| {ref['value']}" in text
    cell = out[(out["our_method"] == "lorm") & (out["dataset"] == "cifar100")].iloc[0]
    assert cell["ours_status"] == "ok" and cell["n_seeds"] == "3" and cell["seeds"] == "0 1 2"
    assert cell["row"] == "LoRM (lorm)" and cell["paper_value"] == "86.95"
    assert float(cell["ours_faa_weighted_mean"]) == pytest.approx(statistics.mean([85.0, 86.0, 87.5]))
    assert float(cell["ours_faa_task_mean_mean"]) == pytest.approx(statistics.mean([84.0, 85.0, 86.5]))
    missing = out[(out["paper_method"] == "EWC") & (out["dataset"] == "cifar100")].iloc[0]
    assert missing["ours_status"] == "not run" and missing["ours_faa_weighted_mean"] == ""


def test_paper_table_several_experiments_per_cell_and_seed_counts(tmp_path):
    from lorm.reporting.paper import paper_comparison, load_paper_table, to_markdown
    from lorm.reporting import load_runs

    paths = [_paper_run(tmp_path, "lorm", s, "eurosat", 0.5, 80.0 + s, experiment="eurosat-intended")
             for s in (0, 1, 2)]
    paths.append(_paper_run(tmp_path, "lorm", 0, "eurosat", 0.5, 70.0, experiment="eurosat-official"))
    text = to_markdown(paper_comparison(load_runs(paths), load_paper_table(str(PAPER_CSV))))
    header, rows = _md_rows(text, "0.5")
    i = header.index("EuroSAT ours (eurosat-intended)")
    assert header[i + 1] == "EuroSAT ours (eurosat-official)" and header[i + 2] == "EuroSAT paper"
    lorm = rows["LoRM (`lorm`)"]
    assert lorm[i - 1: i + 2] == ["81.00 ± 1.00", "70.00 (n=1)", "84.23†"]


def test_paper_table_errors_are_one_line(tmp_path, paper_runs):
    from lorm.reporting.paper import main, write_paper_tables

    broken = json.loads(open(paper_runs[0]).read())
    del broken["config"]["dataset"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    with pytest.raises(MetricsError, match="config.dataset.name") as info:
        write_paper_tables([str(bad)], str(PAPER_CSV), str(tmp_path / "x.csv"), str(tmp_path / "x.md"))
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    other = tmp_path / "other.csv"
    other.write_text("method,value\nLoRM,1\n")
    with pytest.raises(MetricsError, match="expected the header method,dataset,beta,metric,value,note"):
        write_paper_tables(paper_runs, str(other), str(tmp_path / "x.csv"), str(tmp_path / "x.md"))
    assert main(["--runs", *paper_runs, "--paper", str(PAPER_CSV), "--csv", str(tmp_path / "c.csv"),
                 "--md", str(tmp_path / "m.md")]) == 0
    assert main(["--runs", str(bad), "--paper", str(PAPER_CSV), "--csv", str(tmp_path / "c.csv"),
                 "--md", str(tmp_path / "m.md")]) == 2


def test_paper_reference_is_a_verbatim_copy():
    shared = REPO.parent / "shared" / "reference" / "paper-table-lorm.csv"
    text = PAPER_CSV.read_text()
    assert text.splitlines()[0] == "method,dataset,beta,metric,value,note"
    assert "LoRM,cifar100,0.5,FAA,86.95," in text
    if shared.is_file():
        assert shared.read_text() == text
