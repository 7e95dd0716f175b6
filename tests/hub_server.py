"""A small Hub-compatible HTTP server on 127.0.0.1 for driving the real `huggingface_hub` client in tests.

It implements what `HfApi.create_repo`, `create_branch`, `create_commit` (preupload, LFS batch + basic PUT upload,
ndjson commit), `repo_info`, `list_repo_tree`, `hf_hub_download` and `snapshot_download` use, with the headers the
client checks (`X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Error-Code`). Xet is not implemented: tests set
`huggingface_hub.constants.HF_HUB_DISABLE_XET = True` so uploads take the LFS path.

Failure injection, per route ("create_repo", "branch", "validate_yaml", "preupload", "lfs_batch", "lfs_upload",
"commit", "repo_info", "tree", "resolve", or "*" for every route):

    >>> server.fail("commit", status=500, times=2)   # the next two commits get a 500, then they work
    >>> server.fail("commit", status=500)            # every commit fails
    >>> server.fail("*", status=403)                 # every request is forbidden
    >>> server.fail("commit", status=0, times=1)     # status 0: hang up without answering (a network failure)

    with HubServer() as server:
        HfApi(endpoint=server.url).create_repo("alice/model")
        server.files("alice/model")                  # {path: bytes} at the head of main
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


LFS_SUFFIXES = (".safetensors", ".bin", ".png", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
LFS_MIN_SIZE = 10 * 1024 * 1024  # anything larger goes through LFS, as on the Hub
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"

_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+?)(?:/(preupload|commit|branch|revision|tree)/([^/]+)(/.*)?)?$")  # fmt: skip
_LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        """The etag / tree oid: sha256 for LFS files, the git blob sha1 otherwise."""
        if self.lfs:
            return hashlib.sha256(self.data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, Blob]
    parent: str | None = None


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> head commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    def head(self, revision: str = "main") -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, payload: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.payload = status, message, code, payload or {}


class HubServer:
    """A threaded Hub on 127.0.0.1 (random port). Use as a context manager, or call `start()` / `stop()`."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> content, uploaded through /_lfs/
        self.calls: list[tuple[str, str]] = []  # (route, method) of every request
        self.authorizations: list[str] = []  # Authorization headers received (to prove the token was sent)
        self.require_token: str | None = None  # when set, any other token gets a 401
        self._failures: list[list] = []  # [route, status, remaining or None]
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> HubServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # --------------------------------------------------------------------------------------- test-facing API
    def fail(self, route: str, status: int = 500, times: int | None = None) -> None:
        """Answer `times` (None: every) upcoming requests of `route` ("*" for all) with `status`."""
        with self._lock:
            self._failures.append([route, status, times])

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def count(self, route: str) -> int:
        return sum(1 for r, _ in self.calls if r == route)

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        head = self.repos[(repo_type, repo_id)].head(revision)
        return {path: blob.data for path, blob in head.files.items()}

    def snapshot(self) -> dict:
        """A comparable picture of every repo: branches, commits and file contents."""
        with self._lock:
            return {
                key: {
                    "branches": dict(repo.branches),
                    "commits": {oid: {p: b.oid for p, b in c.files.items()} for oid, c in repo.commits.items()},
                }
                for key, repo in self.repos.items()
            }

    # ------------------------------------------------------------------------------------------------ routes
    def _maybe_fail(self, route: str) -> None:
        with self._lock:
            for rule in self._failures:
                if rule[0] in (route, "*") and (rule[2] is None or rule[2] > 0):
                    if rule[2] is not None:
                        rule[2] -= 1
                    raise HubError(rule[1], f"injected failure on {route}")

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _head(self, repo: Repo, revision: str) -> Commit:
        head = repo.head(unquote(revision))
        if head is None:
            raise HubError(404, f"Revision Not Found: {revision}", "RevisionNotFound")
        return head

    def create_repo(self, body: dict) -> dict:
        repo_type = body.get("type") or "model"
        repo_id = f"{body['organization'] or 'user'}/{body['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:  # the Hub's 409 also carries the url
                raise HubError(409, "You already created this repo", payload={"url": url})
            repo = Repo(repo_type, repo_id, private=body.get("visibility") == "private" or bool(body.get("private")))
            first = Commit(
                uuid.uuid4().hex + "00000000", "initial commit", {".gitattributes": Blob(GITATTRIBUTES, False)}
            )
            repo.commits[first.oid], repo.branches["main"] = first, first.oid
            self.repos[(repo_type, repo_id)] = repo
        return {"url": url, "name": repo_id}

    def create_branch(self, repo: Repo, branch: str) -> dict:
        with self._lock:
            if branch in repo.branches:
                raise HubError(409, "Reference already exists")
            repo.branches[branch] = repo.branches["main"]
        return {}

    def preupload(self, repo: Repo, revision: str, body: dict) -> dict:
        head = self._head(repo, revision)
        out = []
        for f in body["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE
            existing = head.files.get(f["path"])
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": existing.oid if existing is not None else None})  # fmt: skip
        return {"files": out, "commitOid": head.oid}

    def lfs_batch(self, repo: Repo, body: dict) -> dict:
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_store:  # already stored: no action, the client skips the upload
                entry["actions"] = {"upload": {"href": f"{self.url}/_lfs/{obj['oid']}", "header": {}}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def lfs_upload(self, oid: str, data: bytes) -> dict:
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "sha256 mismatch")
        with self._lock:
            self.lfs_store[oid] = data
        return {}

    def commit(self, repo: Repo, revision: str, body: bytes) -> dict:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        with self._lock:
            head = self._head(repo, revision)
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    if value["oid"] not in self.lfs_store:
                        raise HubError(422, f"LFS object {value['oid']} was not uploaded")
                    files[value["path"]] = Blob(self.lfs_store[value["oid"]], True)
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            new = Commit(uuid.uuid4().hex + "00000000", header["summary"], files, parent=head.oid)
            repo.commits[new.oid] = new
            repo.branches[unquote(revision)] = new.oid
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return {"commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{new.oid}", "commitOid": new.oid,
                "pullRequestUrl": None}  # fmt: skip

    def repo_info(self, repo: Repo, revision: str) -> dict:
        head = self._head(repo, revision)
        return {"id": repo.repo_id, "sha": head.oid, "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(head.files)]}  # fmt: skip

    def tree(self, repo: Repo, revision: str, path: str, recursive: bool) -> list:
        head = self._head(repo, revision)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries, dirs = [], set()
        for p, blob in sorted(head.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                dirs.add(prefix + "/".join(rest[:depth]))
            if len(rest) > 1 and not recursive:
                continue
            entry = {"type": "file", "path": p, "size": len(blob.data), "oid": blob.oid}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.oid, "size": len(blob.data), "pointerSize": 134}
            entries.append(entry)
        if not recursive:
            dirs = {d for d in dirs if "/" not in d[len(prefix) :]}
        return [{"type": "directory", "path": d, "oid": "0" * 40} for d in sorted(dirs)] + entries


def _make_handler(server: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # keep test output clean
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None):
            body = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if raw is None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _dispatch(self):
            path = urlsplit(self.path).path
            query = urlsplit(self.path).query
            body = self._body() if self.command in ("POST", "PUT") else b""
            route = "unknown"
            try:
                route, handler = self._route(path, query, body)
                with server._lock:
                    server.calls.append((route, self.command))
                    server.authorizations.append(self.headers.get("Authorization", ""))
                server._maybe_fail(route)
                auth = self.headers.get("Authorization", "")
                # LFS uploads go to presigned URLs (S3 on the Hub), which carry no Authorization header.
                needs_auth = server.require_token is not None and route != "lfs_upload"
                if needs_auth and auth != f"Bearer {server.require_token}":
                    raise HubError(401, "Invalid credentials in Authorization header")
                result = handler()
                if isinstance(result, tuple):  # (status, headers, raw body) for file downloads
                    self._send(result[0], headers=result[1], raw=result[2])
                else:
                    self._send(200, result)
            except HubError as err:
                if err.status == 0:  # injected network failure: hang up without an answer
                    self.close_connection = True
                    return
                headers = {"X-Error-Message": err.message}
                if err.code:
                    headers["X-Error-Code"] = err.code
                self._send(err.status, {"error": err.message, **err.payload}, headers=headers)

        def _route(self, path: str, query: str, body: bytes):
            s = server
            if path == "/api/repos/create" and self.command == "POST":
                return "create_repo", lambda: s.create_repo(json.loads(body))
            if path == "/api/validate-yaml":
                return "validate_yaml", lambda: {"errors": [], "warnings": []}
            if path == "/api/whoami-v2":
                return "whoami", lambda: {"name": "tester", "type": "user"}
            if path.startswith("/_lfs/") and self.command == "PUT":
                return "lfs_upload", lambda: s.lfs_upload(path.rsplit("/", 1)[1], body)
            if m := _LFS_BATCH.match(path):
                return "lfs_batch", lambda: s.lfs_batch(s._get_repo((m[1] or "models")[:-1], m[2]), json.loads(body))
            if m := _API.match(path):
                repo_type, repo_id, action, revision, rest = m[1][:-1], m[2], m[3], m[4], unquote(m[5] or "")
                repo = lambda: s._get_repo(repo_type, repo_id)  # noqa: E731
                if action is None or action == "revision":
                    return "repo_info", lambda: s.repo_info(repo(), revision or "main")
                if action == "preupload":
                    return "preupload", lambda: s.preupload(repo(), revision, json.loads(body))
                if action == "commit":
                    return "commit", lambda: s.commit(repo(), revision, body)
                if action == "branch":
                    return "branch", lambda: s.create_branch(repo(), unquote(revision))
                if action == "tree":
                    return "tree", lambda: s.tree(repo(), revision, rest, "recursive=True" in query)
            if m := _RESOLVE.match(path):
                return "resolve", lambda: self._resolve((m[1] or "models")[:-1], m[2], m[3], unquote(m[4]))
            raise HubError(404, f"no route for {self.command} {path}")

        def _resolve(self, repo_type: str, repo_id: str, revision: str, filename: str):
            repo = server._get_repo(repo_type, repo_id)
            head = server._head(repo, revision)
            blob = head.files.get(filename)
            if blob is None:
                raise HubError(404, "Entry not found", "EntryNotFound")
            headers = {"X-Repo-Commit": head.oid, "ETag": f'"{blob.oid}"'}
            if blob.lfs:
                headers.update({"X-Linked-Etag": f'"{blob.oid}"', "X-Linked-Size": str(len(blob.data))})
            return 200, headers, blob.data

        do_GET = do_POST = do_PUT = do_HEAD = _dispatch

    return Handler
