"""HTTP client of the running prediction service, for deploys, sensors and the CLI.

It reads what the service serves (the one reader of GET /metadata), hot-swaps its model
(POST /admin/reload) and attaches or detaches its challenger (/admin/challenger)."""

from dataclasses import dataclass
from datetime import datetime

import requests

from credit_platform.core import routes, settings


class ServiceError(RuntimeError):
    """The service could not be made to serve the requested model."""


@dataclass(frozen=True)
class ReportedModel:
    """What the service says it serves (GET /metadata)."""

    tag: str
    creation_time: datetime  # timezone-aware
    partition: str | None
    metrics: dict
    bento_tag: str | None = None  # None: the service runs from source, not from a Bento
    challenger: dict | None = None  # the attached shadow or canary, as /metadata shows it


def parse_creation_time(value: str) -> datetime:
    """ISO 8601 from /metadata as an aware datetime; a naive one is refused, not guessed."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"creation_time {value!r} has no timezone")
    return parsed


class ServiceClient:
    """HTTP calls to the prediction API with short timeouts (sensor ticks must stay light)."""

    def __init__(self, api_url: str, timeout: float = 2.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout

    def reported_model(self) -> ReportedModel | None:
        """None when the service does not answer or reports no usable model (a body that
        is not JSON, or lacks the version or its creation time)."""
        try:
            response = requests.get(f"{self.api_url}{routes.METADATA}", timeout=self.timeout)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        try:
            body = response.json()
            return ReportedModel(
                tag=body["model_version"],
                creation_time=parse_creation_time(body["creation_time"]),
                partition=body.get("partition"),
                metrics=dict(body.get("metrics") or {}),
                bento_tag=body.get("bento_tag"),
                challenger=body.get("challenger"),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def reload(self, tag: str, token: str | None) -> dict:
        """Hot-swap the served model; raises ServiceError with the service's own reason."""
        return self._admin(
            "POST", routes.ADMIN_RELOAD, token, f"reload {tag}", json_body={"tag": tag}
        )

    def set_challenger(
        self, token: str | None, tag: str | None, role: str = "shadow", share: float = 0.0
    ) -> dict:
        """Attach `tag` as a shadow or canary (None detaches); raises ServiceError with the
        service's own reason."""
        if tag is None:
            return self._admin("DELETE", routes.ADMIN_CHALLENGER, token, "detach the challenger")
        body = {"tag": tag, "role": role, "share": share}
        return self._admin(
            "POST", routes.ADMIN_CHALLENGER, token, f"attach {tag} as {role}", json_body=body
        )

    def _admin(
        self, method: str, path: str, token: str | None, action: str, json_body=None
    ) -> dict:
        """One call to an admin route (they wait until every worker agrees, hence the long
        timeout); ServiceError names the action, the service and its reason."""
        if not token:
            raise ServiceError(
                f"cannot {action} at {self.api_url}: {settings.ADMIN_TOKEN_ENV} is not set "
                "for this process (it must match the service's)"
            )
        try:
            response = requests.request(
                method,
                f"{self.api_url}{path}",
                json=json_body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=max(self.timeout, 120.0),
            )
        except requests.RequestException as error:
            raise ServiceError(f"{action} at {self.api_url} failed: {error}") from error
        if response.status_code != 200:
            raise ServiceError(
                f"{self.api_url} refused to {action} "
                f"(HTTP {response.status_code}): {response.text[:500]}"
            )
        return response.json()
