"""Alert distribution (issue 5): a night's alerts reach a confluent-kafka consumer through a
Kafka broker that goes away during the night and comes back, and reach a Comet VOEvent
broker; every alert arrives once, and the archive holds each once. A user's saved filter
has its own topic, which gets the alerts it passes, each once.

The test runs its own Aster server (configured with the two brokers) on a fresh data
directory, and `aster night run` against that directory as a separate process, as visits
would arrive: the server follows the alert archive and distributes what the night adds."""
import contextlib
import io
import os
import pathlib
import socket
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import requests
from conftest import aster_server, free_port, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
STREAM = "ivo://aster.test/alerts"


@pytest.fixture(scope="module")
def kafka():
    p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "kafka_mock_broker.py")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    bootstrap = p.stdout.readline().strip()
    assert bootstrap, "the mock broker did not start"

    def command(word):
        p.stdin.write(word + "\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == word

    yield bootstrap, command
    p.stdin.close()
    p.wait(timeout=10)


@pytest.fixture(scope="module")
def comet(tmp_path_factory):
    d = tmp_path_factory.mktemp("comet")
    port = free_port()
    events = d / "events"
    events.mkdir()
    log = open(d / "comet.log", "w")
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "comet_loopback.py"), "-n", "--pidfile=",
         "comet", "--local-ivo=ivo://aster.test/comet", "--receive",
         f"--receive-port={port}", "--author-whitelist=127.0.0.0/8",
         f"--eventdb={d / 'db'}", "--save-event", f"--save-event-directory={events}"],
        cwd=d, stdout=log, stderr=subprocess.STDOUT)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return p.poll() is not None
    wait_for(listening, 60, "Comet to listen")
    assert p.poll() is None, (d / "comet.log").read_text()
    yield port, events
    p.terminate()
    p.wait(timeout=10)


def save_bright_filter(cli, base, user):
    """Makes `user` (with the Aster command line `cli`) and saves their filter of the
    alerts at SNR 20 or more on the server at `base`; returns its id."""
    subprocess.run(cli + ["users", "add", user], check=True, capture_output=True)
    token = subprocess.run(cli + ["token", "create", "--user", user], check=True,
                           capture_output=True, text=True).stdout.strip()
    saved = requests.post(f"{base}/api/filters", timeout=30,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"name": "bright", "filter": "diaSource.snr >= 20"})
    assert saved.status_code == 201, saved.text
    return saved.json()["id"]


def test_a_night_reaches_kafka_through_an_outage_and_comet(kafka, comet, tmp_path):
    from lsst.alert.packet import Schema

    bootstrap, broker = kafka
    comet_port, events = comet
    aster = os.environ["ASTER_BIN"]
    data = tmp_path / "data"
    data.mkdir()
    config = data / "aster.toml"
    config.write_text(
        "[alerts]\n"
        f'kafka_brokers = "{bootstrap}"\n'
        f'voevent_broker = "127.0.0.1:{comet_port}"\n'
        f'voevent_stream = "{STREAM}"\n')
    with aster_server(data, config) as base:
        streams = requests.get(f"{base}/api/alerts/streams", timeout=5).json()
        assert streams["kafka"]["bootstrap_servers"] == bootstrap
        assert streams["voevent"]["stream"] == STREAM
        assert streams["kafka"]["user_topics"].startswith("alerts.<user>")

        # Alice saves a filter before the night: her topic gets what it passes.
        cli = [aster, "--config", str(config), "--data-dir", str(data)]
        filter_id = save_bright_filter(cli, base, "alice")

        # The broker goes away, then the night runs: its alerts wait in the archive. The
        # night is small: the mock broker keeps only the newest 5 MB of a partition (about
        # 50 alerts with their cutouts), and every alert must still be there to be read.
        broker("down")
        subprocess.run(
            [aster, "--config", str(config), "--data-dir", str(data), "night", "run",
             "--visits", "2", "--size", "512", "--stars", "120", "--variables", "8",
             "--transients", "20", "--asteroids", "2", "--template-visits", "2"],
            check=True, timeout=900, capture_output=True)
        schema = Schema.from_file()
        r = requests.get(f"{base}/api/alerts", params={"limit": 100000}, timeout=60)
        _, records = schema.retrieve_alerts(io.BytesIO(r.content))
        records = list(records)
        archived = [a["diaSourceId"] for a in records]
        assert archived and len(archived) == len(set(archived))
        assert len(r.content) < 4_500_000, "the night outgrew the mock broker's 5 MB"
        time.sleep(3)
        broker("up")

        # Every alert, then a few seconds more to see that none comes twice.
        got = read_all(bootstrap, "alerts", len(archived), "aster-test")
        keys = [int(m.key()) for m in got]
        assert len(keys) == len(set(keys)), "an alert came twice"
        assert sorted(keys) == sorted(archived)

        # Alice's topic: the alerts her filter passes, once each, naming her filter.
        bright = sorted(a["diaSourceId"] for a in records if a["diaSource"]["snr"] >= 20)
        assert bright and len(bright) < len(archived)
        # The broker made her topic when it was first written to, with its default
        # partitions: all of them are read.
        got_mine = read_all(bootstrap, "alerts.alice", len(bright), "aster-alice")
        assert sorted(int(m.key()) for m in got_mine) == bright
        for m in got_mine:
            assert dict(m.headers())["aster-filters"] == str(filter_id).encode()
            assert schema.deserialize(m.value()[5:])["diaSource"]["snr"] >= 20
        for m in got:
            value = m.value()
            magic, schema_id = struct.unpack(">bI", value[:5])
            assert (magic, schema_id) == (0, 1101)
            alert = schema.deserialize(value[5:])
            assert alert["diaSourceId"] == int(m.key())

        # Comet saved one VOEvent per alert, each naming its DIASource.
        def saved():
            files = list(events.iterdir())
            return files if len(files) >= len(archived) else None
        files = wait_for(saved, 180, "Comet to save every event")
        assert len(files) == len(archived)
        ns = {"voe": "http://www.ivoa.net/xml/VOEvent/v2.0"}
        ivorns = set()
        for f in files:
            root = ET.parse(f).getroot()
            ivorns.add(root.get("ivorn"))
            params = {p.get("name"): p.get("value") for p in root.iter("Param")}
            assert root.get("ivorn") == f"{STREAM}#diaSource-{params['diaSourceId']}"
            assert root.find("WhereWhen", ns) is not None or root.find("WhereWhen") is not None
        assert ivorns == {f"{STREAM}#diaSource-{i}" for i in archived}


def tansu_binary():
    """Tansu, a Kafka-protocol broker from crates.io, as scripts/setup caches it."""
    given = os.environ.get("ASTER_TANSU")
    if given:
        return given
    cached = pathlib.Path.home() / ".cache" / "aster-tools" / "bin" / "tansu"
    return str(cached) if cached.exists() else None


@contextlib.contextmanager
def tansu_broker(port, log):
    """A Tansu broker on 127.0.0.1:`port`, its topics in memory, until the block ends."""
    url = f"tcp://127.0.0.1:{port}"
    p = subprocess.Popen([tansu_binary(), "broker", "--listener-url", url,
                          "--advertised-listener-url", url, "--storage-engine",
                          "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                assert p.poll() is None, "Tansu exited"
        wait_for(listening, 30, "Tansu to listen")
        yield
    finally:
        p.terminate()
        p.wait(timeout=30)


def read_all(bootstrap, topic, expected, group):
    """Every message of every partition of `topic`, once `expected` have come and then a
    few quiet seconds (to see that none comes twice)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    partitions = wait_for(
        lambda: consumer.list_topics(topic, timeout=10).topics[topic].partitions,
        60, f"topic {topic}")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got = []
    end = time.time() + 180
    quiet_until = None
    while time.time() < end:
        m = consumer.poll(1.0)
        if m is None:
            if len(got) >= expected:
                quiet_until = quiet_until or time.time() + 5
                if time.time() > quiet_until:
                    break
            continue
        assert m.error() is None, m.error()
        got.append(m)
    consumer.close()
    return got


@pytest.mark.skipif(tansu_binary() is None,
                    reason="Tansu is not installed (scripts/setup caches it in ~/.cache/aster-tools)")
def test_a_night_reaches_a_tansu_broker_that_comes_up_late(tmp_path):
    """Against a real Kafka-protocol broker, which makes no topic on demand: the night runs
    before the broker is up; once it is, Aster makes its topics and every alert arrives
    once, on the alerts topic and on a user's filtered topic."""
    from lsst.alert.packet import Schema

    aster = os.environ["ASTER_BIN"]
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    data = tmp_path / "data"
    data.mkdir()
    config = data / "aster.toml"
    config.write_text(f'[alerts]\nkafka_brokers = "{bootstrap}"\n')
    cli = [aster, "--config", str(config), "--data-dir", str(data)]
    with aster_server(data, config) as base:
        save_bright_filter(cli, base, "bob")
        subprocess.run(cli + ["night", "run", "--visits", "2", "--size", "512",
                              "--stars", "120", "--variables", "8", "--transients", "20",
                              "--asteroids", "2", "--template-visits", "2"],
                       check=True, timeout=900, capture_output=True)
        r = requests.get(f"{base}/api/alerts", params={"limit": 100000}, timeout=60)
        schema = Schema.from_file()
        _, records = schema.retrieve_alerts(io.BytesIO(r.content))
        records = list(records)
        archived = sorted(a["diaSourceId"] for a in records)
        bright = sorted(a["diaSourceId"] for a in records if a["diaSource"]["snr"] >= 20)
        assert archived and bright and len(bright) < len(archived)
        with open(tmp_path / "tansu.log", "w") as log, tansu_broker(port, log):
            got = read_all(bootstrap, "alerts", len(archived), "aster-tansu")
            keys = [int(m.key()) for m in got]
            assert len(keys) == len(set(keys)), "an alert came twice"
            assert sorted(keys) == archived
            for m in got:
                assert struct.unpack(">bI", m.value()[:5]) == (0, 1101)
                assert schema.deserialize(m.value()[5:])["diaSourceId"] == int(m.key())
            mine = read_all(bootstrap, "alerts.bob", len(bright), "aster-tansu-bob")
            assert sorted(int(m.key()) for m in mine) == bright
