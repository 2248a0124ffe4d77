# Reads back what a `parquet` sink wrote, independently of plexus: pyarrow for the
# files (from a local directory, or from S3 through pyarrow's own S3 client), DuckDB
# for counts and decimal sums. Prints one JSON document on stdout.
#
# argv[1]: a JSON file with
#   kind: "local" | "s3"; root (local) or endpoint, access_key, secret_key, bucket,
#   prefix (s3); sample: {topic: [offsets]} whose rows are returned whole; duckdb: bool.
import datetime
import decimal
import json
import os
import sys
import tempfile

import pyarrow.fs as pafs
import pyarrow.parquet as pq

spec = json.load(open(sys.argv[1]))
if spec["kind"] == "local":
    fs = pafs.LocalFileSystem()
    base = spec["root"].rstrip("/")
else:
    fs = pafs.S3FileSystem(
        access_key=spec["access_key"],
        secret_key=spec["secret_key"],
        endpoint_override=spec["endpoint"],
        scheme="http",
        region="us-east-1",
    )
    base = "/".join(p for p in [spec["bucket"], spec["prefix"].strip("/")] if p)

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def canon(v):
    """A value as the log's JSON writes it: decimals and timestamps as text."""
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            return "naive " + v.isoformat()
        v = v.astimezone(datetime.timezone.utc)
        frac = f"{v.microsecond // 1000:03d}" if v.microsecond % 1000 == 0 else f"{v.microsecond:06d}"
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"
    if isinstance(v, bytes):
        return v.hex()
    return v


selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
files = sorted(
    i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File and i.path.endswith(".parquet")
)
out = {}
for path in files:
    rel = path[len(base) :].lstrip("/")
    topic = rel.split("/")[0]
    t = out.setdefault(topic, {"rows": 0, "files": [], "offsets": [], "types": {}, "sample": {}, "paths": []})
    with fs.open_input_file(path) as f:
        table = pq.read_table(f)
    t["rows"] += table.num_rows
    t["files"].append(rel)
    types = {field.name: str(field.type) for field in table.schema}
    if t["types"] and t["types"] != types:
        t.setdefault("other_types", []).append([rel, types])
    t["types"] = types
    partitions = table.column("__partition").to_pylist()
    offsets = table.column("__offset").to_pylist()
    t["offsets"].extend([p, o] for p, o in zip(partitions, offsets))
    t["paths"].append(path)
    wanted = set(spec.get("sample", {}).get(topic, []))
    rows = [i for i, o in enumerate(offsets) if o in wanted]
    if rows:
        for row in table.take(rows).to_pylist():
            values = {k: canon(v) for k, v in row.items()}
            ts = row.get("__ts_ms")
            values["__ts_ms_epoch"] = None if ts is None else (ts - EPOCH) // datetime.timedelta(milliseconds=1)
            t["sample"][str(row["__offset"])] = values

result = {"topics": out}
if spec.get("duckdb"):
    import duckdb

    con = duckdb.connect()
    result["duckdb"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for topic, t in out.items():
            paths = t.pop("paths")
            if spec["kind"] != "local":
                # DuckDB reads S3 through an extension it would download: read copies.
                local = []
                for i, path in enumerate(paths):
                    copy = os.path.join(tmp, f"{topic}-{i}.parquet")
                    with fs.open_input_file(path) as src, open(copy, "wb") as dst:
                        dst.write(src.readall())
                    local.append(copy)
                paths = local
            files_sql = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
            source = f"read_parquet({files_sql})"
            d = {"count": con.execute(f"SELECT count(*) FROM {source}").fetchone()[0], "sums": {}, "types": {}}
            for name, kind in t["types"].items():
                if kind.startswith("decimal") or kind.startswith("timestamp"):
                    d["types"][name] = con.execute(f'SELECT typeof("{name}") FROM {source} LIMIT 1').fetchone()[0]
                if kind.startswith("decimal"):
                    d["sums"][name] = con.execute(f'SELECT sum("{name}")::VARCHAR FROM {source}').fetchone()[0]
            result["duckdb"][topic] = d
for t in out.values():
    t.pop("paths", None)
print(json.dumps(result))
