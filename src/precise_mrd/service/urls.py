"""Service URLs as they may be shown: in logs, errors and health checks."""

from __future__ import annotations


def display_broker(url: str) -> str:
    """The broker URL without its password.

    >>> display_broker("amqp://guest:secret@127.0.0.1:5672//")
    'amqp://guest:***@127.0.0.1:5672//'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{location}"
