# The fold files the aggregation reads: each fold job's metrics.json and, beside it, its confusion.csv
# (the pooled values of the tables, the confusion figures) and history.csv (the training curves).
FOLD_METRICS = train_metrics()
FOLD_CONFUSIONS = [str(Path(m).with_name("confusion.csv")) for m in FOLD_METRICS]
FOLD_HISTORIES = [str(Path(m).with_name("history.csv")) for m in FOLD_METRICS]


rule build_tables:
    input:
        metrics=FOLD_METRICS,
        confusions=FOLD_CONFUSIONS,
    output:
        table1_csv=report(
            "results/tables/table1.csv",
            caption="../report/table1.rst",
            category="Table 1",
            subcategory="Tables",
            labels={"content": "long-form CSV, one row per cell"},
        ),
        table1_md=report(
            "results/tables/table1.md",
            caption="../report/table1.rst",
            category="Table 1",
            subcategory="Tables",
            labels={"content": "the paper's grid, Markdown"},
        ),
        table1_tex=report(
            "results/tables/table1.tex",
            caption="../report/table1.rst",
            category="Table 1",
            subcategory="Tables",
            labels={"content": "the paper's grid, LaTeX tabular"},
        ),
        table2_csv=report(
            "results/tables/table2.csv",
            caption="../report/table2.rst",
            category="Table 2",
            subcategory="Tables",
            labels={"content": "long-form CSV, one row per cell"},
        ),
        table2_md=report(
            "results/tables/table2.md",
            caption="../report/table2.rst",
            category="Table 2",
            subcategory="Tables",
            labels={"content": "the paper's grid, Markdown"},
        ),
        table2_tex=report(
            "results/tables/table2.tex",
            caption="../report/table2.rst",
            category="Table 2",
            subcategory="Tables",
            labels={"content": "the paper's grid, LaTeX tabular"},
        ),
    log:
        "logs/build_tables/build_tables.log",
    benchmark:
        "benchmarks/build_tables/build_tables.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        folds=len(FOLDS),
    shell:
        "python -m avemotion.tables --metrics {input.metrics} --folds {params.folds}"
        " --out-dir results/tables > {log} 2>&1"


rule draw_figures:
    input:
        metrics=FOLD_METRICS,
        confusions=FOLD_CONFUSIONS,
        histories=FOLD_HISTORIES,
        table1="results/tables/table1.csv",
        table2="results/tables/table2.csv",
    output:
        table1=report(
            "results/figures/table1_heatmap.png",
            caption="../report/table1_heatmap.rst",
            category="Table 1",
            subcategory="Tables",
            labels={"content": "heat maps: ours, the paper's, the difference"},
        ),
        table2=report(
            "results/figures/table2_grid.png",
            caption="../report/table2_grid.rst",
            category="Table 2",
            subcategory="Tables",
            labels={"content": "grids: ours, the paper's, the difference"},
        ),
        table1_intervals=report(
            "results/figures/table1_intervals.png",
            caption="../report/intervals.rst",
            category="Table 1",
            subcategory="Tables",
            labels={"content": "every cell's 95 % interval beside the paper's value"},
        ),
        table2_intervals=report(
            "results/figures/table2_intervals.png",
            caption="../report/intervals.rst",
            category="Table 2",
            subcategory="Tables",
            labels={"content": "every cell's 95 % interval beside the paper's value"},
        ),
        confusion=report(
            directory("results/figures/confusion"),
            patterns=["table{number,[12]}_{configuration}.png"],
            caption="../report/confusion.rst",
            category="Table {number}",
            subcategory="Confusion matrices",
            labels={"configuration": "{configuration}"},
        ),
        curves=report(
            directory("results/figures/curves"),
            patterns=["table{number,[12]}_{configuration}.png"],
            caption="../report/curves.rst",
            category="Table {number}",
            subcategory="Training curves",
            labels={"configuration": "{configuration}"},
        ),
    log:
        "logs/draw_figures/draw_figures.log",
    benchmark:
        "benchmarks/draw_figures/draw_figures.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        folds=len(FOLDS),
    shell:
        "python -m avemotion.figures --metrics {input.metrics}"
        " --table1 {input.table1} --table2 {input.table2}"
        " --out-dir results/figures > {log} 2>&1"


# One MLflow parent run per table configuration, its fold runs nested under it, the table's numbers on it.
rule log_parent_runs:
    input:
        table1="results/tables/table1.csv",
        table2="results/tables/table2.csv",
    output:
        "results/mlflow/parents.json",
    log:
        "logs/log_parent_runs/log_parent_runs.log",
    benchmark:
        "benchmarks/log_parent_runs/log_parent_runs.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        uri=JOB_MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
    shell:
        "python -m avemotion.runs parents --uri {params.uri:q} --prefix {params.prefix}"
        " --table1 {input.table1} --table2 {input.table2} --out {output} > {log} 2>&1"


# Every table, figure and the MLflow parents: the final targets of the aggregation (rule all lists them).
AGGREGATE_OUTPUTS = [
    str(path)
    for path in (
        *rules.build_tables.output,
        *rules.draw_figures.output,
        *rules.log_parent_runs.output,
    )
]
