"""Who may do what at the broker: the Mosquitto dynamic-security configuration for a fleet.

``bodycam-base broker-acl`` writes the JSON file Mosquitto's dynamic-security plugin
(``mosquitto_dynamic_security.so``, in Debian's ``mosquitto`` package) loads
(``plugin_opt_config_file``; docs/mosquitto/README.md). The broker runs with mutual TLS,
``use_identity_as_username true`` (the certificate's CN is the username the plugin looks up) and
``use_username_as_clientid true`` (the client id is the CN too: nobody can take base's client id
and wipe its session without base's certificate). Default access is deny for publishing,
receiving and subscribing; a client whose CN is not listed can connect but do nothing.

Roles (topics under ``prefix``, default ``bodycam``; ``group`` is base's shared-subscription group):

* ``bodycam-base`` (every base consumer's CN): subscribe to ``$share/<group>/<prefix>/+/marker``
  and ``.../+/telemetry``, (MQTT 3.1.1 fallback) ``<prefix>/+/marker`` and ``<prefix>/+/telemetry``,
  ``<prefix>/+/status``, ``<prefix>/+/ack``; receive those; publish ``<prefix>/+/ack`` and ``<prefix>/+/cmd/#``,
  and the alerts-out topics given (``--alerts-publish``). Only base may join the group.
* ``camera-<id>`` (one per camera: the plugin in Mosquitto 2.0 has no ``%u`` substitution, so each
  camera's topics are written out): publish its own ``marker``, ``status``, ``telemetry``;
  subscribe to and receive its own ``cmd/#`` and ``ack``.
* ``bodycam-watcher`` (a read-only observer such as ``bodycam-sim``'s subscriber): subscribe to and
  receive ``<prefix>/+/marker`` without joining base's group, so it takes no share from base.
* ``bodycam-alerts-reader`` (a dispatch system, Home Assistant: ``--alerts-reader CN``): subscribe to and
  receive the alerts-out topics, nothing else; without it nobody could read what base publishes there
  (the default is deny). ``--alerts-reader CN=T1,T2`` limits a reader to some of those topics (its own
  role, ``alerts-reader-<CN>``): Home Assistant need not read the dispatch system's alerts. The alerts'
  own client certificate (``listen --alerts-cert-file``) is one more ``--base`` CN.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bodycam.device.errors import UsageError
from bodycam.device.uplink.validate import DEVICE_ID_RULE, is_device_id

BASE_ROLE = "bodycam-base"
WATCHER_ROLE = "bodycam-watcher"
ALERTS_READER_ROLE = "bodycam-alerts-reader"


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def _reaches(pattern: str, prefix: str) -> bool:
    """True when the topic pattern ``pattern`` (``+``, ``#`` wildcards) matches ``prefix`` or a topic under it."""
    pat = pattern.split("/")
    for i, level in enumerate(prefix.split("/")):
        if i >= len(pat):
            return False
        if pat[i] == "#":
            return True
        if pat[i] not in ("+", level):
            return False
    return True


def _check_name(name: str, what: str) -> str:
    if not is_device_id(name):
        raise UsageError(f"{what} {name!r}: must be {DEVICE_ID_RULE} (the certificate's CN)")
    return name


def dynsec_config(cameras: Iterable[str], bases: Iterable[str] = ("bodycam-base",), watchers: Iterable[str] = (),
                  prefix: str = "bodycam", group: str = "base", alerts: Iterable[str] = (),
                  alert_readers: Iterable[str] = ()) -> dict[str, Any]:
    """The dynamic-security JSON (see the module doc). Names are certificate CNs; ``alerts``: topics base
    may also publish to (alerts out: ``--alerts-topic``'s ``TOPIC/#``, Home Assistant's discovery and
    state topics), never under ``prefix`` (base must not be able to speak for a camera);
    ``alert_readers``: CNs that may read those topics (and nothing else), each ``CN`` (all of them) or
    ``CN=T1,T2`` (only these, each one of ``alerts``)."""
    p = prefix
    extra = sorted(set(alerts))
    for t in extra:
        if not t or t.startswith(("$", "/")) or _reaches(t, p):
            raise UsageError(f"--alerts-publish {t!r}: not a topic of its own (it may not start with '$' or '/', "
                             f"or match any topic under the cameras' prefix {p!r})")
    cams = sorted({_check_name(c, "camera") for c in cameras})
    base_names = sorted({_check_name(b, "base") for b in bases})
    watcher_names = sorted({_check_name(w, "watcher") for w in watchers})
    readers: dict[str, list[str] | None] = {}  # CN -> its topics (None: every alerts topic)
    for spec in alert_readers:
        name, sep, topics = spec.partition("=")
        own = sorted(set(filter(None, topics.split(",")))) if sep else None
        if own is not None and (not own or not set(own) <= set(extra)):
            raise UsageError(f"--alerts-reader {spec!r}: its topics must be some of the --alerts-publish topics "
                             f"({', '.join(extra) or 'none given'})")
        readers[_check_name(name, "alerts reader")] = own
    reader_names = sorted(readers)
    if reader_names and not extra:
        raise UsageError("--alerts-reader needs the topics it may read (--alerts-publish)")
    named = [set(cams), set(base_names), set(watcher_names), set(reader_names)]
    overlap = {n for i, a in enumerate(named) for b in named[i + 1:] for n in a & b}
    if overlap:
        raise UsageError(f"{', '.join(sorted(overlap))}: one certificate CN cannot have two roles")
    base_acls = [_acl("subscribePattern", f"$share/{group}/{p}/+/marker"),
                 _acl("subscribePattern", f"$share/{group}/{p}/+/telemetry")]
    for leaf in ("marker", "status", "ack", "telemetry"):
        base_acls += [_acl("subscribePattern", f"{p}/+/{leaf}"), _acl("publishClientReceive", f"{p}/+/{leaf}")]
    base_acls += [_acl("publishClientSend", f"{p}/+/ack"), _acl("publishClientSend", f"{p}/+/cmd/#")]
    base_acls += [_acl("publishClientSend", t) for t in extra]
    roles: list[dict[str, Any]] = [{"rolename": BASE_ROLE, "acls": base_acls}]
    if watcher_names:
        roles.append({"rolename": WATCHER_ROLE, "acls": [_acl("subscribePattern", f"{p}/+/marker"),
                                                         _acl("publishClientReceive", f"{p}/+/marker")]})
    def reader_acls(topics: list[str]) -> list[dict[str, Any]]:
        return [_acl(k, t) for t in topics for k in ("subscribePattern", "publishClientReceive")]

    reader_role = {r: ALERTS_READER_ROLE if t is None else f"alerts-reader-{r}" for r, t in readers.items()}
    if ALERTS_READER_ROLE in reader_role.values():
        roles.append({"rolename": ALERTS_READER_ROLE, "acls": reader_acls(extra)})
    for r in reader_names:
        own = readers[r]
        if own is not None:
            roles.append({"rolename": reader_role[r], "acls": reader_acls(own)})
    clients: list[dict[str, Any]] = []
    for b in base_names:
        clients.append({"username": b, "textname": "base consumer", "roles": [{"rolename": BASE_ROLE}]})
    for w in watcher_names:
        clients.append({"username": w, "textname": "read-only marker watcher", "roles": [{"rolename": WATCHER_ROLE}]})
    for r in reader_names:
        clients.append({"username": r, "textname": "alerts reader", "roles": [{"rolename": reader_role[r]}]})
    for c in cams:
        role = f"camera-{c}"
        acls = [_acl("publishClientSend", f"{p}/{c}/{leaf}") for leaf in ("marker", "status", "telemetry")]
        for leaf in ("cmd/#", "ack"):
            acls += [_acl("subscribePattern", f"{p}/{c}/{leaf}"), _acl("publishClientReceive", f"{p}/{c}/{leaf}")]
        roles.append({"rolename": role, "acls": acls})
        clients.append({"username": c, "textname": "camera", "roles": [{"rolename": role}]})
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                             "unsubscribe": True},
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


# -- bodycam-base broker-acl ---------------------------------------------------------------------------
def add_parser(sub: Any, db_help: str, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker-acl", parents=parents,
                       help="write the Mosquitto dynamic-security file: only base may join its group or use its "
                            "client id, each camera publishes only under its own prefix (docs/mosquitto/)")
    p.add_argument("--camera", action="append", default=[], metavar="ID", help="a camera's id (= its certificate CN)")
    p.add_argument("--db", default=None, help=db_help + ": every device with a key registered there is a camera "
                                                         "(bodycam-base keys add)")
    p.add_argument("--base", action="append", default=None, metavar="CN",
                   help="base consumers' certificate CNs (default bodycam-base; one per consumer instance: the "
                        "client id is the CN)")
    p.add_argument("--watcher", action="append", default=[], metavar="CN",
                   help="read-only marker watchers (e.g. bodycam-sim's subscriber), outside base's group")
    p.add_argument("--prefix", default="bodycam")
    p.add_argument("--group", default="base", help="base's shared-subscription group")
    p.add_argument("--alerts-publish", action="append", default=[], metavar="TOPIC",
                   help="a topic (pattern) base may publish alerts to, e.g. dispatch/alerts/# for --alerts-topic "
                        "dispatch/alerts, or homeassistant/# and bodycam-ha/# for --ha-discovery (repeatable)")
    p.add_argument("--alerts-reader", action="append", default=[], metavar="CN[=TOPIC,...]",
                   help="a client (certificate CN) that may read the --alerts-publish topics (or only those after "
                        "'=') and nothing else: the dispatch system, Home Assistant (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="write here (default: stdout)")


def run(args: argparse.Namespace) -> int:
    cameras = list(args.camera)
    if args.db is not None:
        from contextlib import closing

        from bodycam.base.cli import open_store
        from bodycam.base.keys import KeyRegistry

        with closing(open_store(args.db, create=False)) as store:
            cameras += sorted({k.device for k in KeyRegistry(store).keys(device=None)})  # type: ignore[arg-type]
    doc = dynsec_config(cameras, args.base or ["bodycam-base"], args.watcher, args.prefix, args.group,
                        args.alerts_publish, args.alerts_reader)
    text = json.dumps(doc, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        try:
            args.out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--out {args.out}: {exc.strerror or exc}") from exc
        print(f"{args.out}: {len(doc['clients'])} client(s), {len(doc['roles'])} role(s); restart Mosquitto to load it",
              file=sys.stderr)
    return 0
