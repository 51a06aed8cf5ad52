"""Hand the pool's ready replicas to the gateway through its admin API.

Contract: `GatewaySync(admin_url, admin_key).sync(endpoints)` makes the set of replicas this
object registered equal `endpoints` (base URLs): `POST /admin/replicas {"url", "name", "version"}`
for new ones, `DELETE /admin/replicas/{name}` for ones that left (stopping, failed, gone), so the
gateway stops routing to a replica before it drains. It only touches replicas it registered
itself (names `scale-<host>-<port>`); replicas from the gateway's config file are left alone.
HTTP errors raise `LabError` naming the call.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from lab.errors import LabError


def replica_name(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    return f"scale-{parsed.hostname}-{parsed.port}"


class GatewaySync:
    def __init__(self, admin_url: str, admin_key: str, version: str | None = None, timeout_s: float = 5.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.admin_key = admin_key
        self.version = version
        self.timeout_s = timeout_s
        self.registered: dict[str, str] = {}  # name -> url

    def _call(self, method: str, path: str, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.admin_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):
                pass
        except (urllib.error.URLError, OSError) as error:
            raise LabError(f"gateway admin {method} {path} failed: {error}") from error

    def sync(self, endpoints: list[str]) -> None:
        wanted = {replica_name(url): url for url in endpoints}
        for name in [n for n in self.registered if n not in wanted]:
            self._call("DELETE", f"/admin/replicas/{urllib.parse.quote(name)}")
            del self.registered[name]
        for name, url in wanted.items():
            if name not in self.registered:
                body = {"url": url, "name": name}
                if self.version:
                    body["version"] = self.version
                self._call("POST", "/admin/replicas", body)
                self.registered[name] = url
