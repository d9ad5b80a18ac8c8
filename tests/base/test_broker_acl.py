"""`bodycam-base broker-acl`: the dynamic-security file (the broker tests run it: tests/base/test_mtls.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bodycam.base.broker_acl import dynsec_config
from bodycam.device.errors import UsageError
from bodycam.device.identity import provision


def acls(doc: dict, role: str) -> set[tuple[str, str]]:
    (r,) = [r for r in doc["roles"] if r["rolename"] == role]
    assert all(a["allow"] for a in r["acls"])
    return {(a["acltype"], a["topic"]) for a in r["acls"]}


def test_roles_give_base_alone_its_group_and_each_camera_its_own_prefix() -> None:
    doc = dynsec_config(["cam-02", "cam-01", "cam-01"], ["bodycam-base", "bodycam-base-2"], ["bodycam-sim"],
                        prefix="fleet", group="hq")
    assert doc["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                       "subscribe": False, "unsubscribe": True}
    users = {c["username"]: [r["rolename"] for r in c["roles"]] for c in doc["clients"]}
    assert users == {"bodycam-base": ["bodycam-base"], "bodycam-base-2": ["bodycam-base"],
                     "bodycam-sim": ["bodycam-watcher"], "cam-01": ["camera-cam-01"], "cam-02": ["camera-cam-02"]}
    base = acls(doc, "bodycam-base")
    assert ("subscribePattern", "$share/hq/fleet/+/marker") in base
    assert ("subscribePattern", "$share/hq/fleet/+/telemetry") in base and ("publishClientReceive", "fleet/+/telemetry") in base
    assert ("publishClientSend", "fleet/+/ack") in base and ("publishClientSend", "fleet/+/cmd/#") in base
    assert acls(doc, "camera-cam-01") == {
        ("publishClientSend", "fleet/cam-01/marker"), ("publishClientSend", "fleet/cam-01/status"),
        ("publishClientSend", "fleet/cam-01/telemetry"),
        ("subscribePattern", "fleet/cam-01/cmd/#"), ("publishClientReceive", "fleet/cam-01/cmd/#"),
        ("subscribePattern", "fleet/cam-01/ack"), ("publishClientReceive", "fleet/cam-01/ack")}
    assert acls(doc, "bodycam-watcher") == {("subscribePattern", "fleet/+/marker"),
                                            ("publishClientReceive", "fleet/+/marker")}
    # nobody but base's role may touch the group
    others = [a for r in doc["roles"] if r["rolename"] != "bodycam-base" for a in r["acls"]]
    assert not [a for a in others if a["topic"].startswith("$share")]


@pytest.mark.parametrize("bad", [(["cam/01"], ["bodycam-base"]), (["+"], ["bodycam-base"]),
                                 (["bodycam-base"], ["bodycam-base"]), (["cam-1"], ["#"])])
def test_names_that_are_no_cn_or_have_two_roles_are_refused(bad: tuple[list[str], list[str]]) -> None:
    with pytest.raises(UsageError):
        dynsec_config(bad[0], bad[1])


def test_cli_takes_the_cameras_from_base_s_key_registry(tmp_path: Path) -> None:
    db = tmp_path / "base.db"
    for cam in ("cam-07", "cam-08"):
        made = provision(tmp_path / cam / "device.key", cam)
        res = subprocess.run([sys.executable, "-m", "bodycam.base.cli", "keys", "add", cam, str(made.public_file),
                              "--db", str(db)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    out = tmp_path / "dynsec.json"
    res = subprocess.run([sys.executable, "-m", "bodycam.base.cli", "broker-acl", "--db", str(db), "--camera", "cam-09",
                          "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert sorted(c["username"] for c in doc["clients"]) == ["bodycam-base", "cam-07", "cam-08", "cam-09"]
    bad = subprocess.run([sys.executable, "-m", "bodycam.base.cli", "broker-acl", "--camera", "a b"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "camera 'a b'" in bad.stderr and "Traceback" not in bad.stderr


def test_base_may_publish_its_alerts_topics_but_never_speak_for_a_camera() -> None:
    doc = dynsec_config(["cam-01"], alerts=["dispatch/alerts/#", "homeassistant/#", "bodycam-ha/#"])
    base = acls(doc, "bodycam-base")
    assert {("publishClientSend", t) for t in ("dispatch/alerts/#", "homeassistant/#", "bodycam-ha/#")} <= base
    assert not [a for a in acls(doc, "camera-cam-01") if "alerts" in a[1] or "homeassistant" in a[1]]
    for bad in ("#", "bodycam/cam-01/marker", "bodycam/#", "+/x", "+/+/marker", "$SYS/x", "/x", ""):
        with pytest.raises(UsageError, match="alerts-publish"):
            dynsec_config(["cam-01"], alerts=[bad])
    # a prefix of several levels: nothing that reaches under it, on any level
    for bad in ("org/#", "org/+/cam-01/marker", "+/bodycam/#", "org/bodycam"):
        with pytest.raises(UsageError, match="alerts-publish"):
            dynsec_config(["cam-01"], prefix="org/bodycam", alerts=[bad])
    assert ("publishClientSend", "org/alerts/#") in acls(
        dynsec_config(["cam-01"], prefix="org/bodycam", alerts=["org/alerts/#"]), "bodycam-base")


def test_an_alerts_reader_reads_the_alerts_topics_and_nothing_else() -> None:
    doc = dynsec_config(["cam-01"], alerts=["dispatch/alerts/#", "bodycam-ha/#"], alert_readers=["dispatch"])
    assert acls(doc, "bodycam-alerts-reader") == {(k, t) for t in ("dispatch/alerts/#", "bodycam-ha/#")
                                                  for k in ("subscribePattern", "publishClientReceive")}
    assert {"username": "dispatch", "textname": "alerts reader",
            "roles": [{"rolename": "bodycam-alerts-reader"}]} in doc["clients"]
    with pytest.raises(UsageError, match="needs the topics"):
        dynsec_config(["cam-01"], alert_readers=["dispatch"])  # nothing to read
    with pytest.raises(UsageError, match="two roles"):
        dynsec_config(["cam-01"], alerts=["dispatch/alerts/#"], alert_readers=["bodycam-base"])
    with pytest.raises(UsageError, match="two roles"):
        dynsec_config(["cam-01"], alerts=["dispatch/alerts/#"], alert_readers=["cam-01"])
    assert "bodycam-alerts-reader" not in {r["rolename"] for r in dynsec_config(["cam-01"], alerts=["x/#"])["roles"]}


def test_an_alerts_reader_can_be_limited_to_some_of_the_alerts_topics() -> None:
    doc = dynsec_config(["cam-01"], alerts=["dispatch/alerts/#", "homeassistant/#", "bodycam-ha/#"],
                        alert_readers=["dispatch=dispatch/alerts/#", "home-assistant=homeassistant/#,bodycam-ha/#"])
    assert acls(doc, "alerts-reader-dispatch") == {("subscribePattern", "dispatch/alerts/#"),
                                                   ("publishClientReceive", "dispatch/alerts/#")}
    assert {t for _, t in acls(doc, "alerts-reader-home-assistant")} == {"homeassistant/#", "bodycam-ha/#"}
    roles = {c["username"]: c["roles"] for c in doc["clients"]}
    assert roles["dispatch"] == [{"rolename": "alerts-reader-dispatch"}]
    assert "bodycam-alerts-reader" not in {r["rolename"] for r in doc["roles"]}  # nobody reads them all
    for bad in ("dispatch=bodycam/#", "dispatch=", "dispatch=dispatch/#"):  # only topics base publishes
        with pytest.raises(UsageError, match="some of the --alerts-publish topics"):
            dynsec_config(["cam-01"], alerts=["dispatch/alerts/#"], alert_readers=[bad])
    with pytest.raises(UsageError, match="alerts reader"):
        dynsec_config(["cam-01"], alerts=["dispatch/alerts/#"], alert_readers=["a b=dispatch/alerts/#"])
