"""Write to RethinkDB directly with the driver, bypassing the bridge.

    python demo/write_direct.py [--url rethinkdb://admin@127.0.0.1:28015] [--stream demo.messages] [--count 1]

The changes show up in the demo page all the same: the worker follows the
table's changefeed, whoever writes to it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlOpFailedError

from changeflow_channels.names import parse_stream
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=os.environ.get("CHANGEFLOW_RETHINKDB", "rethinkdb://admin@127.0.0.1:28015")
    )
    parser.add_argument("--stream", default="demo.messages")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--message", default="written directly with the driver")
    args = parser.parse_args()
    database, table = parse_stream(args.stream)
    r = RethinkDB()
    with r.connect(**parse_rethinkdb_url(args.url).connect_kwargs()) as conn:
        for create in (r.db_create(database), r.db(database).table_create(table)):
            try:
                create.run(conn)
            except ReqlOpFailedError:
                pass  # it exists already
        r.db(database).table(table).wait().run(conn)
        for n in range(args.count):
            result = (
                r.db(database)
                .table(table)
                .insert({"message": args.message, "n": n, "at": r.now()})
                .run(conn)
            )
            sys.stdout.write(f"inserted {result['generated_keys'][0]} into {args.stream}\n")
            if args.count > 1:
                time.sleep(0.2)


if __name__ == "__main__":
    main()
