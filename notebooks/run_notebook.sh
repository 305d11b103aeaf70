#!/usr/bin/env bash
# Executes notebooks/fig2.ipynb headless (nbclient) and fails if any cell errors.
#
#   bash notebooks/run_notebook.sh
#   ABBA_RESULTS=/path/to/results.csv ABBA_NB_OUT=/tmp/figs bash notebooks/run_notebook.sh
#
# Environment:
#   ABBA_RESULTS   CSV to read (default: <repo>/results/fig2/results.csv)
#   ABBA_NB_OUT    folder for the PNG figures and fig2_table.csv (default: /tmp/abba-notebook-out)
#   ABBA_NB_VENV   virtual environment to create/use (default: /tmp/abba-nb-venv)
#   ABBA_NB_TIMEOUT  per-cell timeout in seconds (default: 600)
# The committed notebook is never modified: the executed copy goes to a fresh folder under /tmp.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
NB="$HERE/fig2.ipynb"
VENV="${ABBA_NB_VENV:-/tmp/abba-nb-venv}"
export ABBA_NB_OUT="${ABBA_NB_OUT:-/tmp/abba-notebook-out}"
TIMEOUT="${ABBA_NB_TIMEOUT:-600}"

cd "$ROOT"
exec </dev/null

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV" >&2
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import pandas, matplotlib, nbclient, nbformat, ipykernel' >/dev/null 2>&1; then
    echo "installing pandas matplotlib nbclient nbformat ipykernel into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check --no-input \
        pandas matplotlib nbclient nbformat ipykernel
fi

# A kernel spec named python3 inside the venv, pointing at the venv's python; JUPYTER_PATH puts it ahead of any
# user-level or system python3 spec, so the kernel always runs with this venv's packages.
if [ ! -f "$VENV/share/jupyter/kernels/python3/kernel.json" ]; then
    "$PY" -m ipykernel install --prefix "$VENV" --name python3 --display-name "Python 3 (abba-nb)" >/dev/null
fi
export JUPYTER_PATH="$VENV/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
export JUPYTER_PLATFORM_DIRS=1
export PYDEVD_DISABLE_FILE_VALIDATION=1
# Keep matplotlib's and IPython's caches writable even where HOME is not (CI).
export MPLCONFIGDIR="${MPLCONFIGDIR:-$VENV/mplconfig}"
export IPYTHONDIR="${IPYTHONDIR:-$VENV/ipython}"
mkdir -p "$ABBA_NB_OUT" "$MPLCONFIGDIR" "$IPYTHONDIR"

RUN_DIR="$(mktemp -d /tmp/abba-nb-run.XXXXXX)"
EXECUTED="$RUN_DIR/fig2.executed.ipynb"

"$PY" - "$NB" "$EXECUTED" "$HERE" "$ABBA_NB_OUT" "$TIMEOUT" <<'PYEOF'
import re, sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

src, dst, cwd, out_dir, timeout = sys.argv[1:6]
nb = nbformat.read(src, as_version=4)
client = NotebookClient(nb, timeout=int(timeout), kernel_name="python3",
                        resources={"metadata": {"path": cwd}})
start = time.time() - 1.0
failed = None
try:
    client.execute()
except CellExecutionError as e:
    failed = str(e)
except Exception as e:  # kernel death, timeout
    failed = f"{type(e).__name__}: {e}"
finally:
    nbformat.write(nb, dst)

errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
if failed or errors:
    msg = failed or "\n".join(f"{o.ename}: {o.evalue}" for o in errors)
    print(re.sub(r"\x1b\[[0-9;]*m", "", msg), file=sys.stderr)
    print(f"notebook: FAILED (executed copy in {dst})", file=sys.stderr)
    sys.exit(1)

figs = [p for p in Path(out_dir).glob("*.png") if p.stat().st_mtime >= start]
if not figs:
    print(f"notebook: FAILED (no figure written to {out_dir}; executed copy in {dst})", file=sys.stderr)
    sys.exit(1)
print(f"executed copy: {dst}", file=sys.stderr)
print(f"notebook: ok ({len(figs)} figures in {out_dir})")
PYEOF
