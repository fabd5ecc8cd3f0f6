#!/usr/bin/env python3
# hub_server.py: a stand-in for the Hugging Face Hub's file endpoint, for
# tests/models/test_hub.cc. What it is not: the Hub API (no /api/ routes, listings or
# uploads); only what a download needs.
#
#     python3 tests/models/hub_server.py ROOT [--token TOKEN]
#
# Serves ROOT/{org}/{name}/{file} at /{org}/{name}/resolve/{revision}/{file}, binds
# 127.0.0.1 on a free port and prints the port on the first line of stdout. Like the Hub:
#   - every response about a repository carries X-Repo-Commit, a fixed fake commit hash
#     (sha1 of the repo id); revision "main" and that hash both resolve;
#   - small files come with their own ETag (weak, W/"<sha1>"), as git blobs do;
#   - *.safetensors and *.bin are "LFS" files: a 302 to http://localhost:{port}/_cdn/... with
#     X-Linked-Etag (the sha256 of the content, which names the blob) and X-Linked-Size; the
#     "CDN" answers with a different ETag of its own;
#   - errors are 404 with X-Error-Code RepositoryNotFound, RevisionNotFound or
#     EntryNotFound, and X-Error-Message;
#   - with --token, repositories under the org "private" need "Authorization: Bearer TOKEN",
#     and answer 401 RepositoryNotFound without it.
import argparse
import hashlib
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".bin")


def commit_of(repo_id):
    return hashlib.sha1(repo_id.encode()).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    root = "."
    token = None

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message, headers=()):
        self.send(status, message.encode(), [("X-Error-Code", code), ("X-Error-Message", message), *headers])

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = path.strip("/").split("/")
        if any(p in ("", ".", "..") for p in parts):
            return self.error(404, "EntryNotFound", "bad path")
        if parts[0] == "_cdn" and len(parts) >= 4:  # /_cdn/{org}/{name}/{file}
            return self.serve_file(os.path.join(*parts[1:]), [("ETag", '"cdn-%s"' % os.urandom(4).hex())])
        if len(parts) < 5 or parts[2] != "resolve":
            return self.error(404, "EntryNotFound", "not a /{org}/{name}/resolve/{revision}/{file} URL")
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo_dir = os.path.join(self.root, *parts[:2])
        if parts[0] == "private" and self.token and self.headers.get("Authorization") != "Bearer " + self.token:
            return self.error(401, "RepositoryNotFound", "Repository not found")
        if not os.path.isdir(repo_dir):
            return self.error(404, "RepositoryNotFound", "Repository not found")
        commit = commit_of(repo_id)
        commit_header = [("X-Repo-Commit", commit)]
        if revision not in ("main", commit):
            return self.error(404, "RevisionNotFound", "Invalid rev id: " + revision, commit_header)
        file_path = os.path.join(repo_dir, filename)
        if not os.path.isfile(file_path):
            return self.error(404, "EntryNotFound", "Entry not found", commit_header)
        with open(file_path, "rb") as f:
            data = f.read()
        if filename.endswith(LFS_SUFFIXES):
            # To another host name, as the Hub's CDN is another host: clients follow redirects
            # within the Hub (repository renames) and expect X-Repo-Commit at their end.
            location = "http://localhost:%d/_cdn/%s/%s" % (self.server.server_address[1], repo_id,
                                                          urllib.parse.quote(filename))
            return self.send(302, b"", [*commit_header, ("Location", location),
                                        ("X-Linked-Etag", '"%s"' % hashlib.sha256(data).hexdigest()),
                                        ("X-Linked-Size", str(len(data))), ("ETag", '"redirect-etag"')])
        self.send(200, data, [*commit_header, ("ETag", 'W/"%s"' % hashlib.sha1(data).hexdigest())])

    def serve_file(self, relative, headers):
        file_path = os.path.join(self.root, relative)
        if not os.path.isfile(file_path):
            return self.error(404, "EntryNotFound", "Entry not found")
        with open(file_path, "rb") as f:
            self.send(200, f.read(), headers)


def main():
    parser = argparse.ArgumentParser(description="A stand-in for the Hugging Face Hub file endpoint")
    parser.add_argument("root")
    parser.add_argument("--token")
    args = parser.parse_args()
    HubHandler.root = os.path.abspath(args.root)
    HubHandler.token = args.token
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
