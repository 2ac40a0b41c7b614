from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_render_imports_neither_torch_nor_flask():
    code = "import sys, service.render; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'flask'}))"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[2])

    assert result.stdout.strip() == "[]"
