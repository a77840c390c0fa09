"""DuckDB and pyarrow next to weir on the same lake, in the same run.

Run after `cargo run --release -p weir-sinks --example lake_bench -- READINGS DIR`, with a
Python that has duckdb and pyarrow (tests/clients/lake-requirements.txt):

    python benches/lake_vs_duckdb.py DIR

Reads DIR/figures.json (weir's figures), runs the same three queries in DuckDB over the same
Parquet files (median of 5), encodes the same Arrow rows to Parquet with pyarrow (ZSTD level 3,
row groups of 262,144 rows, as weir writes them), and prints both with their ratios.
"""

import json
import statistics
import sys
import time

import duckdb
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

OUT_OF_RANGE = open(__file__.rsplit("/", 2)[0] + "/docs/queries/out-of-range-episodes.sql").read()


def timed(run, times=5):
    samples = []
    result = None
    for _ in range(times):
        started = time.perf_counter()
        result = run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), result


def main():
    base = sys.argv[1]
    weir = json.load(open(f"{base}/figures.json"))
    con = duckdb.connect()
    con.execute(
        "CREATE VIEW telemetry AS SELECT * FROM "
        f"read_parquet('{base}/lake/telemetry/**/*.parquet', hive_partitioning = true)"
    )
    queries = {
        "five_minute_averages_one_day": (
            "SELECT tenant, building, time_bucket(INTERVAL '5 minutes', event_time) AS five, "
            "avg(temperature) AS temperature FROM telemetry "
            f"WHERE event_date = DATE '{weir['day']}' GROUP BY 1, 2, 3"
        ),
        "count_by_building_and_day": (
            "SELECT building, event_date, count(*) AS readings FROM telemetry GROUP BY 1, 2"
        ),
        "out_of_range_episodes": OUT_OF_RANGE.rstrip().rstrip(";"),
    }
    print(f"{weir['readings']:,} readings; lake {weir['lake_bytes']:,} bytes "
          f"({weir['bytes_per_reading']:.1f} bytes per reading)")
    print(f"{'query':32} {'weir sql':>10} {'DuckDB':>10} {'weir/DuckDB':>12}  rows (weir, DuckDB)")
    out = {}
    for name, query in queries.items():
        seconds, rows = timed(lambda: con.execute(query).fetchall())
        ours = weir["weir_sql_seconds"][name]
        print(f"{name:32} {ours * 1000:>8.0f}ms {seconds * 1000:>8.0f}ms {ours / seconds:>12.2f}"
              f"  {weir['rows'][name]}, {len(rows)}")
        out[name] = {"weir_ms": ours * 1000, "duckdb_ms": seconds * 1000, "ratio": ours / seconds}

    table = pa.ipc.open_file(f"{base}/sample.arrow").read_all()
    seconds, _ = timed(lambda: pq.write_table(
        table, f"{base}/sample-pyarrow.parquet", compression="zstd", compression_level=3,
        row_group_size=262_144))
    pyarrow_rate = table.num_rows / seconds
    ours = weir["parquet_encode_rows_per_second"]
    print(f"Parquet encoding of {table.num_rows:,} rows: weir {ours:,.0f} rows/s, "
          f"pyarrow {pyarrow_rate:,.0f} rows/s, weir/pyarrow {ours / pyarrow_rate:.2f}")
    print(f"cold sink end to end (Avro decode, Arrow, Parquet, Delta commit): "
          f"{weir['sink_readings_per_second']:,.0f} readings/s")
    out["parquet_encode"] = {"weir_rows_per_second": ours, "pyarrow_rows_per_second": pyarrow_rate}
    json.dump(out, open(f"{base}/side-by-side.json", "w"), indent=2)


if __name__ == "__main__":
    main()
