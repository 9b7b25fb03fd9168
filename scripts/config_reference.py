"""Write the config reference, docs/configuration.md, from the schema's field descriptions.

    python scripts/config_reference.py
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metarl.experiment.config_reference import render

if __name__ == "__main__":
    (ROOT / "docs" / "configuration.md").write_text(render(), encoding="utf-8")
    print("wrote docs/configuration.md")
