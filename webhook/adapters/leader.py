"""Lease-based leader election (coordination.k8s.io/v1), as client-go's leaderelection does it:
the holder renews the Lease; anyone may take it over once it has not been renewed for its duration."""

from __future__ import annotations

import datetime as dt
import logging

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)
LEASE_SECONDS = 15


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def expired(renew_time: dt.datetime | None, duration_s: int | None, now: dt.datetime) -> bool:
    """Whether a Lease last renewed at `renew_time` may be taken over at `now`."""
    if renew_time is None:
        return True
    if renew_time.tzinfo is None:
        renew_time = renew_time.replace(tzinfo=dt.UTC)
    return now > renew_time + dt.timedelta(seconds=duration_s or LEASE_SECONDS)


class LeaderElector:
    """Holds one Lease; `try_lead()` acquires or renews it and says whether we lead."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, identity: str) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.leading = False
        # The Lease as our last write left it: the holder renews it with one write and no read.
        self._lease: client.V1Lease | None = None

    def try_lead(self) -> bool:
        """Acquire or renew the Lease (one API round trip or two); False when another holder is live."""
        now = _now()
        if self.leading and self._lease is not None and self._lease.spec is not None:
            self._lease.spec.renew_time = now
            try:
                self._lease = self.api.replace_namespaced_lease(self.name, self.namespace, self._lease,
                                                                _request_timeout=5)
                return self._set(True, "renewed the Lease")
            except ApiException as exc:
                self._lease = None  # changed under us (409) or refused: read it again
                if exc.status != 409:
                    return self._set(False, f"could not renew the Lease: HTTP {exc.status}")
            except Exception as exc:
                self._lease = None
                return self._set(False, f"could not renew the Lease: {type(exc).__name__}")
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
        except ApiException as exc:
            if exc.status != 404:
                return self._set(False, f"cannot read Lease: HTTP {exc.status}")
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                                  spec=client.V1LeaseSpec(holder_identity=self.identity, acquire_time=now,
                                                          renew_time=now, lease_duration_seconds=LEASE_SECONDS))
            try:
                self._lease = self.api.create_namespaced_lease(self.namespace, body, _request_timeout=5)
                return self._set(True, "created the Lease")
            except ApiException as exc2:
                return self._set(False, f"lost the race to create the Lease: HTTP {exc2.status}")
        spec = lease.spec or client.V1LeaseSpec()
        mine = spec.holder_identity == self.identity
        if not mine and not expired(spec.renew_time, spec.lease_duration_seconds, now):
            return self._set(False, f"{spec.holder_identity} leads")
        if not mine:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity, spec.renew_time, spec.lease_duration_seconds = self.identity, now, LEASE_SECONDS
        lease.spec = spec
        try:
            self._lease = self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)
        except ApiException as exc:
            return self._set(False, f"could not renew the Lease: HTTP {exc.status}")
        return self._set(True, "renewed the Lease" if mine else "took over the Lease")

    def release(self) -> None:
        """Give the Lease up on a clean stop, as client-go's ReleaseOnCancel does, so that another
        replica takes over at its next try instead of after the Lease's duration."""
        if not self.leading:
            return
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
            if lease.spec is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity, lease.spec.renew_time = "", None
                lease.spec.lease_duration_seconds = 1
                self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)
        except ApiException as exc:
            log.warning("could not release the Lease: HTTP %s", exc.status)
        except Exception as exc:  # stopping anyway: the Lease then expires on its own
            log.warning("could not release the Lease: %s", type(exc).__name__)
        self._lease = None
        self._set(False, "released the Lease")

    def _set(self, leading: bool, why: str) -> bool:
        if leading != self.leading:
            log.info("%s reconciler leadership: %s (%s)", self.identity, "leading" if leading else "standing by", why)
        self.leading = leading
        return leading
