"""Reads weir's lake with the tools analysts use, and checks they answer what `weir sql` did.

Usage: lake_interop.py LAKE_DIR EXPECTED_JSON [--plain-parquet]

EXPECTED_JSON holds {"queries": [{"sql": ..., "rows": [[...], ...]}, ...], "rows_by_tenant":
{...}}: each query's rows (values in column order) as `weir sql` answered it over the
`telemetry` table. Checked here:

- DuckDB, over the Delta table as the `deltalake` package reads it (DuckDB's own delta
  extension cannot be downloaded in every environment), runs every query to the same rows;
- polars (`read_delta`) and pyarrow (`to_pyarrow_table`) count the same rows per tenant;
- with --plain-parquet (a vacuumed lake, where only live files remain): DuckDB over the bare
  Parquet files, Hive partitions and all, counts the same rows per tenant.

Exits 1 with every difference printed.
"""

import json
import math
import sys

import duckdb
import polars as pl
from deltalake import DeltaTable


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def normal(rows):
    """Rows as lists of values in column order, JSON-typed (dates as ISO text)."""
    out = []
    for row in rows:
        out.append([v.isoformat() if hasattr(v, "isoformat") else v for v in row])
    return out


def main():
    lake, expected_path = sys.argv[1], sys.argv[2]
    plain = "--plain-parquet" in sys.argv[3:]
    expected = json.load(open(expected_path))
    problems = []
    table_path = f"{lake}/telemetry"
    table = DeltaTable(table_path)

    con = duckdb.connect()
    con.register("telemetry", table.to_pyarrow_dataset())
    for query in expected["queries"]:
        got = normal(con.execute(query["sql"]).fetchall())
        want = query["rows"]
        if len(got) != len(want) or not all(
            len(g) == len(w) and all(same(x, y) for x, y in zip(g, w))
            for g, w in zip(got, want)
        ):
            problems.append(f"DuckDB: {query['sql']}\n  weir:   {want}\n  duckdb: {got}")

    by_tenant = expected["rows_by_tenant"]
    frame = pl.read_delta(table_path)
    polars_counts = {
        row["tenant"]: row["len"]
        for row in frame.group_by("tenant").len().iter_rows(named=True)
    }
    if polars_counts != by_tenant:
        problems.append(f"polars rows by tenant: {polars_counts}, weir: {by_tenant}")

    arrow_table = table.to_pyarrow_table()
    arrow_counts = {}
    for tenant in arrow_table.column("tenant").to_pylist():
        arrow_counts[tenant] = arrow_counts.get(tenant, 0) + 1
    if arrow_counts != by_tenant:
        problems.append(f"pyarrow rows by tenant: {arrow_counts}, weir: {by_tenant}")

    if plain:
        files = f"{table_path}/**/*.parquet"
        rows = con.execute(
            "SELECT tenant, count(*) FROM read_parquet(?, hive_partitioning = true) GROUP BY 1",
            [files],
        ).fetchall()
        parquet_counts = dict(rows)
        if parquet_counts != by_tenant:
            problems.append(f"plain Parquet rows by tenant: {parquet_counts}, weir: {by_tenant}")

    for problem in problems:
        print(problem)
    if problems:
        sys.exit(1)
    print(
        f"duckdb {duckdb.__version__}, polars {pl.__version__}: "
        f"{len(expected['queries'])} queries and {sum(by_tenant.values())} rows agree"
    )


if __name__ == "__main__":
    main()
