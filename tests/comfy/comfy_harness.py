"""Runs API-format prompts through a real ComfyUI, in this process, with the pack loaded by ComfyUI's own loader.

COMFYUI_PATH points at an exported ComfyUI: upstream (top-level ``nodes.py``/``execution.py``) or the pip-installable
fork (everything under ``comfy``/``comfy.cmd``, installed in the test environment). Both load the pack from a custom_nodes folder made for the session,
next to the test-only nodes in ``lsc_test_nodes`` (tiny models built under inference mode, capture of outputs).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import lsc_test_capture

REPO = Path(__file__).resolve().parents[2]
PACK_FOLDER = "comfyui-latent-space-control"


@dataclass
class Result:
    ok: bool
    captured: dict
    outputs: dict = field(default_factory=dict)
    error: str = ""
    messages: list = field(default_factory=list)


class _ServerStub:
    """What PromptExecutor needs of the web server; messages are kept for the tests to read."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class ComfyUI:
    """One ComfyUI per test session: ``run(prompt)`` validates and executes an API prompt."""

    def __init__(self, root: Path, work: Path):
        self.root = root
        custom_nodes = work / "custom_nodes"
        custom_nodes.mkdir(parents=True)
        (custom_nodes / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
        (custom_nodes / "lsc_test_nodes").symlink_to(Path(__file__).parent / "lsc_test_nodes", target_is_directory=True)
        self.input_dir, self.output_dir = work / "input", work / "output"
        for folder in (self.input_dir, self.output_dir, work / "temp"):
            folder.mkdir()
        self.fork = not (root / "execution.py").exists()
        sys.path.insert(0, str(root))
        argv, sys.argv = sys.argv, sys.argv[:1]  # the fork parses the process's argv (pytest's) as its own options
        try:
            from comfy.cli_args import args
        finally:
            sys.argv = argv
        args.cpu = True
        args.disable_api_nodes = True
        if self.fork:
            self._load_fork(args, custom_nodes, work)
        else:
            self._load_upstream(custom_nodes, work)

    def _load_upstream(self, custom_nodes: Path, work: Path):
        importlib.import_module("utils.extra_config")  # before `nodes`, which shadows the top-level utils package
        import folder_paths

        folder_paths.folder_names_and_paths["custom_nodes"] = ([str(custom_nodes)], set())
        folder_paths.models_dir = str(work / "models")  # folders the pack registers (direction files) go here
        folder_paths.set_output_directory(str(self.output_dir))
        folder_paths.set_temp_directory(str(work / "temp"))
        folder_paths.set_input_directory(str(self.input_dir))
        import execution
        import nodes

        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        self.execution, self.node_mappings, self.server_class = execution, nodes.NODE_CLASS_MAPPINGS, _ServerStub

    def _load_fork(self, args, custom_nodes: Path, work: Path):
        """The fork keeps everything under ``comfy``; its base directory sets custom_nodes, input, output and temp."""
        args.base_directory = str(work)
        from comfy.cmd import execution, folder_paths
        from comfy.distributed.server_stub import ServerStub
        from comfy.nodes_context import get_nodes

        folder_paths.init_default_paths(folder_paths.folder_names_and_paths, args, replace_existing=True)
        assert folder_paths.get_folder_paths("custom_nodes") == [str(custom_nodes)]

        class RecordingServer(ServerStub):
            def __init__(self):
                super().__init__()
                self.messages = []

            def send_sync(self, event, data, sid=None):
                self.messages.append((event, data))

        # The fork caches loaded nodes per thread: load, validate and execute on this one.
        self.execution, self.node_mappings = execution, get_nodes().NODE_CLASS_MAPPINGS
        self.server_class = RecordingServer

    @property
    def version(self) -> str:
        from latent_space_control.nodes.compat import comfyui_version

        return comfyui_version() or "unknown"

    def node_class(self, class_type: str):
        return self.node_mappings[class_type]

    def run(self, prompt: dict) -> Result:
        lsc_test_capture.CAPTURED.clear()
        server = self.server_class()
        executor = self.execution.PromptExecutor(server, cache_type=self.execution.CacheType.CLASSIC)
        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        ok, error, outputs = valid[0], valid[1], valid[2]
        if not ok:
            node_errors = valid[3] if len(valid) > 3 else {}
            return Result(False, {}, error=f"{error.get('message', error)} {error.get('details', '')} {node_errors}")
        executor.execute(prompt, prompt_id, extra_data={}, execute_outputs=outputs)
        error = ""
        for event, data in executor.status_messages:
            if event == "execution_error":
                error = f"{data.get('node_type')}: {data.get('exception_message')}"
        return Result(executor.success, dict(lsc_test_capture.CAPTURED), executor.history_result.get("outputs", {}),
                      error, server.messages + executor.status_messages)


def comfyui_root() -> Path | None:
    path = os.environ.get("COMFYUI_PATH")
    return Path(path).resolve() if path else None
