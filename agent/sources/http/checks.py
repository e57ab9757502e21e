"""What decides an HTTP probe once a response came: blackbox_exporter's checks, in its order. The status code
and the header regexes are judged on the head (their verdict waits until the body is read, so the body's
length and transfer time are measured either way), then the body (regexes, JSON metrics), then the HTTP
version and whether the response came over TLS.
"""

from __future__ import annotations

import json

from agent.config import regex as user_regex
from agent.series.store import Group
from agent.sources.http.config import FAILED_DUE_TO_REGEX, JSON_ERRORS, HttpModule
from agent.sources.http.head import Head
from agent.sources.http.jsonmetrics import CompiledJsonMetric
from agent.sources.http.request import Url
from agent.sources.probe.result import ProbeFailed, ProbeResult

_REASON = 200


class Checks:
    """A module's checks, compiled once per source."""

    def __init__(self, module: HttpModule, own: Group | None):
        self.module = module
        self.valid = frozenset(module.valid_status_codes)
        self.expected = ", ".join(map(str, module.valid_status_codes)) if module.valid_status_codes else "2xx"
        self.headers_fail = [(m.header.lower(), m.header, user_regex.compile(m.regexp), m.allow_missing)
                             for m in module.fail_if_header_matches]
        self.headers_need = [(m.header.lower(), m.header, user_regex.compile(m.regexp), m.allow_missing)
                             for m in module.fail_if_header_not_matches]
        self.regexes_fail = [user_regex.compile(p) for p in module.fail_if_body_matches_regexp]
        self.regexes_need = [user_regex.compile(p) for p in module.fail_if_body_not_matches_regexp]
        self.json = [CompiledJsonMetric(spec) for spec in module.json_metrics]
        self.json_errors = None
        if self.json:
            assert own is not None, "a module with json_metrics counts its errors in the source's own group"
            self.json_errors = own.counter(JSON_ERRORS)
            for metric in self.json:
                self.json_errors.ensure(metric.error_labels)
        self.reads_body = bool(self.regexes_fail or self.regexes_need or self.json)

    def head_verdict(self, head: Head, result: ProbeResult) -> ProbeFailed | None:
        """The status code's verdict, then the header regexes' (only when the status is good, as blackbox)."""
        status = head.status
        if (status not in self.valid) if self.valid else not 200 <= status < 300:
            return ProbeFailed("status_code", f"status {status}, expected {self.expected}")
        if self.headers_fail or self.headers_need:
            failure = self._headers(head)
            result.set(FAILED_DUE_TO_REGEX, 1.0 if failure else 0.0)
            if failure:
                return ProbeFailed("header_regex", failure[:_REASON])
        return None

    def _headers(self, head: Head) -> str | None:
        for key, name, expression, allow_missing in self.headers_fail:
            values = head.values(key)
            if not values and not allow_missing:
                return f"header {name} missing (fail_if_header_matches, allow_missing: false)"
            if any(expression.search(value) for value in values):
                return f"header {name} matches fail_if_header_matches {expression.pattern!r}"
        for key, name, expression, allow_missing in self.headers_need:
            values = head.values(key)
            if not values:
                if allow_missing:
                    continue
                return f"header {name} missing (fail_if_header_not_matches, allow_missing: false)"
            if not any(expression.search(value) for value in values):
                return f"header {name} does not match fail_if_header_not_matches {expression.pattern!r}"
        return None

    def judge_body(self, body: bytes, result: ProbeResult) -> None:
        """Body regexes, then JSON metrics; raises ProbeFailed."""
        if self.regexes_fail or self.regexes_need:
            text = body.decode("utf-8", errors="replace")
            matched = next((r.pattern for r in self.regexes_fail if r.search(text)), None)
            missing = next((r.pattern for r in self.regexes_need if not r.search(text)), None)
            result.set(FAILED_DUE_TO_REGEX, 1.0 if matched or missing else 0.0)
            if matched is not None:
                raise ProbeFailed("body_regex", f"body matches fail_if_body_matches_regexp {matched!r}"[:_REASON])
            if missing is not None:
                raise ProbeFailed("body_regex",
                                  f"body does not match fail_if_body_not_matches_regexp {missing!r}"[:_REASON])
        if self.json:
            try:
                document = json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise ProbeFailed("invalid_json", f"body is not JSON: {exc}"[:_REASON]) from None
            for metric in self.json:
                series = metric.extract(document, self.json_errors)
                if series is not None:
                    result.series(metric.spec.spec, series)

    def judge_connection(self, head: Head, url: Url) -> None:
        """valid_http_versions, fail_if_ssl, fail_if_not_ssl; raises ProbeFailed."""
        module = self.module
        if module.valid_http_versions and head.protocol not in module.valid_http_versions:
            raise ProbeFailed("http_version", f"{head.protocol}, expected {', '.join(module.valid_http_versions)}")
        if module.fail_if_ssl and url.scheme == "https":
            raise ProbeFailed("ssl", "the final response came over TLS (fail_if_ssl)")
        if module.fail_if_not_ssl and url.scheme != "https":
            raise ProbeFailed("ssl", "the final response did not come over TLS (fail_if_not_ssl)")
