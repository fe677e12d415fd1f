"""A minimal Hub for upload tests, on 127.0.0.1: the endpoints ``create_repo``, ``create_branch`` and
``upload_folder`` call, answering every file "regular" (inline in the commit, no LFS or Xet). It keeps
every request, so a test can check what was received and that the token appears only in headers."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        self.requests: list[dict] = []  # method, path, headers, body
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "branches": {name: {path: bytes}}}
        self.commits: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub.requests.append(
                    {"method": "GET", "path": self.path, "headers": dict(self.headers), "body": b""}
                )
                self._reply(404, {"error": "not here"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.requests.append(
                    {"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body}
                )
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._reply(401, {"error": "bad token"})
                    return
                self._reply(*hub.answer(self.path, body))

            def _reply(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, body: bytes) -> tuple[int, dict]:
        if path == "/api/repos/create":
            request = json.loads(body)
            repo = (
                f"{request['organization']}/{request['name']}"
                if request.get("organization")
                else request["name"]
            )
            self.repos.setdefault(
                repo, {"private": request.get("visibility") == "private", "branches": {"main": {}}}
            )
            return 200, {"url": f"{self.url}/{repo}"}
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(branch|preupload|commit)/([^?]+)(\?.*)?", path)
        if match is None or match.group(1) not in self.repos:
            return 404, {"error": f"unknown {path}"}
        repo, action, revision = match.group(1), match.group(2), match.group(3)
        branches = self.repos[repo]["branches"]
        if action == "branch":
            branches.setdefault(revision, dict(branches["main"]))
            return 200, {}
        if revision not in branches:
            return 404, {"error": "no such revision"}
        if action == "preupload":
            files = json.loads(body)["files"]
            return 200, {
                "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            }
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files = {
            line["value"]["path"]: base64.b64decode(line["value"]["content"])
            for line in lines
            if line["key"] == "file"
        }
        branches[revision].update(files)
        oid = f"{len(self.commits) + 1:040x}"
        self.commits.append(
            {"repo": repo, "revision": revision, "message": header["summary"], "files": files}
        )
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid}
