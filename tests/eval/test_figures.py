import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.eval import figures
from llmrec.eval.figures import (
    FigureSpecError,
    MarkerError,
    MissingResultsError,
    MissingRowError,
    format_value,
    load_specs,
    render_block,
    resolve_path,
)

REPO = Path(__file__).resolve().parents[2]

RESULTS = {
    "dataset": "movielens-small",
    "protocol": "leave-last-out",
    "k": 10,
    "results": [
        {
            "model": "popular",
            "metrics": {"ndcg@10": 0.019, "hr@10": 0.041, "gini@10": None},
            "fit_s": 0.001,
            "config": {},
        },
        {
            "model": "ease",
            "metrics": {"ndcg@10": 0.0411, "hr@10": 0.0852, "gini@10": 0.973},
            "ci95": {"ndcg@10": [0.035, 0.047]},
            "fit_s": 6.2,
            "config": {"l2_reg": 50.0},
            "peak_rss_mb": 1799.4,
        },
        {
            "model": "sasrec",
            "metrics": {"ndcg@10": 0.0493, "hr@10": 0.0934},
            "ci95": {"ndcg@10": [0.042, 0.057]},
            "metrics_sd": {"ndcg@10": 0.005},
            "seeds": [0, 1, 2],
            "per_seed": [{"ndcg@10": 0.045}, {"ndcg@10": 0.049}, {"ndcg@10": 0.055}],
            "fit_s": 71.0,
            "config": {"d": 64},
        },
    ],
    "comparisons": [
        {"a": "sasrec", "b": "ease", "metric": "ndcg@10", "diff": 0.0082, "ci95": [0.001, 0.015], "p_value": 0.02},
        {"a": "popular", "b": "ease", "metric": "ndcg@10", "diff": -0.0221, "ci95": [-0.03, -0.014], "p_value": 0.0},
        {"a": "sasrec", "b": "ease", "metric": "hr@10", "diff": 0.0082, "ci95": [-0.004, 0.02], "p_value": 0.21},
        {"a": "sasrec", "b": "ease", "metric": "gini@10", "diff": 0.01, "ci95": [0.002, 0.02], "p_value": 0.0004},
    ],
    "provenance": {"git_commit": "abc1234", "command": "python benchmarks/baselines.py --out results/b.json"},
}


def _setup(tmp_path: Path, toml: str, data: object = RESULTS, name: str = "b.json") -> Path:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    if data is not None:
        (results / name).write_text(json.dumps(data), encoding="utf-8")
    (results / "tables.toml").write_text(toml, encoding="utf-8")
    return tmp_path


def _render(tmp_path: Path, toml: str, data: object = RESULTS) -> str:
    root = _setup(tmp_path, toml, data)
    (spec,) = load_specs(root / "results" / "tables.toml").values()
    return render_block(spec, root / "results")


TABLE = """
[blocks.t]
source = "b.json"
command = "python benchmarks/baselines.py --out results/b.json"

[[blocks.t.row]]
model = "ease"
label = "ease (best baseline)"

[[blocks.t.row]]
model = "sasrec"
bold = ["model", "NDCG@10"]

[[blocks.t.row]]
model = "popular"

[[blocks.t.column]]
header = "NDCG@10"
path = "metrics.ndcg@10"
format = ".4f"
ci = true

[[blocks.t.column]]
header = "Gini@10"
path = "metrics.gini@10"
format = ".3f"
align = "right"

[[blocks.t.column]]
header = "peak MB"
path = "peak_rss_mb"
format = ",.0f"

[[blocks.t.column]]
header = "chosen config"
path = "config"
"""


def test_table_intervals_seeds_missing_labels_and_bold(tmp_path: Path) -> None:
    assert _render(tmp_path, TABLE) == (
        "\n"
        "| model | NDCG@10 | Gini@10 | peak MB | chosen config |\n"
        "|---|---|---:|---|---|\n"
        "| ease (best baseline) | 0.0411 [0.0350, 0.0470] | 0.973 | 1,799 | {'l2_reg': 50.0} |\n"
        "| **sasrec** | **0.0493 ± 0.0050 [0.0420, 0.0570]** | - | - | {'d': 64} |\n"
        "| popular | 0.0190 | - | - | - |\n"
    )


def test_sd_computed_from_per_seed_when_not_recorded(tmp_path: Path) -> None:
    data = json.loads(json.dumps(RESULTS))
    sasrec = data["results"][2]
    del sasrec["metrics_sd"], sasrec["ci95"]
    toml = """
[blocks.t]
source = "b.json"
[[blocks.t.row]]
model = "sasrec"
[[blocks.t.column]]
header = "NDCG@10"
path = "metrics.ndcg@10"
format = ".4f"
ci = true
"""
    # sample sd of 0.045, 0.049, 0.055 is 0.00503...
    assert "| sasrec | 0.0493 ± 0.0050 |" in _render(tmp_path, toml, data)


def test_all_rows_in_file_order_and_caption_from_provenance(tmp_path: Path) -> None:
    toml = """
[blocks.t]
source = "b.json"
command = "not used: the JSON records its own command"
caption = true
label_header = "name"
[[blocks.t.column]]
header = "fit s"
path = "fit_s"
format = ".2f"
"""
    out = _render(tmp_path, toml)
    assert out.split("\n")[3:6] == ["| popular | 0.00 |", "| ease | 6.20 |", "| sasrec | 71.00 |"]
    assert out.endswith(
        "\n\nSource: `results/b.json`, written by `python benchmarks/baselines.py --out results/b.json`.\n"
    )
    assert out.startswith("\n| name | fit s |\n")


def test_caption_falls_back_to_spec_command_and_custom_template(tmp_path: Path) -> None:
    data = {k: v for k, v in RESULTS.items() if k != "provenance"}
    toml = """
[blocks.t]
source = "b.json"
command = "python bench.py --out results/b.json"
caption = "{dataset}, {protocol}, k={k}: `{command}` -> `{source}`"
[[blocks.t.column]]
path = "fit_s"
"""
    assert _render(tmp_path, toml, data).endswith(
        "movielens-small, leave-last-out, k=10: `python bench.py --out results/b.json` -> `results/b.json`\n"
    )
    bad = toml.replace("k={k}", "{nonexistent}")
    with pytest.raises(FigureSpecError, match="nonexistent"):
        _render(tmp_path, bad, data)


def test_arbitrary_json_rows_from_a_dotted_path(tmp_path: Path) -> None:
    data = {
        "bench": {
            "variants": [
                {"name": "torch", "texts_per_s": 234.4, "cos": {"mean": 1.0, "min": 1.0}},
                {"name": "onnx int8", "texts_per_s": 342.0, "cos": {"mean": 0.99961, "min": 0.99921}},
            ]
        },
        "by.dotted key": {"x": {"p@0.5": 3}},
    }
    toml = """
[blocks.enc]
source = "b.json"
rows = "bench.variants"
key = "name"
label_header = "encoder"
[[blocks.enc.row]]
match = "onnx int8"
label = "ONNX int8"
bold = true
[[blocks.enc.row]]
match = "torch"
[[blocks.enc.column]]
header = "texts/s"
path = "texts_per_s"
format = ",.0f"
align = "right"
[[blocks.enc.column]]
header = "cosine (mean / min)"
path = ["cos.mean", "cos.min"]
format = ".4f"
"""
    assert _render(tmp_path, toml, data) == (
        "\n| encoder | texts/s | cosine (mean / min) |\n|---|---:|---|\n"
        "| **ONNX int8** | **342** | **0.9996 / 0.9992** |\n"
        "| torch | 234 | 1.0000 / 1.0000 |\n"
    )
    assert resolve_path(data, "by.dotted key.x.p@0.5") == 3
    assert resolve_path(data, "bench.variants.1.cos.min") == 0.99921
    with pytest.raises(KeyError):
        resolve_path(data, "bench.variants.7")


def test_rows_from_an_object_keyed_by_name(tmp_path: Path) -> None:
    data = {"scenarios": {"recs": {"p95_ms": 34.81}, "chat": {"p95_ms": None}}}
    toml = """
[blocks.api]
source = "b.json"
rows = "scenarios"
label_header = "request"
[[blocks.api.column]]
header = "p95 ms"
path = "p95_ms"
format = ".1f"
"""
    assert _render(tmp_path, toml, data).split("\n")[3:5] == ["| recs | 34.8 |", "| chat | - |"]


def test_format_value_missing_and_plain() -> None:
    assert format_value(None) == "-"
    assert format_value(float("nan"), ".4f") == "-"
    assert format_value({}) == "-"
    assert format_value([]) == "-"
    assert format_value(1234.5, ",.0f") == "1,234"
    assert format_value(True, ".2f") == "True"
    assert format_value("a|b") == "a\\|b"
    assert format_value(3) == "3"


def test_comparisons_verdicts(tmp_path: Path) -> None:
    toml = """
[blocks.cmp]
kind = "comparisons"
source = "b.json"
metric_labels = { "ndcg@10" = "NDCG@10" }
"""
    assert _render(tmp_path, toml) == (
        "\n| comparison | metric | diff | 95% interval | p | verdict |\n|---|---|---|---|---|---|\n"
        "| sasrec vs ease | NDCG@10 | +0.0082 | [+0.0010, +0.0150] | 0.020 | better |\n"
        "| popular vs ease | NDCG@10 | -0.0221 | [-0.0300, -0.0140] | 0.000 | worse |\n"
        "| sasrec vs ease | hr@10 | +0.0082 | [-0.0040, +0.0200] | 0.210 | within noise |\n"
        # Gini: lower is better, so a significantly higher Gini is worse; p below the format shows as a bound.
        "| sasrec vs ease | gini@10 | +0.0100 | [+0.0020, +0.0200] | < 0.001 | worse |\n"
    )


def test_comparisons_row_selection(tmp_path: Path) -> None:
    toml = """
[blocks.cmp]
kind = "comparisons"
source = "b.json"
format = ".3f"
[[blocks.cmp.row]]
a = "sasrec"
metric = "hr@10"
label = "SASRec vs EASE"
"""
    out = _render(tmp_path, toml)
    assert out.split("\n")[3:] == ["| SASRec vs EASE | hr@10 | 0.008 | [-0.004, 0.020] | 0.210 | within noise |", ""]
    with pytest.raises(MissingRowError, match="bpr"):
        _render(tmp_path, toml.replace('a = "sasrec"', 'a = "bpr"'))


def test_missing_json_names_file_and_command(tmp_path: Path) -> None:
    root = _setup(tmp_path, TABLE, data=None)
    (spec,) = load_specs(root / "results" / "tables.toml").values()
    with pytest.raises(MissingResultsError) as info:
        render_block(spec, root / "results")
    assert info.value.path == root / "results" / "b.json"
    assert "b.json" in str(info.value)
    assert "`python benchmarks/baselines.py --out results/b.json`" in str(info.value)
    no_command = TABLE.replace('command = "python benchmarks/baselines.py --out results/b.json"\n', "")
    root = _setup(tmp_path, no_command, data=None)
    (spec,) = load_specs(root / "results" / "tables.toml").values()
    with pytest.raises(MissingResultsError, match="no command is recorded"):
        render_block(spec, root / "results")


def test_missing_row_and_unknown_column_path_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(MissingRowError, match="'bpr'"):
        _render(tmp_path, TABLE.replace('model = "popular"', 'model = "bpr"'))
    with pytest.raises(FigureSpecError, match="ndgc"):
        _render(tmp_path, TABLE.replace("metrics.ndcg@10", "metrics.ndgc@10"))


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ('[blocks.t]\nsource = "b.json"\ncolums = 1\n', "unknown key"),
        ('[blocks.t]\n[[blocks.t.column]]\npath = "x"\n', "needs source"),
        ('[blocks.t]\nsource = "b.json"\n', "at least one"),
        ('[blocks.t]\nsource = "b.json"\n[[blocks.t.column]]\npath = "x"\nformat = ".4q"\n', "format"),
        ('[blocks.t]\nsource = "b.json"\n[[blocks.t.column]]\npath = "x"\nalign = "up"\n', "align"),
        ('[blocks.t]\nsource = "b.json"\n[[blocks.t.row]]\nlabel = "x"\n[[blocks.t.column]]\npath = "x"\n', "one of"),
        ('[blocks.t]\nsource = "b.json"\nkind = "plot"\n', "kind"),
        ("[other]\n", "top level"),
        ('[blocks.t]\nsource = "b.json"\ncolumns_from = "u"\n[blocks.u]\nsource = "b.json"\n', "above this one"),
        (
            '[blocks.u]\nsource = "b.json"\n[[blocks.u.column]]\npath = "x"\n'
            '[blocks.t]\nsource = "b.json"\ncolumns_from = "u"\n[[blocks.t.column]]\npath = "y"\n',
            "not both",
        ),
        ("[blocks.t\n", "not valid TOML"),
    ],
)
def test_spec_errors(tmp_path: Path, toml: str, match: str) -> None:
    spec_file = tmp_path / "tables.toml"
    spec_file.write_text(toml, encoding="utf-8")
    with pytest.raises(FigureSpecError, match=match):
        load_specs(spec_file)


def test_a_block_takes_the_columns_of_one_above(tmp_path: Path) -> None:
    spec_file = tmp_path / "tables.toml"
    spec_file.write_text(
        '[blocks.u]\nsource = "a.json"\n[[blocks.u.column]]\nheader = "NDCG"\npath = "metrics.ndcg@10"\nci = true\n'
        '[blocks.t]\nsource = "b.json"\ncolumns_from = "u"\ncaption = true\n',
        encoding="utf-8",
    )
    specs = load_specs(spec_file)
    assert specs["t"].column == specs["u"].column and specs["t"].column[0].ci
    assert (specs["t"].source, specs["t"].caption) == ("b.json", True)  # the block's own keys stay its own


README_TEXT = """# demo

Some prose.

<!-- figures:t -->
| model | NDCG@10 |
|---|---|
| ease | 0.0400 |
<!-- /figures:t -->

More prose.
"""


def test_check_write_round_trip_and_cli(tmp_path: Path) -> None:
    toml = """
[blocks.t]
source = "b.json"
[[blocks.t.row]]
model = "ease"
[[blocks.t.column]]
header = "NDCG@10"
path = "metrics.ndcg@10"
format = ".4f"
"""
    root = _setup(tmp_path, toml)
    (root / "README.md").write_text(README_TEXT, encoding="utf-8")
    assert figures.check(root) == ["t"]  # hand-typed 0.0400 differs from the JSON's 0.0411
    assert figures.main(["--check", "--root", str(root)]) == 1
    assert figures.main(["--write", "--root", str(root)]) == 0
    text = (root / "README.md").read_text(encoding="utf-8")
    assert text == README_TEXT.replace(
        "<!-- figures:t -->\n| model | NDCG@10 |\n|---|---|\n| ease | 0.0400 |\n",
        "<!-- figures:t -->\n\n| model | NDCG@10 |\n|---|---|\n| ease | 0.0411 |\n\n",
    )
    assert figures.check(root) == []
    assert figures.write(root) == []
    proc = subprocess.run(
        [sys.executable, "-m", "llmrec.eval.figures", "--check", "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])},
    )
    assert proc.returncode == 0, proc.stderr
    (root / "results" / "b.json").unlink()
    assert figures.main(["--root", str(root)]) == 2


@pytest.mark.parametrize(
    ("readme", "match"),
    [
        ("<!-- figures:t -->\n", "never closed"),
        ("<!-- /figures:t -->\n", "without its start"),
        ("<!-- figures:t -->\n<!-- figures:u -->\n<!-- /figures:u -->\n<!-- /figures:t -->\n", "inside"),
        ("<!-- figures:t -->\n<!-- /figures:t -->\n<!-- figures:t -->\n<!-- /figures:t -->\n", "twice"),
        ("<!--figures:t-->\n<!-- /figures:t -->\n", "malformed"),
        ("Prose that names `<!-- figures:x -->` inline is fine.\n", "have no markers"),
        ("<!-- figures:t -->\n<!-- /figures:t -->\n<!-- figures:u -->\n<!-- /figures:u -->\n", r"\['u'\] have no"),
        ("no markers\n", "have no markers"),
    ],
)
def test_marker_errors(tmp_path: Path, readme: str, match: str) -> None:
    root = _setup(tmp_path, '[blocks.t]\nsource = "b.json"\n[[blocks.t.column]]\npath = "fit_s"\n')
    (root / "README.md").write_text(readme, encoding="utf-8")
    with pytest.raises(MarkerError, match=match):
        figures.check(root)


def test_repo_readme_figures_match_results_json() -> None:
    """Every marked README block is exactly what results/*.json gives; a missing JSON fails here, never skips."""
    specs = load_specs(REPO / "results" / "tables.toml")
    for spec in specs.values():
        path = REPO / "results" / spec.source
        assert path.is_file(), f"block {spec.name!r}: {path} is missing; produce it with `{spec.command}`"
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rendered = figures.render_blocks(specs, REPO / "results")
    assert figures.regenerate(text, rendered) == text, (
        "README figures differ from results/*.json: run `make figures` and commit README.md"
    )
