#!/usr/bin/env bash
# The filter + dedup + select(dsir) recipe on ../shared/corpus: local files, then input, OUT and work
# folder on a local S3-compatible server (moto on 127.0.0.1), then the same S3 run again (resumed).
# Needs moto[server] and boto3 (the dev extra). Usage: bash scripts/bench_s3.sh
set -u
W=$(mktemp -d); SH=${SHARED:-../shared}
PORT=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
python -c "
from moto.server import ThreadedMotoServer; import time
s = ThreadedMotoServer(ip_address='127.0.0.1', port=$PORT); s.start(); time.sleep(3600)" >/dev/null 2>&1 &
MOTO=$!; trap 'kill $MOTO; rm -rf "$W"' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
sleep 3
python - "$SH" <<'PY'
import boto3, glob, os, sys
s3 = boto3.client("s3"); s3.create_bucket(Bucket="bench-bkt")
for p in sorted(glob.glob(sys.argv[1] + "/corpus/parquet/*.parquet")):
    s3.upload_file(p, "bench-bkt", "in/" + os.path.basename(p))
s3.upload_file(sys.argv[1] + "/corpus/select/target_wiki.jsonl.zst", "bench-bkt", "target/wiki.jsonl.zst")
PY
mk() {
  printf 'input: %s\noutput: %s\nworkers: 2\nseed: 0\nstages:\n  - stage: filter\n  - stage: dedup\n  - stage: select\n    method: dsir\n    target: %s\n    k: 3000\n' \
    "$2" "$3" "$4" >"$W/$1.yaml"
  echo "$W/$1.yaml"
}
du -sh "$SH/corpus/parquet"
/usr/bin/time -f "local files: %e s wall, %M KB peak driver RSS" \
  dcurate run "$(mk l "$SH/corpus/parquet" "$W/out" "$SH/corpus/select/target_wiki.jsonl.zst")" 2>&1 | tail -1
/usr/bin/time -f "s3 input, OUT and work folder: %e s wall, %M KB peak driver RSS" \
  dcurate run "$(mk s s3://bench-bkt/in s3://bench-bkt/out s3://bench-bkt/target/wiki.jsonl.zst)" 2>&1 | tail -1
/usr/bin/time -f "s3 again (everything resumed): %e s wall, %M KB peak driver RSS" dcurate run "$W/s.yaml" 2>&1 | tail -1
python - <<'PY'
import boto3
s3 = boto3.client("s3"); n = b = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench-bkt", Prefix="out/"):
    for o in page.get("Contents", []):
        n, b = n + 1, b + o["Size"]
print(f"objects under out/ (OUT and its work folder): {n}, {b / 1e6:.1f} MB")
PY
