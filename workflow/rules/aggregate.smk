rule build_tables:
    input:
        train_metrics(),
    output:
        table1_csv=report(
            "results/tables/table1.csv",
            caption="../report/table1.rst",
            category="Table 1",
        ),
        table1_md=report(
            "results/tables/table1.md",
            caption="../report/table1.rst",
            category="Table 1",
        ),
        table2_csv=report(
            "results/tables/table2.csv",
            caption="../report/table2.rst",
            category="Table 2",
        ),
        table2_md=report(
            "results/tables/table2.md",
            caption="../report/table2.rst",
            category="Table 2",
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
        "python -m avemotion.tables --metrics {input} --folds {params.folds}"
        " --out-dir results/tables > {log} 2>&1"
