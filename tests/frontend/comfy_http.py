"""A small client for a running ComfyUI server's HTTP API: queue a prompt and wait for its result in /history."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class Server:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, timeout: float = 10):
        with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict, timeout: float = 30) -> tuple[int, dict]:
        data = json.dumps(body).encode()  # allow_nan: NaN/Infinity literals, which the server's json.loads accepts
        request = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, {"raw": raw.decode(errors="replace")}

    def alive(self) -> bool:
        try:
            self.get("/system_stats", timeout=5)
            return True
        except Exception:
            return False

    def wait_history(self, prompt_id: str, timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            except Exception:
                entry = None
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.3)
        return None

    def run(self, prompt: dict, timeout: float = 180) -> dict:
        """POST a prompt; {'stage': 'validation'|'execution'|'timeout', 'ok', 'message', 'node_type', 'outputs'}."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "frontend-check"})
        if status != 200:
            return {"stage": "validation", "ok": False, "message": validation_message(body), "raw": body,
                    "node_ids": list((body.get("node_errors") or {}).keys()),
                    "node_type": ", ".join(sorted({v.get("class_type", "") for v in (body.get("node_errors") or {}).values()}))}
        entry = self.wait_history(body["prompt_id"], timeout)
        if entry is None:
            self.post("/interrupt", {})
            return {"stage": "timeout", "ok": False, "message": f"no result in /history after {timeout} s"}
        result = {"stage": "execution", "ok": entry["status"]["status_str"] == "success", "outputs": entry.get("outputs", {}),
                  "message": "", "node_type": None}
        for event, data in entry["status"].get("messages", []):
            if event == "execution_error":
                result.update(message=data.get("exception_message", "").strip(), node_type=data.get("node_type"),
                              exception_type=data.get("exception_type"), node_ids=[str(data.get("node_id"))])
        return result


def validation_message(body: dict) -> str:
    error = body.get("error", {})
    parts = [f"{error.get('message', '')}" + (f" ({error['details']})" if error.get("details") else "")]
    for node_id, node in (body.get("node_errors") or {}).items():
        for item in node.get("errors", []):
            parts.append(f"node {node_id} {node.get('class_type')}: {item.get('message')}: {item.get('details')}")
    return " | ".join(parts)
