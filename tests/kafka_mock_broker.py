"""A Kafka broker for the tests: librdkafka's mock cluster (one broker, topic `alerts`),
from the librdkafka that confluent-kafka's wheel carries, in a process of its own so a
test can take it away and bring it back while Aster produces to it.

Prints the bootstrap address on its first line, then obeys lines on stdin: `down`, `up`
(answered with the same word once done); it stops at the end of its input."""
import ctypes
import glob
import os
import sys

import confluent_kafka

libs = glob.glob(os.path.join(os.path.dirname(confluent_kafka.__file__), "..",
                              "confluent_kafka.libs", "librdkafka*.so*"))
if not libs:
    sys.exit("confluent-kafka's bundled librdkafka was not found")
L = ctypes.CDLL(libs[0])
L.rd_kafka_conf_new.restype = ctypes.c_void_p
L.rd_kafka_new.restype = ctypes.c_void_p
L.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
L.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
L.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
L.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
L.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
L.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
for f in ("rd_kafka_mock_broker_set_down", "rd_kafka_mock_broker_set_up"):
    getattr(L, f).argtypes = [ctypes.c_void_p, ctypes.c_int32]

errors = ctypes.create_string_buffer(512)
client = L.rd_kafka_new(0, L.rd_kafka_conf_new(), errors, 512)  # a producer handle
cluster = L.rd_kafka_mock_cluster_new(client, 1)
if not cluster:
    sys.exit("the mock cluster did not start")
if L.rd_kafka_mock_topic_create(cluster, b"alerts", 1, 1) != 0:
    sys.exit("could not create the topic")
print(L.rd_kafka_mock_cluster_bootstraps(cluster).decode(), flush=True)
for line in sys.stdin:
    word = line.strip()
    if word == "down":
        L.rd_kafka_mock_broker_set_down(cluster, 1)
    elif word == "up":
        L.rd_kafka_mock_broker_set_up(cluster, 1)
    else:
        continue
    print(word, flush=True)
