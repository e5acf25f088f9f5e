"""Regenerate railyard/proto/*_pb2*.py(i) from the .proto files.

Run from anywhere: `python scripts/gen_proto.py`. `--check` regenerates into
a temporary directory and exits 1 if the committed files differ (stale).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "railyard" / "proto"


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    # The mypy plugins are console scripts installed beside this interpreter.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(str(p.relative_to(ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = out_root / "railyard" / "proto"
    return sorted(p for p in generated.iterdir() if "_pb2" in p.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
        if args.check:
            stale = [
                f.name
                for f in files
                if not (PROTO_DIR / f.name).exists()
                or not filecmp.cmp(f, PROTO_DIR / f.name, shallow=False)
            ]
            if stale:
                print("stale generated code: " + ", ".join(stale), file=sys.stderr)
                print("run: python scripts/gen_proto.py", file=sys.stderr)
                return 1
            return 0
        for f in files:
            shutil.copyfile(f, PROTO_DIR / f.name)
    print(f"generated {len(files)} files in {PROTO_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
