"""The runner package's import rules (.importlinter): no import cycles. On failure, lint-imports'
report says what breaks them."""

import pathlib
import subprocess
import sys

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1]
# A process of its own: lint-imports reconfigures logging, which would silence the other tests' loggers.
LINT_IMPORTS = pathlib.Path(sys.executable).parent / "lint-imports"


def test_the_import_contracts_are_kept():
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", ".importlinter"], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
