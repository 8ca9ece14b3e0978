"""A small Hub-protocol server on 127.0.0.1 for publishing tests: the endpoints `huggingface_hub` calls to create a
repository, commit regular (non-LFS) files, read repository info and trees, and download files by branch or commit.

It keeps every commit in memory, so an older revision stays downloadable by its sha. Private repositories answer 401
(`X-Error-Code: RepoNotFound`, as the Hub does) without a valid `Authorization: Bearer` token; writes always need one.
Run the client with `HF_ENDPOINT=<server.url>` and `HF_HUB_DISABLE_XET=1` set before it imports `huggingface_hub`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BODY_BYTES = 256 * 1024 * 1024  # the server keeps everything in memory: refuse larger requests


class RequestTooLargeError(ValueError):
    """A request body above `MAX_BODY_BYTES`."""


def git_blob_sha(content: bytes) -> str:
    """The git blob sha1 of `content` (the Hub's ETag for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


# The subset of the Hub's model-card metadata schema that the server checks (pipeline tags it knows of).
PIPELINE_TAGS = {
    "zero-shot-object-detection",
    "object-detection",
    "visual-question-answering",
    "image-to-text",
    "image-text-to-text",
    "zero-shot-image-classification",
    "image-feature-extraction",
    "feature-extraction",
}


def _check_model_index(model_index: Any) -> list[str]:
    if not isinstance(model_index, list):
        return ["model-index must be a list"]
    errors = []
    for entry in model_index:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append("model-index entries need a name")
            continue
        for result in entry.get("results", []):
            if not isinstance(result.get("task", {}).get("type"), str):
                errors.append("model-index result without task.type")
            dataset = result.get("dataset", {})
            if not (isinstance(dataset.get("name"), str) and isinstance(dataset.get("type"), str)):
                errors.append("model-index result without dataset.name and dataset.type")
            for metric in result.get("metrics", []):
                if not isinstance(metric.get("type"), str) or not isinstance(metric.get("value"), (int, float, str)):
                    errors.append(f"bad metric {metric!r}")
    return errors


def validate_card(content: str) -> list[str]:
    """Errors in a README's YAML front matter, as the Hub's /api/validate-yaml would report them (a subset)."""
    import yaml

    if not content.startswith("---\n"):
        return []
    try:
        metadata = yaml.safe_load(content.split("---\n", 2)[1]) or {}
    except yaml.YAMLError as error:
        return [f"YAML does not parse: {error}"]
    errors = []
    for key in ("license", "library_name", "pipeline_tag"):
        if key in metadata and not isinstance(metadata[key], str):
            errors.append(f"{key} must be a string")
    if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f"unknown pipeline_tag {metadata['pipeline_tag']!r}")
    for key in ("tags", "datasets"):
        if key in metadata and not all(isinstance(v, str) for v in metadata[key]):
            errors.append(f"{key} must be a list of strings")
    if "base_model" in metadata and not isinstance(metadata["base_model"], (str, list)):
        errors.append("base_model must be a string or a list")
    if "model-index" in metadata:
        errors += _check_model_index(metadata["model-index"])
    return errors


@dataclass
class Commit:
    """One commit: its files (path -> bytes), message and parent sha."""

    sha: str
    files: dict[str, bytes]
    message: str
    parent: str | None


@dataclass
class Repo:
    """A model repository: owner, visibility, branches (name -> head sha) and every commit by sha."""

    repo_id: str
    owner: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch name or full commit sha points to."""
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


class HubState:
    """Repositories, valid tokens (token -> user name) and a log of the requests seen (method, path, status)."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def new_commit(self, repo: Repo, branch: str, files: dict[str, bytes], message: str) -> Commit:
        parent = repo.branches.get(branch)
        digest = hashlib.sha1(f"{repo.repo_id}\0{parent}\0{message}\0{len(repo.commits)}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha(files[path]).encode())
        commit = Commit(digest.hexdigest(), files, message, parent)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes Hub API and file requests to the server's `HubState`."""

    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silent: request lines would go to stderr (the state keeps its own log)."""

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _user(self) -> str | None:
        header = self.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        return self.server.state.tokens.get(token) if token else None

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.server.state.requests.append((self.command, self.path, status))

    def _json(self, status: int, data: Any, head: bool = False) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"}, head)

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        self._send(status, json.dumps({"error": message}).encode(), headers, head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length", 0))
        if length > MAX_BODY_BYTES:
            raise RequestTooLargeError(f"request body of {length} bytes exceeds the server's {MAX_BODY_BYTES}")
        data = self.rfile.read(length)
        return gzip.decompress(data) if self.headers.get("Content-Encoding") == "gzip" else data

    def _readable_repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.server.state.repos.get(repo_id)
        if repo is None or (repo.private and self._user() != repo.owner):
            self._error(401, "RepoNotFound", "Repository not found", head)
            return None
        return repo

    def _writable_repo(self, repo_id: str) -> Repo | None:
        repo = self._readable_repo(repo_id)
        if repo is not None and self._user() != repo.owner:
            self._error(403, "Forbidden", "You don't have the rights to write to this repository")
            return None
        return repo

    # -- routing ----------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._route("HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        try:
            with self.server.state.lock:
                self._dispatch(method, url.path, parts, query)
        except RequestTooLargeError as error:
            self._error(413, "PayloadTooLarge", str(error))
            self.close_connection = True

    def _dispatch(self, method: str, path: str, parts: list[str], query: dict[str, list[str]]) -> None:
        if method == "POST" and parts[:3] == ["api", "repos", "create"]:
            return self._create_repo()
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(method, "/".join(parts[2:4]), parts[4:], query)
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), method == "HEAD")
        if method == "POST" and parts[:2] == ["api", "validate-yaml"]:
            errors = [{"message": message} for message in validate_card(json.loads(self._body())["content"])]
            return self._json(400 if errors else 200, {"errors": errors, "warnings": []})
        if method == "GET" and parts[:2] == ["api", "whoami-v2"]:
            user = self._user()
            if user is None:
                return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": user, "auth": {"type": "access_token"}})
        self._error(404, "NotFound", f"no route for {method} {path}", method == "HEAD")

    def _api(self, method: str, repo_id: str, rest: list[str], query: dict[str, list[str]]) -> None:
        action = rest[0] if rest else ""
        if method == "POST" and action in ("preupload", "commit", "branch"):
            repo = self._writable_repo(repo_id)
            if repo is not None:
                revision = "/".join(rest[1:])
                {"preupload": self._preupload, "commit": self._commit, "branch": self._branch}[action](repo, revision)
            return
        if method != "GET":
            return self._error(404, "NotFound", "unknown endpoint")
        repo = self._readable_repo(repo_id)
        if repo is None:
            return
        if action in ("", "revision"):
            return self._info(repo, "/".join(rest[1:]) or "main")
        if action == "tree":
            return self._tree(repo, rest[1], "/".join(rest[2:]), "recursive" in query)
        self._error(404, "NotFound", "unknown endpoint")

    # -- endpoints ----------------------------------------------------------------------------------------------
    def _create_repo(self) -> None:
        user = self._user()
        if user is None:
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        payload = json.loads(self._body())
        owner = payload.get("organization") or user
        repo_id = f"{owner}/{payload['name']}"
        if payload.get("type", "model") != "model":
            return self._error(400, "BadRequest", "only model repositories are served")
        if owner != user:
            return self._error(403, "Forbidden", "You cannot create repositories in this namespace")
        url = f"{self.server.url}/{repo_id}"
        if repo_id in self.server.state.repos:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        private = bool(payload.get("private")) or payload.get("visibility") in ("private", "protected")
        repo = Repo(repo_id, owner, private)
        self.server.state.new_commit(repo, "main", {".gitattributes": b"*.safetensors filter=lfs\n"}, "initial commit")
        self.server.state.repos[repo_id] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _preupload(self, repo: Repo, revision: str) -> None:
        payload = json.loads(self._body())
        commit = repo.resolve(revision)
        files = []
        for item in payload["files"]:
            existing = commit.files.get(item["path"]) if commit else None
            oid = git_blob_sha(existing) if existing is not None else None
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.sha if commit else None})

    def _commit(self, repo: Repo, revision: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = dict(repo.commits[repo.branches[revision]].files)
        header = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                header = value
            elif key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                return self._error(400, "BadRequest", f"unsupported commit operation {key!r} (LFS is not served)")
        commit = self.server.state.new_commit(repo, revision, files, header.get("summary", ""))
        url = f"{self.server.url}/{repo.repo_id}/commit/{commit.sha}"
        self._json(200, {"commitUrl": url, "commitOid": commit.sha, "success": True})

    def _branch(self, repo: Repo, branch: str) -> None:
        body = self._body()
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        commit = repo.resolve(start)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {start}")
        if branch in repo.branches:
            return self._error(409, "Conflict", f"Branch {branch} already exists")
        repo.branches[branch] = commit.sha
        self._json(200, {})

    def _info(self, repo: Repo, revision: str) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        data = {"id": repo.repo_id, "modelId": repo.repo_id, "author": repo.owner, "sha": commit.sha}
        self._json(200, {**data, "private": repo.private, "siblings": siblings, "tags": [], "downloads": 0})

    def _tree(self, repo: Repo, revision: str, folder: str, recursive: bool) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        prefix = folder.rstrip("/") + "/" if folder else ""
        entries, folders = [], set()
        for path, content in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            relative = path[len(prefix) :]
            if "/" in relative and not recursive:
                folders.add(prefix + relative.split("/")[0])
                continue
            entries.append({"type": "file", "oid": git_blob_sha(content), "size": len(content), "path": path})
        if folder and not entries and not folders:
            return self._error(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        self._json(
            200, [{"type": "directory", "oid": "0" * 40, "size": 0, "path": p} for p in sorted(folders)] + entries
        )

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self._readable_repo(repo_id, head)
        if repo is None:
            return
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        if path not in commit.files:
            return self._error(404, "EntryNotFound", f"Entry not found: {path}", head)
        content = commit.files[path]
        headers = {"ETag": f'"{git_blob_sha(content)}"', "X-Repo-Commit": commit.sha}
        self._send(200, content, {**headers, "Content-Type": "application/octet-stream"}, head)


class HubServer(ThreadingHTTPServer):
    """`HubServer(tokens={"secret": "alice"})`: serves a free loopback port until `stop()`; `url` is its endpoint."""

    daemon_threads = True

    def __init__(self, tokens: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), HubRequestHandler)
        self.state = HubState(tokens)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


__all__ = ["Commit", "HubServer", "HubState", "Repo", "git_blob_sha", "validate_card"]
