"""Base's offload routes in their own process (a real uvicorn): ``python tests/_offload_server.py
BASE_DIR PORT [CERT KEY]``; the receiver is the one ``_offload.make_base`` builds on BASE_DIR."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _offload import make_base

from bodycam.base.offload_api import offload_app


def main() -> None:
    base_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    cert, key = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
    base = make_base(base_dir, reserve_mb=float(os.environ.get("BODYCAM_TEST_RESERVE_MB", "64")))
    uvicorn.run(offload_app(base.receiver), host="127.0.0.1", port=port, ssl_certfile=cert, ssl_keyfile=key,
                log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
