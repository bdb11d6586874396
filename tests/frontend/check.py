"""Frontend + server check of the Latent Space Control pack in a real ComfyUI, headless (run it through run.sh).

1. starts ComfyUI ($COMFYUI_PATH) on 127.0.0.1 with a throw-away base directory whose custom_nodes holds symlinks to
   the pack (this repository), tests/comfy/lsc_test_nodes and check_nodes; checks the pack's load line and errors;
2. drives the real frontend in headless Chromium (browser.js): drops every shipped workflow, checks for missing/red
   nodes, screenshots, compares app.graphToPrompt() with tests/comfy/ui_to_api.py (workflow_reference.py), swaps the
   loader for the tiny test checkpoint in the graph and queues it from the frontend, then shows a bad widget value's
   error (UI_ERRORS) and does what a workflow's Note asks after the first run (FOLLOW_UPS);
3. POSTs the frontend's prompt with the tests' swaps (TINY/FAST from test_workflows.py) and waits on /history;
4. feeds every pack node bad input (bad_inputs.py; its model files go to the server's model folders inside the
   throw-away base directory) and checks the server stays healthy;
5. prints PASS/FAIL per check, writes summary.json into the output folder, exits 1 on any FAIL.
Nothing is written into the pack or into ComfyUI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bad_inputs import run_bad_inputs
from comfy_http import Server

HERE = Path(__file__).resolve().parent
PACK = HERE.parents[1]
sys.path.insert(0, str(PACK / "tests" / "comfy"))
from test_interpolate_nodes import PACK_NODES  # noqa: E402  (the pack's node list, as its tests know it)

# How a user sees a pack error: this widget value is set in the loaded graph and queued from the frontend.
UI_ERRORS = [{"workflow": "lsc_morph_animation.json", "nodeType": "LSC_NoiseTravel", "widget": "more_seeds",
              "value": "7, x"},
             {"workflow": "lsc_prompt_slider.json", "nodeType": "LSC_DirectionFromCLIP", "widget": "negative",
              "value": "blue"}]
# What a workflow's Note asks the user to do after its first run, done in the frontend and queued again.
FOLLOW_UPS = [{"workflow": "lsc_direction_library.json", "unmute": "LSC_LoadDirection",
               "connect": ["LSC_LoadDirection", 0, "LSC_ApplyDirection", "direction"]}]
RESULTS: list[tuple[str, str, str]] = []  # (check, PASS/FAIL/INFO, detail)


def record(check: str, ok: bool | None, detail: str = "") -> None:
    status = "INFO" if ok is None else ("PASS" if ok else "FAIL")
    RESULTS.append((check, status, detail))
    print(f"[{status}] {check}" + (f": {detail}" if detail else ""), flush=True)


@dataclass
class Run:
    """One run: the ComfyUI tree, the output folder, the throw-away ComfyUI base directory and the server."""
    comfy: Path
    out: Path
    tmp: Path
    server: Server
    summary: dict = field(default_factory=dict)

    @property
    def base(self) -> Path:
        return self.tmp / "base"

    @property
    def server_log(self) -> Path:
        return self.tmp / "server.log"


# ---------------------------------------------------------------------------------------------------- helpers ---
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tracebacks(log: str) -> list[str]:
    """Each 'Traceback ...' block of a log: the header, the indented frames and the exception line(s)."""
    blocks, lines, i = [], log.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("Traceback (most recent call last)"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                j += 1
            blocks.append("\n".join(lines[i:j + 1]))
            i = j + 1
        else:
            i += 1
    return blocks


def tree_state(root: Path) -> dict:
    """(mtime, size) of every file and symlinked folder under ``root``: compared before and after the run."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                state[path] = (st.st_mtime_ns, st.st_size)
            except OSError:
                pass
        state[folder] = ("dir",)
    return state


def pycache_dirs(root: Path) -> set:
    return {str(p) for p in root.rglob("__pycache__") if ".venv" not in p.parts and "node_modules" not in p.parts}


def strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def prompt_diff(frontend: dict, reference: dict) -> list[str]:
    diffs = []
    for node_id in sorted(set(frontend) | set(reference), key=lambda k: (len(k), k)):
        f, r = frontend.get(node_id), reference.get(node_id)
        if f is None or r is None:
            diffs.append(f"node {node_id}: only in {'ui_to_api' if f is None else 'frontend'} "
                         f"({(r or f)['class_type']})")
            continue
        if f["class_type"] != r["class_type"]:
            diffs.append(f"node {node_id}: class_type {f['class_type']!r} (frontend) vs {r['class_type']!r} (ui_to_api)")
        for name in sorted(set(f["inputs"]) | set(r["inputs"])):
            fv, rv = f["inputs"].get(name, "<absent>"), r["inputs"].get(name, "<absent>")
            if fv != rv:
                diffs.append(f"node {node_id} {f['class_type']}.{name}: {fv!r} (frontend) vs {rv!r} (ui_to_api)")
    return diffs


def apply_swaps(prompt: dict, tiny: dict, fast: dict) -> dict:
    """The swaps test_workflows.py applies through ui_to_api(replace=TINY, overrides=FAST), on an API prompt."""
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        node["inputs"].update(fast.get(node["class_type"], {}))
        node["class_type"] = tiny.get(node["class_type"], node["class_type"])
    return out


def output_files(outputs: dict) -> list[str]:
    """'<node>:<type>/<subfolder/>filename' of every image a prompt saved or previewed."""
    files = []
    for node_id, ui in outputs.items():
        for key in ("images", "gifs", "animated", "videos"):
            for item in ui.get(key, []) or []:
                if isinstance(item, dict) and "filename" in item:
                    subfolder = f"{item['subfolder']}/" if item.get("subfolder") else ""
                    files.append(f"{node_id}:{item.get('type')}/{subfolder}{item['filename']}")
    return files


# --------------------------------------------------------------------------------------------------- set-up ---
def make_base(run: Run) -> None:
    """ComfyUI's --base-directory: custom_nodes (symlinks), input, output, temp, user settings, models."""
    base = run.base
    for sub in ("custom_nodes", "input", "output", "temp", "user/default", "models/checkpoints"):
        (base / sub).mkdir(parents=True)
    (base / "custom_nodes" / "latent-space-control").symlink_to(PACK, target_is_directory=True)
    (base / "custom_nodes" / "lsc_test_nodes").symlink_to(PACK / "tests/comfy/lsc_test_nodes", target_is_directory=True)
    (base / "custom_nodes" / "check_nodes").symlink_to(HERE / "check_nodes", target_is_directory=True)
    (run.tmp / "pypath").mkdir()  # lsc_test_nodes imports the top-level module lsc_test_capture
    (run.tmp / "pypath" / "lsc_test_capture.py").symlink_to(PACK / "tests/comfy/lsc_test_capture.py")
    (base / "user/default/comfy.settings.json").write_text(json.dumps(
        {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))


def child_env(run: Run) -> dict:
    # PYTHONPYCACHEPREFIX comes from run.sh: no __pycache__ lands in the pack or in ComfyUI.
    return dict(os.environ, PYTHONPATH=str(run.tmp / "pypath"), PYTHONUNBUFFERED="1")


def start_server(run: Run, log_file) -> subprocess.Popen:
    port = run.server.base.rsplit(":", 1)[1]
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", port, "--disable-api-nodes",
               "--base-directory", str(run.base), "--database-url", f"sqlite:///{run.base}/user/comfyui.db"]
    print("server:", " ".join(command), flush=True)
    return subprocess.Popen(command, cwd=run.comfy, env=child_env(run), stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_reference(run: Run, log_file) -> subprocess.Popen:
    """workflow_reference.py, beside the server start: it also writes the input images the workflows load."""
    command = [sys.executable, str(HERE / "workflow_reference.py"), str(run.comfy), str(run.tmp / "reference_work"),
               str(run.base / "input"), str(run.out / "ui_to_api_reference.json")]
    return subprocess.Popen(command, cwd=run.tmp, env=child_env(run), stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=20)
        except Exception:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def git_state(run: Run) -> None:
    def git(*args):
        return subprocess.run(["git", "-C", str(PACK), *args], capture_output=True, text=True, timeout=10).stdout

    run.summary["pack_commit"] = git("rev-parse", "HEAD").strip()
    run.summary["pack_dirty_files"] = git("status", "--porcelain").splitlines()


# ---------------------------------------------------------------------------------------------------- checks ---
def check_server_and_pack(run: Run, proc: subprocess.Popen) -> bool:
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None and not run.server.alive():
        time.sleep(0.5)
    if not run.server.alive():
        record("server starts", False, f"no /system_stats within 120 s (exit code {proc.poll()}); see server.log")
        return False
    stats = run.server.get("/system_stats")["system"]
    run.summary["comfyui_version"] = stats.get("comfyui_version")
    run.summary["required_frontend_version"] = stats.get("required_frontend_version")
    record("server starts", True, f"ComfyUI {stats.get('comfyui_version')} on {run.server.base}")

    log = run.server_log.read_text(errors="replace")
    loaded = re.findall(r"Latent Space Control (\S+): (\d+) nodes", log)
    record(f"log line 'Latent Space Control <version>: {len(PACK_NODES)} nodes'",
           bool(loaded) and loaded[-1][1] == str(len(PACK_NODES)),
           f"Latent Space Control {loaded[-1][0]}: {loaded[-1][1]} nodes" if loaded else "line not found")
    ours = ("latent-space-control", "lsc_test_nodes", "check_nodes", str(PACK), "latent_space_control")
    pack_errors = [block for block in tracebacks(log) if any(o in block for o in ours)]
    pack_errors += [line.strip() for line in log.splitlines()
                    if ("IMPORT FAILED" in line or "Cannot import" in line) and any(o in line for o in ours)]
    record("pack and test nodes load without errors", not pack_errors, " || ".join(pack_errors)[:3000])
    other = sorted({line.strip() for line in log.splitlines() if "IMPORT FAILED" in line})
    if other:
        record("other import failures (ComfyUI environment, not the pack)", None, "; ".join(other))
    pack_warnings = [line for line in log.splitlines() if "Latent Space Control" in line and "nodes" not in line]
    if pack_warnings:
        record("pack warnings at load", None, "; ".join(pack_warnings))

    info = run.server.get("/object_info")
    pack_nodes = sorted(k for k in info if k.startswith("LSC_"))
    run.summary["pack_nodes"] = pack_nodes
    record(f"/object_info lists the {len(PACK_NODES)} pack nodes and the test nodes",
           pack_nodes == sorted(PACK_NODES) and {"LSCTest_TinyCheckpoint", "FCheck_Conditioning"} <= set(info),
           ", ".join(pack_nodes))
    return True


def check_templates(run: Run) -> None:
    """The shipped workflows are offered as templates (Templates -> Custom Nodes) and served by the server."""
    templates = run.server.get("/workflow_templates")
    shipped = sorted(p.stem for p in (PACK / "workflows").glob("*.json"))
    offered = sorted(templates.get("latent-space-control", []))
    served = []
    for stem in offered:
        try:
            served.append(bool(run.server.get(f"/api/workflow_templates/latent-space-control/{stem}.json").get("nodes")))
        except Exception:
            served.append(False)
    record("shipped workflows offered as templates (/workflow_templates) and served", offered == shipped and all(served),
           f"{offered} (folder 'workflows/': ComfyUI accepts it but suggests 'example_workflows' at debug log level)")


def wait_reference(run: Run, proc: subprocess.Popen) -> dict | None:
    try:
        proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
    path = run.out / "ui_to_api_reference.json"
    reference = json.loads(path.read_text()) if path.exists() else None
    record("reference conversion (tests/comfy/ui_to_api.py in-process)", reference is not None and all(
        "error" not in w for w in reference["workflows"].values()),
        "see workflow_reference.log" if reference is None else "; ".join(
            f"{k}: {w['error']}" for k, w in reference["workflows"].items() if "error" in w))
    return reference


def run_browser(run: Run, workflows: list[str], tiny: dict, fast: dict) -> dict:
    config = {"url": run.server.base + "/", "chromium": os.environ["CHROMIUM"], "outDir": str(run.out),
              "workflows": workflows, "tiny": tiny, "fast": fast, "uiErrors": UI_ERRORS, "followUps": FOLLOW_UPS,
              "historyTimeoutMs": 300000, "overallTimeoutMs": 900000}
    (run.tmp / "browser_config.json").write_text(json.dumps(config))
    try:
        subprocess.run(["node", str(HERE / "browser.js"), str(run.tmp / "browser_config.json")], cwd=HERE, timeout=930)
    except subprocess.TimeoutExpired:
        pass
    result_path = run.out / "browser_result.json"
    return json.loads(result_path.read_text()) if result_path.exists() else {"fatal": "no browser_result.json"}


def check_frontend(run: Run, browser: dict) -> None:
    run.summary["frontend_version"] = browser.get("frontendVersion")
    record("frontend opens in headless Chromium", not browser.get("fatal") and bool(browser.get("frontendVersion")),
           f"frontend {browser.get('frontendVersion')}" + (f"; {browser['fatal']}" if browser.get("fatal") else ""))
    if browser.get("pageErrors"):
        record("frontend page errors (JS exceptions)", None, " || ".join(e.splitlines()[0] for e in browser["pageErrors"]))
    if browser.get("failedRequests"):
        record("frontend HTTP 4xx/5xx", None, "; ".join(sorted(set(browser["failedRequests"]))))
    control = browser.get("negativeControl") or {}
    detected = any("LSC_DoesNotExist" in d for d in control.get("dialogs", [])) and any(
        not x["registered"] and x["hasErrors"] for x in control.get("nodes", []))
    record("negative control: an unknown node type is caught by the missing-node checks", detected,
           (control.get("dialogs") or ["no dialog"])[0][:160])

    defs = browser.get("nodeDefs") or {}
    gaps = []
    for node_type, d in sorted(defs.items()):
        if not d.get("description"):
            gaps.append(f"{node_type}: no description")
        gaps += [f"{node_type}.{k}: no tooltip" for k, v in d.get("inputs", {}).items() if not v]
        tips = d.get("output_tooltips") or []
        if len(tips) < len(d.get("outputs") or []) or not all(tips):
            gaps.append(f"{node_type}: output without tooltip")
        if not (d.get("display_name") or "").endswith("(LSC)"):
            gaps.append(f"{node_type}: display name {d.get('display_name')!r}")
    record("frontend node defs: display names, descriptions, input and output tooltips",
           sorted(defs) == sorted(PACK_NODES) and not gaps,
           "; ".join(gaps) or ", ".join(f"{k} = {v['display_name']} [{v['category']}]" for k, v in sorted(defs.items())))


def check_loaded(name: str, r: dict) -> bool:
    """The workflow loaded by file drop with every node registered, none drawn red, no dialog."""
    if r.get("error") and not r.get("nodes"):
        record(f"{name}: loaded in the frontend", False, r["error"].splitlines()[0])
        return False
    bad = [f"#{x['id']} {x['type']}" + (" (unregistered)" if not x["registered"] else "") +
           (" (drawn as error)" if x["hasErrors"] else "") for x in r["nodes"]
           if not x["registered"] or x["hasErrors"] or x["placeholder"]]
    problems = bad + [f"dialog: {d[:200]}" for d in r.get("dialogs", [])]
    if len(r["nodes"]) != r["nodeCountFile"]:
        problems.append(f"{len(r['nodes'])} nodes in the graph, {r['nodeCountFile']} in the file")
    if r.get("linkCountGraph") != r.get("linkCountFile"):
        problems.append(f"{r.get('linkCountGraph')} links in the graph, {r.get('linkCountFile')} in the file")
    record(f"{name}: loaded by {r.get('loadedBy')}, no missing/red nodes, no dialogs", not problems,
           "; ".join(problems) or f"{len(r['nodes'])} nodes, {r.get('linkCountGraph')} links; screenshot {r.get('screenshot')}")
    return True


def check_prompt_matches(run: Run, name: str, r: dict, ref: dict) -> None:
    if "plain" in ref and r.get("prompt"):
        diffs = prompt_diff(strip_meta(r["prompt"]), ref["plain"])
        (run.out / f"{Path(name).stem}.frontend_prompt.json").write_text(json.dumps(r["prompt"], indent=1))
        record(f"{name}: app.graphToPrompt() == ui_to_api.py conversion (ignoring the frontend's _meta titles)",
               not diffs, "; ".join(diffs) or f"{len(ref['plain'])} nodes identical")
    else:
        record(f"{name}: app.graphToPrompt() == ui_to_api.py conversion", False, "a prompt is missing")


def check_frontend_queue(name: str, r: dict) -> None:
    h = r.get("history") or {}
    status = (h.get("status") or {}).get("status_str")
    errors = [f"{d.get('node_type')}: {d.get('exception_message', '').strip()}"
              for e, d in (h.get("status") or {}).get("messages", []) if e == "execution_error"]
    response = r.get("queueResponse") or {}
    detail = (f"swaps {r.get('swaps')}; outputs {output_files(h.get('outputs', {}))}" if status == "success"
              else f"queue response {response.get('status')} {json.dumps(response.get('body'))[:400]}; status {status}; "
                   f"{errors}; dialogs {r.get('dialogsAfterQueue')}; {r.get('error', '')[:300]}")
    ok = status == "success" and bool(output_files(h.get("outputs", {}))) and not r.get("dialogsAfterQueue") \
        and not r.get("nodesAfterQueue")
    record(f"{name}: queued from the frontend (app.queuePrompt) after swapping the loader in the graph", ok,
           detail + (f"; screenshot {r.get('screenshotAfterRun')}" if ok else ""))

    f = r.get("followUp")
    if f:
        h = f.get("history") or {}
        status = (h.get("status") or {}).get("status_str")
        errors = [f"{d.get('node_type')}: {d.get('exception_message', '').strip()}"
                  for e, d in (h.get("status") or {}).get("messages", []) if e == "execution_error"]
        loaded = [k for k, v in (f.get("prompt") or {}).items() if v["class_type"] == f["unmute"]]
        ok = bool(f.get("done")) and status == "success" and bool(loaded) and not f.get("dialogs") \
            and not f.get("redNodes")
        response = f.get("queueResponse") or {}
        record(f"{name}: after the first run, {f['unmute']} unmuted and connected to {f['connect'][2]}."
               f"{f['connect'][3]} (as its Note says) and queued again from the frontend", ok,
               f"{f['unmute']} in the prompt as node {loaded}; outputs {output_files(h.get('outputs', {}))}; "
               f"screenshot {f.get('screenshot')}" if ok else
               f"done {f.get('done')}; queue response {response.get('status')} {json.dumps(response.get('body'))[:400]}; "
               f"status {status}; {errors}; dialogs {f.get('dialogs')}; red nodes {f.get('redNodes')}")

    u = r.get("uiError")
    if u:
        shown = " || ".join(u.get("dialogs") or [])
        record(f"{name}: a pack error queued from the frontend ({u['nodeType']}.{u['widget']} = {u['value']!r}) "
               "is shown to the user", u.get("status") == "error" and u["widget"] in shown,
               f"dialog: {shown[:500] or 'none'}; red nodes {u.get('redNodes')}; screenshot {u.get('screenshot')}")


def check_posted_prompt(run: Run, name: str, r: dict, ref: dict, tiny: dict, fast: dict) -> None:
    """The frontend's prompt with the tests' swaps, POSTed to /prompt, runs and saves its images."""
    if not r.get("prompt"):
        return
    prompt = apply_swaps(r["prompt"], tiny, fast)
    if "swapped" in ref:
        diffs = prompt_diff(strip_meta(prompt), ref["swapped"])
        if diffs:
            record(f"{name}: swapped frontend prompt == ui_to_api(replace=TINY, overrides=FAST)", False, "; ".join(diffs))
    result = run.server.run(prompt, timeout=180)
    files = output_files(result.get("outputs", {}))
    exist = all((run.base / ("output" if f.split(":", 1)[1].startswith("output/") else "temp") /
                 f.split("/", 1)[1]).is_file() for f in files)
    record(f"{name}: frontend prompt with test swaps POSTed to /prompt runs", result["ok"] and bool(files) and exist,
           f"outputs {files}" if result["ok"] else f"[{result['stage']}] {result.get('node_type')}: {result['message']}")


def check_healthy(run: Run, proc: subprocess.Popen, reference: dict | None) -> None:
    """After the bad inputs a good prompt still runs (the interpolate workflow, swapped, a new seed: nothing cached)."""
    alive = run.server.alive()
    queue = run.server.get("/queue") if alive else {}
    good_name = "lsc_interpolate_images.json"
    good = ((reference or {}).get("workflows") or {}).get(good_name, {}).get("swapped")
    if good:
        good = json.loads(json.dumps(good))
        for node in good.values():
            if node["class_type"] == "KSampler":
                node["inputs"]["seed"] = 4242
        result = run.server.run(good, timeout=180)
        outcome = f"success, outputs {output_files(result.get('outputs', {}))}" if result["ok"] else result["message"]
        record("server still healthy after the bad inputs: a good prompt runs", alive and result["ok"] and
               not queue.get("queue_running") and not queue.get("queue_pending"), f"{good_name} (seed 4242): {outcome}")
    else:
        record("server still healthy after the bad inputs", False, "no reference prompt to run")
    record("server process still running at the end", proc.poll() is None)


def model_folder(run: Run, name: str) -> Path:
    """The server's first folder for the model type ``name`` (ComfyUI lists them at /internal/folder_paths; upstream
    puts models/ under --base-directory). It must lie in the throw-away base directory: nothing is written into the
    ComfyUI tree."""
    try:
        paths = run.server.get("/internal/folder_paths").get(name) or []
    except Exception:  # a ComfyUI without the route: models/ under the base directory
        paths = []
    folder = Path(paths[0]) if paths else run.base / "models" / name
    if run.base.resolve() not in folder.resolve().parents:
        raise RuntimeError(f"the server's {name} folder {folder} is outside the throw-away base directory {run.base}")
    return folder


def run_checks(run: Run, server_proc: subprocess.Popen, reference_proc: subprocess.Popen) -> None:
    if not check_server_and_pack(run, server_proc):
        return
    check_templates(run)
    reference = wait_reference(run, reference_proc)
    tiny = (reference or {}).get("tiny", {"CheckpointLoaderSimple": "LSCTest_TinyCheckpoint"})
    fast = (reference or {}).get("fast", {})
    workflows = sorted(str(p) for p in (PACK / "workflows").glob("*.json"))

    browser = run_browser(run, workflows, tiny, fast)
    check_frontend(run, browser)
    for path in workflows:
        name = Path(path).name
        r = (browser.get("workflows") or {}).get(name)
        if r is None:
            record(f"{name}: loaded in the frontend", False, "not reached (see browser_result.json)")
            continue
        if not check_loaded(name, r):
            continue
        ref = ((reference or {}).get("workflows") or {}).get(name, {})
        check_prompt_matches(run, name, r, ref)
        check_frontend_queue(name, r)
        check_posted_prompt(run, name, r, ref, tiny, fast)

    run.summary["bad_inputs"] = run_bad_inputs(run.server, record, model_folder(run, "latent_directions"),
                                               model_folder(run, "open_clip"))
    check_healthy(run, server_proc, reference)


# ------------------------------------------------------------------------------------------------------ main ---
def output_folder(given: str | None) -> Path:
    """--out, emptied of an earlier run's files, or a new temp folder."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="lsc_frontend_check_out_"))
    out = Path(given).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    return out


def finish(run: Run, comfy_before: dict, pack_pycache_before: set) -> None:
    """Checks nothing landed in ComfyUI or the pack, writes summary.json and prints the summary."""
    changed = sorted({path for path, _ in set(tree_state(run.comfy).items()) ^ set(comfy_before.items())})
    record("no files written into the ComfyUI tree", not changed, ", ".join(changed[:10]))
    new_pycache = sorted(pycache_dirs(PACK) - pack_pycache_before)
    record("no __pycache__ written into the pack", not new_pycache, ", ".join(new_pycache[:10]))
    failed = [r for r in RESULTS if r[1] == "FAIL"]
    run.summary["results"] = [{"check": c, "status": s, "detail": d} for c, s, d in RESULTS]
    (run.out / "summary.json").write_text(json.dumps(run.summary, indent=1))
    print("\n==================== SUMMARY ====================")
    for check, status, _ in RESULTS:
        print(f"{status:4}  {check}")
    print(f"{len(RESULTS) - len(failed)} of {len(RESULTS)} PASS/INFO, {len(failed)} FAIL; details: {run.out}/summary.json",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for summary.json, screenshots, prompts and logs (its files are "
                                      "replaced); default: a new temp folder")
    options = parser.parse_args()
    port = free_port()
    run = Run(comfy=Path(os.environ["COMFYUI_PATH"]).resolve(), out=output_folder(options.out),
              tmp=Path(tempfile.mkdtemp(prefix="lsc_frontend_check_")), server=Server(port))
    run.summary.update(port=port, pack=str(PACK), comfyui=str(run.comfy))
    git_state(run)
    print(f"pack {PACK} @ {run.summary['pack_commit']} ({len(run.summary['pack_dirty_files'])} uncommitted files); "
          f"ComfyUI {run.comfy}; port {port}; output {run.out}", flush=True)

    make_base(run)
    comfy_before, pack_pycache_before = tree_state(run.comfy), pycache_dirs(PACK)
    with open(run.server_log, "w") as server_log, open(run.tmp / "workflow_reference.log", "w") as reference_log:
        server_proc = start_server(run, server_log)
        reference_proc = start_reference(run, reference_log)
        try:
            run_checks(run, server_proc, reference_proc)
        except Exception:  # a bug in the check itself: still stop the server and report
            record("check.py runs to the end", False, traceback.format_exc())
        finally:
            stop(reference_proc, signal.SIGTERM)
            stop(server_proc, signal.SIGINT)
    for log in ("server.log", "workflow_reference.log"):
        shutil.copy(run.tmp / log, run.out / log)
    shutil.rmtree(run.tmp, ignore_errors=True)
    finish(run, comfy_before, pack_pycache_before)
    return 1 if any(status == "FAIL" for _, status, _ in RESULTS) else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # e.g. run.sh's timeout: still stop the server
    sys.exit(main())
