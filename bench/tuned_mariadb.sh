#!/usr/bin/env bash
# A private MariaDB server with the warehouse settings of deploy/mariadb/recsys-warehouse.cnf, for
# benchmarks: the machine's shared server keeps its own settings (128 MB buffer pool here), and the
# benchmark measures the pipeline on the server a 10M+ event shop is told to run (README, Scaling out).
#
#   bench/tuned_mariadb.sh start    # datadir .work/bench/mariadb-tuned, 127.0.0.1:3307, root without password
#   RECSYS_MYSQL_PORT=3307 .venv/bin/python bench/feature_build.py --events 10000000
#   bench/tuned_mariadb.sh stop
#
# BUFFER_POOL overrides the file's innodb_buffer_pool_size (default: the file's 4G).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATADIR="${TUNED_DATADIR:-$ROOT/.work/bench/mariadb-tuned}"
PORT="${TUNED_PORT:-3307}"
SOCKET="$DATADIR/mysqld.sock"
CNF="$ROOT/deploy/mariadb/recsys-warehouse.cnf"

case "${1:-}" in
start)
    mkdir -p "$DATADIR"
    if [ ! -d "$DATADIR/mysql" ]; then
        mariadb-install-db --no-defaults --datadir="$DATADIR" --user="$(id -un)" \
            --auth-root-authentication-method=normal >"$DATADIR/install.log" 2>&1
    fi
    extra=()
    [ -n "${BUFFER_POOL:-}" ] && extra+=("--innodb-buffer-pool-size=$BUFFER_POOL")
    # --defaults-file: only the project's file is read, nothing of the machine's own server configuration
    mariadbd --defaults-file="$CNF" --datadir="$DATADIR" --port="$PORT" --bind-address=127.0.0.1 \
        --socket="$SOCKET" --pid-file="$DATADIR/mysqld.pid" --user="$(id -un)" --skip-log-bin \
        --log-error="$DATADIR/error.log" "${extra[@]}" &
    for _ in $(seq 60); do
        mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uroot -e "select 1" >/dev/null 2>&1 && break
        sleep 1
    done
    mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uroot -N -e \
        "select concat('tuned MariaDB on 127.0.0.1:$PORT, buffer pool ', @@innodb_buffer_pool_size div 1048576, ' MB')"
    ;;
stop)
    [ -f "$DATADIR/mysqld.pid" ] && kill "$(cat "$DATADIR/mysqld.pid")" && echo "stopped" || echo "not running"
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
