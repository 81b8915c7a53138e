"""A minimal ComfyUI HTTP client (standard library only; ComfyUI is never imported).

Endpoints used: GET /object_info, POST /prompt, GET /history/<id>, GET /view, GET /system_stats.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path


class ComfyError(RuntimeError):
    """A prompt ComfyUI rejected or failed to execute; the message carries ComfyUI's own error text."""


class ComfyClient:
    def __init__(self, url: str, *, timeout: float = 60.0):
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            self.url = "http://" + self.url
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self._object_info = None

    def __repr__(self):
        return f"ComfyClient({self.url})"

    def _open(self, path: str, data: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        return urllib.request.urlopen(req, timeout=self.timeout)

    def get_json(self, path: str):
        try:
            with self._open(path) as r:
                return json.loads(r.read())
        except urllib.error.URLError as e:
            raise ComfyError(f"cannot reach ComfyUI at {self.url} ({e}); start it or pass the right --server URL") from e

    def object_info(self) -> dict:
        if self._object_info is None:
            self._object_info = self.get_json("/object_info")
        return self._object_info

    def queue(self, prompt: dict) -> str:
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        try:
            with self._open("/prompt", body, {"Content-Type": "application/json"}) as r:
                return json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise ComfyError(f"{self.url} rejected the prompt (HTTP {e.code}): {detail[:4000]}") from e

    def wait(self, prompt_id: str, *, poll: float = 0.25, timeout: float | None = None) -> dict:
        """Waits for a queued prompt; returns its history entry, raises ComfyError with ComfyUI's message on failure."""
        t0 = time.time()
        while True:
            h = self.get_json(f"/history/{prompt_id}")
            entry = h.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") == "error":
                    msgs = [m[1] for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
                    text = "; ".join(f"{m.get('node_type')}: {m.get('exception_message', '').strip()}" for m in msgs)
                    raise ComfyError(f"{self.url}: the prompt failed: {text or entry['status']}")
                return entry
            if timeout is not None and time.time() - t0 > timeout:
                raise ComfyError(f"{self.url}: prompt {prompt_id} did not finish in {timeout:.0f} s")
            time.sleep(poll)

    def upload_image(self, path: Path) -> str:
        """Uploads an image to the server's input folder (POST /upload/image); returns the name LoadImage takes."""
        path = Path(path)
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
                 f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n",
                 f"--{boundary}--\r\n".encode()]
        try:
            with self._open("/upload/image", b"".join(parts),
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"}) as r:
                info = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise ComfyError(f"{self.url} refused the image {path} (HTTP {e.code}): {e.read()[:500]!r}") from e
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def download(self, item: dict, dest: Path) -> None:
        """Fetches one output file ({filename, subfolder, type}) via /view into `dest` (written whole or not at all)."""
        q = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                    "type": item.get("type", "output")})
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        with self._open(f"/view?{q}") as r, open(part, "wb") as fh:
            while chunk := r.read(1 << 20):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, dest)


def execution_seconds(entry: dict) -> float | None:
    """Seconds between ComfyUI's execution_start and execution_success messages of a history entry."""
    stamps = {m[0]: m[1].get("timestamp") for m in entry.get("status", {}).get("messages", []) if isinstance(m[1], dict)}
    if stamps.get("execution_start") is not None and stamps.get("execution_success") is not None:
        return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0
    return None
