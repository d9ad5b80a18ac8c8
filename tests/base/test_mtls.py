"""The documented Mosquitto configuration (docs/mosquitto/) with mutual TLS and the roles of the
dynamic-security plugin that `bodycam-base broker-acl` writes, on a real TLS listener with a CA made
at test time. Cameras' certificates are issued from the CSR `bodycam provision` writes (Ed25519),
base has its own (CN bodycam-base), its alerts out another (CN bodycam-alerts), the dispatch system
that reads them its own (CN dispatch), the simulator's watcher its own (CN bodycam-sim), and a
certificate of the same CA that no role names (CN stranger)."""

from __future__ import annotations

import glob
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _mqtt import MOSQUITTO, free_port, wait_port
from _pki import cert, ec_key
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from bodycam.device.identity import provision

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mosquitto"


@dataclass
class Pki:
    dir: Path
    ca: Path

    def client(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


@dataclass
class Broker:
    port: int
    pki: Pki

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    d = tmp_path / "pki"
    d.mkdir()
    ca_key = ec_key(d / "ca.key")
    (d / "ca.crt").write_bytes(cert("bodycam test CA", ca_key.public_key(), ca_key, "bodycam test CA", ca=True))
    server_key = ec_key(d / "server.key")
    (d / "server.crt").write_bytes(cert("localhost", server_key.public_key(), ca_key, "bodycam test CA", server=True))
    for name in ("bodycam-base", "bodycam-alerts", "bodycam-sim", "dispatch", "stranger"):
        key = ec_key(d / f"{name}.key")
        (d / f"{name}.crt").write_bytes(cert(name, key.public_key(), ca_key, "bodycam test CA"))
    for cam in ("cam-01", "cam-02"):  # the camera's own Ed25519 key and the CSR `bodycam provision` wrote
        made = provision(d / f"{cam}.key", cam)
        csr = x509.load_pem_x509_csr(made.csr_file.read_bytes())
        assert csr.is_signature_valid
        cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        (d / f"{cam}.crt").write_bytes(cert(str(cn), csr.public_key(), ca_key, "bodycam test CA"))
    port = free_port()
    conf = (DOCS / "bodycam.conf").read_text()
    conf = conf.replace("/etc/mosquitto/bodycam/", f"{d}/").replace("listener 8883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/var/lib/mosquitto/", f"{tmp_path}/")
    plugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    assert plugin in conf
    found = glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")  # Debian's mosquitto package ships it
    assert found, "Mosquitto's dynamic-security plugin is missing (Debian package mosquitto)"
    conf = conf.replace(plugin, found[0])
    # base's consumers and its alerts' own identity; the dispatch system reads the alerts and nothing else
    made_acl = subprocess.run([sys.executable, "-m", "bodycam.base.cli", "broker-acl", "--camera", "cam-01",
                               "--camera", "cam-02", "--watcher", "bodycam-sim", "--base", "bodycam-base",
                               "--base", "bodycam-alerts", "--alerts-publish", "dispatch/alerts/#",
                               "--alerts-reader", "dispatch=dispatch/alerts/#", "--out", str(d / "dynamic-security.json")],
                              capture_output=True, text=True)
    assert made_acl.returncode == 0, made_acl.stderr
    (tmp_path / "mosquitto.conf").write_text(conf + f"user root\nlog_dest file {tmp_path}/mosquitto.log\nlog_type all\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield Broker(port, Pki(d, d / "ca.crt"))
    finally:
        proc.terminate()
        proc.wait(10)


class Client:
    """A paho MQTT 5 client over TLS that records what happens to it."""

    def __init__(self, b: Broker, name: str | None, client_id: str) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        cert, key = b.pki.client(name) if name else (None, None)
        self.c.tls_set(ca_certs=str(b.pki.ca), certfile=None if cert is None else str(cert),
                       keyfile=None if key is None else str(key))
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.subacks: list[int] = []
        self.connected = threading.Event()
        self.events = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.c.on_message = lambda c, u, m: (self.messages.append((m.topic, m.payload)), self.events.set())
        self.c.on_publish = lambda c, u, mid, rc, p: (self.pubacks.__setitem__(mid, rc.value), self.events.set())
        self.c.on_subscribe = lambda c, u, mid, rcs, p: (self.subacks.extend(r.value for r in rcs), self.events.set())
        self.c.connect("127.0.0.1", b.port, clean_start=True)
        self.c.loop_start()

    def wait(self, cond: Any, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.02)
        return bool(cond())

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_cameras_publish_only_under_their_own_prefix(broker: Broker) -> None:
    base = Client(broker, "bodycam-base", "bodycam-base-test")
    cam = Client(broker, "cam-01", "cam-01")
    try:
        assert base.connected.wait(5) and cam.connected.wait(5)
        base.c.subscribe("$share/base/bodycam/+/marker", qos=1)
        assert base.wait(lambda: base.subacks == [1])
        own = cam.c.publish("bodycam/cam-01/marker", b'{"own": 1}', qos=1).mid
        other = cam.c.publish("bodycam/cam-02/marker", b'{"forged": 1}', qos=1).mid
        assert cam.wait(lambda: own in cam.pubacks and other in cam.pubacks)
        assert cam.pubacks[own] == 0
        assert cam.pubacks[other] == 135  # MQTT 5: not authorized
        assert base.wait(lambda: len(base.messages) >= 1)
        time.sleep(0.3)
        assert base.messages == [("bodycam/cam-01/marker", b'{"own": 1}')]
    finally:
        cam.close()
        base.close()


def test_a_client_without_a_certificate_cannot_connect(broker: Broker) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="nocert", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(broker.pki.ca))
    connacks: list[Any] = []
    c.on_connect = lambda cl, u, f, rc, p: connacks.append(rc)
    errors: list[BaseException | int] = []
    try:
        c.connect("127.0.0.1", broker.port)
        for _ in range(30):  # TLS 1.2/1.3: the refusal shows at the handshake or at the first read
            rc = c.loop(0.1)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                errors.append(rc)
                break
    except (ssl.SSLError, OSError) as exc:
        errors.append(exc)
    assert errors, "the broker accepted a client without a certificate"
    assert connacks == []
    # the same client with a certificate of the fleet CA connects
    ok = Client(broker, "cam-01", "cam-01")
    try:
        assert ok.connected.wait(5)
    finally:
        ok.close()


def test_an_outsider_reads_nothing_of_other_cameras_nor_through_base_s_group(broker: Broker) -> None:
    """Another camera (and a certificate no role names) asking for base's group, every camera's
    markers or cam-01's commands is refused at SUBSCRIBE (reason 135) and receives nothing."""
    base = Client(broker, "bodycam-base", "bodycam-base-test")
    outsider = Client(broker, "cam-02", "cam-02")
    stranger = Client(broker, "stranger", "stranger")
    cam = Client(broker, "cam-01", "cam-01")
    try:
        assert base.connected.wait(5) and outsider.connected.wait(5) and cam.connected.wait(5)
        assert stranger.connected.wait(5)
        for c in (outsider, stranger):
            c.c.subscribe("$share/base/bodycam/+/marker", qos=1)
            c.c.subscribe("bodycam/+/marker", qos=1)
            c.c.subscribe("bodycam/cam-01/cmd/#", qos=1)
        cam.c.subscribe("bodycam/cam-01/cmd/#", qos=1)
        base.c.subscribe("$share/base/bodycam/+/marker", qos=1)
        assert base.wait(lambda: base.subacks == [1])
        assert outsider.wait(lambda: len(outsider.subacks) == 3) and stranger.wait(lambda: len(stranger.subacks) == 3)
        assert outsider.subacks == [135, 135, 135] and stranger.subacks == [135, 135, 135]
        assert cam.wait(lambda: cam.subacks == [1])
        for i in range(5):
            cam.c.publish("bodycam/cam-01/marker", json.dumps({"n": i}).encode(), qos=1)
        base.c.publish("bodycam/cam-01/cmd/resend", b"{}", qos=1)
        assert cam.wait(lambda: len(cam.pubacks) == 5) and set(cam.pubacks.values()) == {0}
        assert cam.wait(lambda: len(cam.messages) == 1)  # cam-01 gets its own command
        assert base.wait(lambda: len(base.messages) == 5)
        time.sleep(0.5)
        assert outsider.messages == [] and stranger.messages == []
    finally:
        for c in (cam, stranger, outsider, base):
            c.close()


def test_only_base_joins_its_group_and_gets_every_marker(broker: Broker) -> None:
    """The group attack of issue 13: with a certified camera trying to join base's shared
    subscription, base still receives all 20 markers (Mosquitto's acl_file let the intruder take
    its share: base got 10 of 20)."""
    base = Client(broker, "bodycam-base", "bodycam-base-test")
    intruder = Client(broker, "cam-02", "cam-02")
    cam = Client(broker, "cam-01", "cam-01")
    try:
        assert base.connected.wait(5) and intruder.connected.wait(5) and cam.connected.wait(5)
        base.c.subscribe("$share/base/bodycam/+/marker", qos=1)
        base.c.subscribe("$share/base/bodycam/+/telemetry", qos=0)  # what `listen` subscribes to as well
        intruder.c.subscribe("$share/base/bodycam/+/marker", qos=1)
        intruder.c.subscribe("$share/base/bodycam/+/telemetry", qos=0)
        assert base.wait(lambda: base.subacks == [1, 0]) and intruder.wait(lambda: intruder.subacks == [135, 135])
        for i in range(20):
            cam.c.publish("bodycam/cam-01/marker", json.dumps({"n": i}).encode(), qos=1)
        cam.c.publish("bodycam/cam-01/telemetry", b'{"t": 1}', qos=0)
        assert base.wait(lambda: len(base.messages) == 21, timeout=10), len(base.messages)
        markers = [m for t, m in base.messages if t.endswith("/marker")]
        assert sorted(json.loads(m)["n"] for m in markers) == list(range(20))
        assert ("bodycam/cam-01/telemetry", b'{"t": 1}') in base.messages
        assert intruder.messages == []
    finally:
        for c in (cam, intruder, base):
            c.close()


class PersistentBase:
    """Base with its own certificate, client id bodycam-base and a session kept 300 s (clean start off)."""

    def __init__(self, b: Broker, got: list[bytes]) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        cert, key = b.pki.client("bodycam-base")
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bodycam-base", protocol=mqtt.MQTTv5)
        self.c.tls_set(ca_certs=str(b.pki.ca), certfile=str(cert), keyfile=str(key))
        self.connected, self.disconnected, self.subscribed = threading.Event(), threading.Event(), threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.c.on_message = lambda c, u, m: got.append(m.payload)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set() if not rcs[0].is_failure else None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 300
        self.c.connect("127.0.0.1", b.port, clean_start=False, properties=props)
        self.c.loop_start()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_no_one_takes_base_s_client_id_nor_wipes_its_session(broker: Broker) -> None:
    """A certified camera and a stranger connect with base's client id and a clean start: the
    broker gives each its own CN as client id, so base stays connected, and base's persistent
    session (its queued markers) survives."""
    got: list[bytes] = []
    base = PersistentBase(broker, got)
    cam = Client(broker, "cam-01", "cam-01")
    thieves: list[Client] = []
    try:
        assert base.connected.wait(5) and cam.connected.wait(5)
        base.c.subscribe("bodycam/+/marker", qos=1)
        assert base.subscribed.wait(5)
        cam.c.publish("bodycam/cam-01/marker", b"live-1", qos=1)
        assert cam.wait(lambda: len(got) == 1)
        for name in ("cam-02", "stranger"):
            thief = Client(broker, name, "bodycam-base")  # base's client id, clean start
            thieves.append(thief)
            assert thief.connected.wait(5)
        time.sleep(0.5)
        assert not base.disconnected.is_set(), "a client with base's client id ended base's connection"
        cam.c.publish("bodycam/cam-01/marker", b"live-2", qos=1)
        assert cam.wait(lambda: len(got) == 2)
        # base goes away; markers queue in its session; a thief tries again with a clean start
        base.close()
        for i in range(3):
            cam.c.publish("bodycam/cam-01/marker", f"queued-{i}".encode(), qos=1)
        assert cam.wait(lambda: len(cam.pubacks) == 5)
        late = Client(broker, "cam-02", "bodycam-base")
        thieves.append(late)
        assert late.connected.wait(5)
        base = PersistentBase(broker, got)  # back, without subscribing again: its session kept everything
        assert base.connected.wait(5)
        assert cam.wait(lambda: len(got) == 5), got
        assert got[2:] == [b"queued-0", b"queued-1", b"queued-2"]
    finally:
        for t in thieves:
            t.close()
        cam.close()
        base.close()


def test_base_and_a_camera_end_to_end_over_mutual_tls(broker: Broker, tmp_path: Path) -> None:
    """`bodycam-base listen` with its client certificate; the camera's real publisher with its own."""
    from bodycam.device.clock import SystemClock
    from bodycam.device.identity import load_signer
    from bodycam.device.uplink.markers import MarkerDraft
    from bodycam.device.uplink.mqtt_config import MqttConfig, TlsConfig
    from bodycam.device.uplink.mqtt_publisher import MqttPublisher
    from bodycam.device.uplink.outbox import Outbox

    cert, key = broker.pki.client("bodycam-base")
    db = tmp_path / "base.db"
    listen = subprocess.Popen([sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", broker.url,
                               "--db", str(db), "--ca-file", str(broker.pki.ca), "--cert-file", str(cert),
                               "--key-file", str(key)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listen.stdout is not None
        seen = [listen.stdout.readline() for _ in range(2)]  # "connecting ...", then "listening on ..."
        assert "listening on mqtts://" in seen[-1], seen
        ccert, ckey = broker.pki.client("cam-01")
        cfg = MqttConfig(url=broker.url, tls=TlsConfig(ca_file=str(broker.pki.ca), cert_file=str(ccert),
                                                       key_file=str(ckey)))
        clock = SystemClock()
        with Outbox(tmp_path / "outbox.db", "cam-01", clock, signer=load_signer(ckey)) as ob, \
                MqttPublisher(cfg, ob, clock) as pub:
            for _ in range(3):
                ob.record(MarkerDraft(kind="manual", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns()))
            pub.wake()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and ob.acked_seq < 3:
                time.sleep(0.1)
            assert ob.acked_seq == 3, "base confirmed every marker over mutual TLS"
    finally:
        listen.terminate()
        out, err = listen.communicate(timeout=10)
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters.get("unverified") == 3  # no key registered at base here: stored unverified
    assert counters.get("stored") == 3, (out, err)


def camera_config(b: Broker, tmp_path: Path) -> Path:
    """The simulated camera cam-01 on this broker: its certificate, its device key signing the markers."""
    ccert, ckey = b.pki.client("cam-01")
    cfg = tmp_path / "cam.toml"
    cfg.write_text(f"""
[device]
id = "cam-01"
[identity]
key_file = "{ckey}"
[mqtt]
url = "{b.url}"
[mqtt.tls]
ca_file = "{b.pki.ca}"
cert_file = "{ccert}"
key_file = "{ckey}"
""")
    return cfg


def test_the_simulator_and_base_end_to_end_over_mutual_tls(broker: Broker, tmp_path: Path) -> None:
    """`bodycam-sim run --broker mqtts://`: the simulated camera publishes with cam-01's certificate
    (its device key signs the markers too), the simulator's watcher reads with its own watcher
    identity, and base stores and acknowledges every marker."""
    clip = Path(__file__).resolve().parents[2] / "examples" / "range_demo.mp4"
    cfg = camera_config(broker, tmp_path)
    bcert, bkey = broker.pki.client("bodycam-base")
    db = tmp_path / "base.db"
    listen = subprocess.Popen([sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", broker.url,
                               "--db", str(db), "--ca-file", str(broker.pki.ca), "--cert-file", str(bcert),
                               "--key-file", str(bkey)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listen.stdout is not None
        seen = [listen.stdout.readline() for _ in range(2)]
        assert "listening on mqtts://" in seen[-1], seen
        wcert, wkey = broker.pki.client("bodycam-sim")
        run = subprocess.run([sys.executable, "-m", "bodycam.hw_sim.cli", "run", str(clip), "--out", str(tmp_path / "out"),
                              "--config", str(cfg), "--broker", broker.url, "--watch-cert", str(wcert),
                              "--watch-key", str(wkey), "--json", "--quiet"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        mq = report["mqtt"]
        n = mq["acknowledged"]
        assert n >= 3 and mq["undelivered"] == 0, mq
        assert mq["received_by_subscriber"] == n, "the watcher saw every marker over mutual TLS"
    finally:
        listen.terminate()
        out, err = listen.communicate(timeout=10)
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters.get("stored") == n, (out, err)


def test_the_simulator_s_watcher_names_a_refused_subscription(broker: Broker, tmp_path: Path) -> None:
    """A watcher whose certificate has no watcher role is refused at SUBSCRIBE: a one-line error."""
    from bodycam.device.errors import BrokerError
    from bodycam.device.uplink.mqtt_config import TlsConfig
    from bodycam.hw_sim.marker_watch import MarkerWatch

    cert, key = broker.pki.client("stranger")
    watch = MarkerWatch(broker.url, tls=TlsConfig(ca_file=str(broker.pki.ca), cert_file=str(cert), key_file=str(key)),
                        connect_timeout_s=5)
    with pytest.raises(BrokerError, match="refused the subscription to bodycam/\\+/marker"):
        watch.start()
    with pytest.raises(BrokerError, match=r"nope\.pem: no such file"):
        MarkerWatch(broker.url, tls=TlsConfig(ca_file=str(tmp_path / "nope.pem")))


def test_listen_names_a_missing_tls_file_at_once(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", "mqtts://127.0.0.1:1",
                          "--db", str(tmp_path / "b.db"), "--ca-file", str(tmp_path / "nope.crt")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "nope.crt" in res.stderr and res.stderr.count("\n") == 1


def test_the_dashboard_sends_a_record_command_over_mutual_tls_and_a_stranger_cannot(
        broker: Broker, tmp_path: Path) -> None:
    """serve --broker mqtts://... --broker-cert-file/--broker-key-file: an operator's "start recording"
    reaches the camera through the broker's ACL with a base identity; with a certificate no role names,
    the broker refuses it and the dashboard says so (audited record_failed)."""
    from bodycam.base.store import SqliteStore
    from bodycam.base.web.db import WebDb
    from bodycam.base.web.record import RecordSender
    from bodycam.device.errors import BrokerError
    from bodycam.device.uplink.mqtt_config import MqttConfig, TlsConfig

    cam = Client(broker, "cam-01", "cam-01")
    store = SqliteStore(tmp_path / "base.db")
    try:
        assert cam.connected.wait(5)
        cam.c.subscribe("bodycam/cam-01/cmd/#", qos=1)
        assert cam.wait(lambda: cam.subacks == [1])
        web = WebDb(store)

        def sender(name: str) -> RecordSender:
            cert, key = broker.pki.client(name)
            return RecordSender(web, MqttConfig(url=broker.url, tls=TlsConfig(ca_file=str(broker.pki.ca),
                                                                               cert_file=str(cert), key_file=str(key))))

        cmd = sender("bodycam-base").send("cam-01", "olga", "127.0.0.1", time.time_ns())
        assert cam.wait(lambda: any(t == "bodycam/cam-01/cmd/record" for t, _ in cam.messages))
        assert json.loads(cam.messages[-1][1])["id"] == cmd.id
        with pytest.raises(BrokerError, match="refused the command"):
            sender("stranger").send("cam-01", "olga", "127.0.0.1", time.time_ns())
        time.sleep(0.3)
        assert [t for t, _ in cam.messages].count("bodycam/cam-01/cmd/record") == 1  # the stranger's never came
        actions = [r.action for r in web.audit_rows()]
        assert actions[:2] == ["record_failed", "record"]
    finally:
        cam.close()
        store.close()


def test_serve_names_a_missing_broker_tls_file_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bodycam.base.cli import main

    db = str(tmp_path / "b.db")
    assert main(["serve", "--db", db, "--broker", "mqtts://127.0.0.1:8883", "--broker-cert-file",
                 str(tmp_path / "web.crt")]) == 2
    assert "--broker-cert-file and --broker-key-file go together" in capsys.readouterr().err
    assert main(["serve", "--db", db, "--broker", "mqtts://127.0.0.1:8883", "--broker-ca-file",
                 str(tmp_path / "ca.crt")]) == 2
    assert "--broker-ca-file: " in capsys.readouterr().err
    assert main(["serve", "--db", db, "--broker-ca-file", str(tmp_path / "ca.crt")]) == 2
    assert "go with --broker mqtts://" in capsys.readouterr().err


def test_alerts_go_out_over_mutual_tls_with_their_own_identity_to_the_dispatch_system_only(
        broker: Broker, tmp_path: Path) -> None:
    """`listen --alerts-topic` with the alerts' own certificate (`--alerts-cert-file`): the simulated
    camera's shots reach base, each alert reaches the dispatch system (`broker-acl --alerts-reader`), a
    stranger of the same CA cannot subscribe to them, and listen keeps its connection (with listen's
    own certificate the alerts would take its client id: `use_username_as_clientid`)."""
    clip = Path(__file__).resolve().parents[2] / "examples" / "range_demo.mp4"
    cfg = camera_config(broker, tmp_path)
    dispatch, stranger = Client(broker, "dispatch", "dispatch"), Client(broker, "stranger", "stranger")
    bcert, bkey = broker.pki.client("bodycam-base")
    acert, akey = broker.pki.client("bodycam-alerts")
    listen = None
    try:
        for c in (dispatch, stranger):
            assert c.wait(c.connected.is_set)
            c.c.subscribe("dispatch/alerts/#", qos=1)
        assert dispatch.wait(lambda: len(dispatch.subacks) == 1) and dispatch.subacks == [1]
        assert stranger.wait(lambda: len(stranger.subacks) == 1) and stranger.subacks[0] >= 0x80  # not authorized
        db = tmp_path / "base.db"
        listen = subprocess.Popen([sys.executable, "-m", "bodycam.base.cli", "listen", "--broker", broker.url,
                                   "--db", str(db), "--ca-file", str(broker.pki.ca), "--cert-file", str(bcert),
                                   "--key-file", str(bkey), "--alerts-topic", "dispatch/alerts",
                                   "--alerts-cert-file", str(acert), "--alerts-key-file", str(akey)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert listen.stdout is not None
        seen = [listen.stdout.readline() for _ in range(3)]  # connecting, alerts out, listening
        assert "alerts out: mqtt" in seen[1] and "listening on mqtts://" in seen[-1], seen
        run = subprocess.run([sys.executable, "-m", "bodycam.hw_sim.cli", "run", str(clip), "--out", str(tmp_path / "out"),
                              "--config", str(cfg), "--broker", broker.url, "--json", "--quiet"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        mq = json.loads(run.stdout)["mqtt"]
        assert mq["acknowledged"] >= 6 and mq["undelivered"] == 0, mq  # base confirmed every marker
        shots = [json.loads(line) for line in next((tmp_path / "out" / "recordings").iterdir()).joinpath(
            "markers.jsonl").read_text().splitlines()]
        shot_ids = {m["id"] for m in shots if m["kind"] == "gunshot"}
        assert len(shot_ids) == 6

        def alerted() -> set[str]:
            return {json.loads(body)["marker"] for t, body in dispatch.messages if t == "dispatch/alerts/gunshot"}

        assert dispatch.wait(lambda: alerted() >= shot_ids, timeout=30), (dispatch.messages, listen.stderr)
        assert stranger.messages == []
    finally:
        if listen is not None:
            listen.terminate()
            out, err = listen.communicate(timeout=10)
        dispatch.close()
        stranger.close()
    assert "use_username_as_clientid" not in err  # the alerts had their own identity: no warning
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters.get("stored") == mq["acknowledged"], (out, err)
    log = (tmp_path / "mosquitto.log").read_text()
    assert "already connected, closing old connection" not in log, "a client id was taken over"
