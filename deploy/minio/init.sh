#!/bin/sh
# MinIO's users for the pipeline, run once by docker-compose.yaml's minio-init service (image minio/mc).
# It alone holds the MinIO root key: it creates the private bucket, a policy for the pipeline (list,
# read, write and delete in that bucket, nothing else: no other bucket, no bucket or user admin) and a
# read-only policy (list and read that bucket: the models page and serving), and a user for each. The
# Airflow containers get those users' keys, never the root key. Idempotent: a rerun updates the
# policies and passwords.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${RECSYS_S3_BUCKET:?}"
: "${RECSYS_S3_ACCESS_KEY_ID:?}" "${RECSYS_S3_SECRET_ACCESS_KEY:?}"
: "${RECSYS_S3_READONLY_ACCESS_KEY_ID:?}" "${RECSYS_S3_READONLY_SECRET_ACCESS_KEY:?}"
HERE=$(dirname "$0")
WORK=$(mktemp -d)

mc alias set recsys "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "recsys/$RECSYS_S3_BUCKET"
mc anonymous set none "recsys/$RECSYS_S3_BUCKET"

grant() {  # grant POLICY_NAME TEMPLATE ACCESS_KEY SECRET_KEY
  sed "s/BUCKET/$RECSYS_S3_BUCKET/g" "$HERE/$2" > "$WORK/$1.json"
  mc admin policy create recsys "$1" "$WORK/$1.json"
  mc admin user add recsys "$3" "$4" >/dev/null
  # attaching a policy the user has already is refused: that is fine
  mc admin policy attach recsys "$1" --user "$3" 2>/dev/null || mc admin user info recsys "$3" | grep -q "$1"
  echo "user $3: policy $1 on bucket $RECSYS_S3_BUCKET"
}
grant recsys-pipeline pipeline-policy.json "$RECSYS_S3_ACCESS_KEY_ID" "$RECSYS_S3_SECRET_ACCESS_KEY"
grant recsys-readonly readonly-policy.json "$RECSYS_S3_READONLY_ACCESS_KEY_ID" "$RECSYS_S3_READONLY_SECRET_ACCESS_KEY"
rm -rf "$WORK"
