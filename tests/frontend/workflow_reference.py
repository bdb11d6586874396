"""What the pack's own tests make of every shipped workflow, for check.py to compare the frontend with.

Loads the node classes in-process through tests/comfy/comfy_harness.py and converts each workflow with
tests/comfy/ui_to_api.py, plainly and with the tests' swaps (TINY/FAST from test_workflows.py); writes the input
images the workflows load, as test_workflows.py does.

usage: workflow_reference.py <comfyui root> <scratch dir> <input dir> <out json>
Writes {"tiny": TINY, "fast": FAST, "workflows": {name: {"plain": prompt, "swapped": prompt} | {"error": str}}}.
"""

import json
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "comfy"))

from comfy_harness import ComfyUI  # noqa: E402
from test_workflows import FAST, TINY, write_input_images  # noqa: E402
from ui_to_api import ui_to_api  # noqa: E402


def main(root: Path, scratch: Path, input_dir: Path, out: Path) -> None:
    comfy = ComfyUI(root, scratch)
    result = {"tiny": TINY, "fast": FAST, "workflows": {}}
    for path in sorted((REPO / "workflows").glob("*.json")):
        workflow = json.loads(path.read_text())
        write_input_images(SimpleNamespace(input_dir=input_dir), workflow)
        try:
            result["workflows"][path.name] = {
                "plain": ui_to_api(workflow, comfy.node_class),
                "swapped": ui_to_api(workflow, comfy.node_class, replace=TINY, overrides=FAST),
            }
        except Exception as error:  # reported by check.py
            result["workflows"][path.name] = {"error": "".join(traceback.format_exception_only(error)).strip()}
    out.write_text(json.dumps(result, indent=1))
    print(f"workflow_reference: {len(result['workflows'])} workflows converted -> {out}")


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:5]))
