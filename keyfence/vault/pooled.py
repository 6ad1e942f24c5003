"""hvac's adapter, sending each request straight to the session's connection pool.

requests' ``Session.request`` rebuilds, re-merges and re-checks everything about a request on
every call (settings, URL parsing, hooks, cookies), and on loopback that cost more client CPU than
the HTTP exchange: a KV read took ~1.1 ms of CPU through it and takes ~0.65 ms without it, which is
most of what made checking a 1000-key ledger take two seconds. Vault needs none of it: one address,
one set of TLS and proxy settings, all fixed when the client is made. This adapter builds the
request itself and sends it on the pool that the session's mounted
:class:`requests.adapters.HTTPAdapter` chooses (TLS verification with the CA bundle and client
certificate, the proxy from the environment), with that adapter's retry setting, its response
object and requests' exceptions for every failure, so the transport sees what it always saw.
"""
from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit

import hvac.adapters
import requests
import requests.exceptions as rex
import urllib3
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity, requote_uri
from urllib3.connectionpool import HTTPConnectionPool

_PLAIN_KWARGS: Final = frozenset({"json", "params", "wrap_ttl"})
"""What hvac passes with an ordinary API call; anything else (a stream, a raw body) goes the long way."""
_NO_BODY: Final = frozenset({"GET", "HEAD"})


class PooledAdapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]  # hvac has no type information
    """hvac's JSON adapter without requests' per-call session work; answers are the same objects.

    A 200 with a JSON body is a dict and anything else a :class:`requests.Response`, its status,
    headers, body and request as requests would set them; the session's response hooks run on
    every answer. A redirect is followed from the answer in hand by the session's own redirect
    logic (the request is not sent twice); the session's path is still taken for an unusual
    argument and for a session whose adapter is not requests' own.
    The session's cookie jar is the one thing left out (neither sent nor filled): Vault sets none.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pooled: tuple[tuple[object, ...], HTTPConnectionPool, int] | None = None

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        raise_exception: bool = True,
        **kwargs: Any,
    ) -> Any:
        response = self._send(method, url, headers, raise_exception, kwargs)
        if response.status_code == 200:
            try:
                # What Response.json() would do (json detects UTF-8, -16 and -32 itself), minus its
                # decode to text and back.
                return json.loads(response.content)
            except ValueError:
                pass
        return response

    def _session_send(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None,
        raise_exception: bool,
        kwargs: dict[str, Any],
    ) -> requests.Response:
        response: requests.Response = hvac.adapters.RawAdapter.request(
            self, method, url, headers=headers, raise_exception=raise_exception, **kwargs
        )
        return response

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None,
        raise_exception: bool,
        kwargs: dict[str, Any],
    ) -> requests.Response:
        transport = self.session.get_adapter(self.base_uri)
        if (
            self.strict_http
            or not kwargs.keys() <= _PLAIN_KWARGS
            or not isinstance(transport, HTTPAdapter)
            or ("/." in url and _climbs(url))
        ):
            return self._session_send(method, url, headers, raise_exception, kwargs)
        pooled = self._pool_for(transport)
        if pooled is None:
            return self._session_send(method, url, headers, raise_exception, kwargs)
        pool, cut = pooled
        prepared = self._prepare(method, url, dict(headers or {}), kwargs)
        assert prepared.url is not None and prepared.method is not None
        target = prepared.url[cut:] or "/"
        timeout = self._kwargs["timeout"]
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        try:
            answer = pool.urlopen(
                method=prepared.method,
                url=target,
                body=prepared.body,
                headers=prepared.headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=transport.max_retries,
                timeout=urllib3.Timeout(connect=connect, read=read),
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            failure = _as_requests_error(exc, prepared)
            if failure is exc:
                raise
            raise failure from exc
        response = transport.build_response(prepared, answer)
        for hook in self.session.hooks.get("response", ()):
            # As requests' dispatch_hook: a hook may hand back a response to use instead.
            replaced = hook(response)
            if replaced is not None:
                response = replaced
        if response.is_redirect and self.allow_redirects:
            response = self._follow(response, prepared)
        # Read the body now, as Session.request does: a connection cut mid-answer is raised here,
        # as requests' ChunkedEncodingError, and the connection goes back to the pool.
        response.content  # noqa: B018
        if not response.ok and raise_exception and not self.ignore_exceptions:
            self._raise_for_error(method, prepared.url, response)
        return response

    def _follow(self, response: requests.Response, prepared: requests.PreparedRequest) -> requests.Response:
        """The redirect chain from ``response`` (already sent and answered), followed as Session.send
        follows it: by the session's own ``resolve_redirects``, so every hop gets requests' policies
        (303 and a POST's 301/302 become GET, the body dropped; the redirect limit; credentials from
        VAULT_ADDR dropped on another host) and VaultSession's refusal to go from https to http.
        The original request is sent once; each follow-up goes through the session, hooks included.
        """
        # What Session.prepare_request would have given the request: the session's hooks, so each
        # hop's answer is seen (the transport records its status), and a cookie jar to carry along.
        prepared.prepare_hooks({"response": list(self.session.hooks.get("response", ()))})
        prepared.prepare_cookies(requests.cookies.RequestsCookieJar())
        options = self._kwargs
        merged = self.session.merge_environment_settings(
            prepared.url, options["proxies"] or {}, False, options["verify"], options["cert"]
        )
        hops = self.session.resolve_redirects(response, prepared, timeout=options["timeout"], **merged)
        history: list[requests.Response] = [response, *hops]
        final = history.pop()
        final.history = history
        return final

    def _pool_for(self, transport: HTTPAdapter) -> tuple[HTTPConnectionPool, int] | None:
        """The session's pool for Vault's address, and how much of a URL to cut to get the request
        target: the scheme and host, or nothing when a forward proxy is sent the whole URL.

        Asked of the session's adapter once per setting, not per request: that lookup costs a
        tenth of a read. A pool the session has closed since is asked for again.
        """
        options = self._kwargs
        proxies = options["proxies"] or {}
        key = (self.base_uri, transport, options["verify"], options["cert"], tuple(sorted(proxies.items())))
        cached = self._pooled
        if cached is not None and cached[0] == key and cached[1].pool is not None:
            return cached[1], cached[2]
        origin = requests.PreparedRequest()
        origin.method, origin.url, origin.headers = "GET", self.base_uri, CaseInsensitiveDict()
        try:
            pool = transport.get_connection_with_tls_context(
                origin, options["verify"], proxies=proxies, cert=options["cert"]
            )
        except urllib3.exceptions.LocationValueError as exc:
            raise requests.exceptions.InvalidURL(exc, request=origin) from exc
        split = urlsplit(self.base_uri)
        if not isinstance(pool, HTTPConnectionPool) or split.username is not None:
            # Credentials in VAULT_ADDR are requests' to turn into an Authorization header.
            return None
        transport.cert_verify(  # type: ignore[no-untyped-call]  # typed in requests, not in its stubs
            pool, self.base_uri, options["verify"], options["cert"]
        )
        whole = not transport.request_url(origin, proxies).startswith("/")
        cut = 0 if whole else len(f"{split.scheme}://{split.netloc}")
        self._pooled = (key, pool, cut)
        return pool, cut

    def _prepare(
        self, method: str, url: str, extra: dict[str, str], kwargs: dict[str, Any]
    ) -> requests.PreparedRequest:
        """The request hvac's RawAdapter.request would have the session send, built directly."""
        path = url
        while "//" in path:
            # Vault reads '//' as '/', as hvac does before joining the path to the address.
            path = path.replace("//", "/")
        full = self.urljoin(self.base_uri, path)
        params = kwargs.get("params")
        if params:
            # Only a versioned read has parameters: let requests encode them as it always did.
            with_query = requests.PreparedRequest()
            with_query.prepare_url(full, params)
            full = with_query.url or full
        wanted: dict[str, str] = {}
        if self.request_header:
            wanted["X-Vault-Request"] = "true"
        if self.token:
            wanted["X-Vault-Token"] = self.token
        if self.namespace:
            wanted["X-Vault-Namespace"] = self.namespace
        if kwargs.get("wrap_ttl"):
            wanted["X-Vault-Wrap-TTL"] = str(kwargs["wrap_ttl"])
        header_map: CaseInsensitiveDict[str] = CaseInsensitiveDict(self.session.headers)
        header_map.update(extra)
        header_map.update(wanted)
        body: bytes | None = None
        if kwargs.get("json") is not None:
            body = json.dumps(kwargs["json"], allow_nan=False).encode("utf-8")
            header_map.setdefault("Content-Type", "application/json")
        verb = method.upper()
        if body is not None:
            header_map["Content-Length"] = str(len(body))
        elif verb not in _NO_BODY:
            header_map["Content-Length"] = "0"
        for header in header_map.items():
            # As requests refuses them, before anything is sent: a token or namespace with a line
            # break or edge whitespace is an InvalidHeader, never http.client's ValueError that
            # quotes the value.
            check_header_validity(header)
        prepared = requests.PreparedRequest()
        prepared.method = verb
        prepared.url = requote_uri(full)
        prepared.headers = header_map
        prepared.body = body
        return prepared


class DowngradedRedirectError(requests.exceptions.InvalidURL):
    """Vault (or something in front of it) redirected an https request to a plain-http address."""

    def __init__(self, target_host: str, request: requests.PreparedRequest) -> None:
        super().__init__(f"redirected to plain http at {target_host}", request=request)
        self.target_host = target_host


class VaultSession(requests.Session):
    """The session under both paths: it follows a redirect as requests does (a standby's 307 to
    the active node) but never from https to plain http, where the ``X-Vault-Token`` header, which
    requests keeps across redirects (it strips only ``Authorization``), would travel unencrypted."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]  # untyped in the stubs
        before = urlsplit(response.request.url or "")
        after = urlsplit(prepared_request.url or "")
        if before.scheme == "https" and after.scheme != "https":
            raise DowngradedRedirectError(after.hostname or "an unnamed host", prepared_request)


def _climbs(url: str) -> bool:
    """Whether a path has '.' or '..' segments, which requests resolves before sending."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    return any(segment in (".", "..") for segment in path.split("/"))


def _as_requests_error(exc: Exception, request: requests.PreparedRequest) -> Exception:
    """The exception requests' HTTPAdapter.send raises for a urllib3 failure, chosen the same way,
    so that retries and messages see what they always saw."""
    if isinstance(exc, (u3.ProtocolError, OSError, u3.ClosedPoolError)):
        return rex.ConnectionError(exc, request=request)
    if isinstance(exc, u3.MaxRetryError):
        reason = exc.reason
        if isinstance(reason, u3.ConnectTimeoutError) and not isinstance(reason, u3.NewConnectionError):
            return rex.ConnectTimeout(exc, request=request)
        if isinstance(reason, u3.ResponseError):
            return rex.RetryError(exc, request=request)
        if isinstance(reason, u3.ProxyError):
            return rex.ProxyError(exc, request=request)
        if isinstance(reason, u3.SSLError):
            return rex.SSLError(exc, request=request)
        return rex.ConnectionError(exc, request=request)
    if isinstance(exc, u3.ProxyError):
        return rex.ProxyError(exc, request=request)
    if isinstance(exc, u3.SSLError):
        return rex.SSLError(exc, request=request)
    if isinstance(exc, u3.ReadTimeoutError):
        return rex.ReadTimeout(exc, request=request)
    if isinstance(exc, u3.InvalidHeader):
        return rex.InvalidHeader(exc, request=request)
    return exc
