#!/usr/bin/env python3
"""paho-mqtt (2.x) against Seed: connect, subscribe, QoS 1 publish -> receive.

Usage: paho_roundtrip.py HOST PORT TRANSPORT VERSION CLIENT_ID
  TRANSPORT: tcp | websockets (path /mqtt)
  VERSION:   3.1.1 | 5

For 5.0 it also checks the CONNACK, SUBACK and PUBACK reason codes and that user properties,
content type and correlation data come through. Prints OK and exits 0 on success; on failure
prints what went wrong to stderr and exits 1. Every wait is bounded.
"""

import sys
import threading
import time

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # the Rust test reports this as a failure, not a skip
    print(f"FAIL: paho-mqtt is not installed ({e}); run scripts/install-test-deps.sh",
          file=sys.stderr)
    sys.exit(1)

TIMEOUT = 10.0


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 6:
        fail(__doc__)
    host, port, transport, version, client_id = sys.argv[1:]
    port = int(port)
    if transport not in ("tcp", "websockets"):
        fail(f"bad transport {transport!r}")
    v5 = version == "5"
    if not v5 and version != "3.1.1":
        fail(f"bad version {version!r}")
    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    topic = f"paho/{client_id}/t"

    state = {"connack": None, "suback": None, "puback": None, "messages": []}
    cond = threading.Condition()

    def on_connect(client, userdata, flags, reason_code, properties):
        with cond:
            state["connack"] = (flags, reason_code, properties)
            cond.notify_all()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        with cond:
            state["suback"] = (mid, reason_codes, properties)
            cond.notify_all()

    def on_publish(client, userdata, mid, reason_code, properties):
        with cond:
            state["puback"] = (mid, reason_code, properties)
            cond.notify_all()

    def on_message(client, userdata, message):
        with cond:
            state["messages"].append(message)
            cond.notify_all()

    def wait(what, pred):
        deadline = time.monotonic() + TIMEOUT
        with cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    fail(f"timed out waiting for {what}")
                cond.wait(left)

    kwargs = {}
    if not v5:
        kwargs["clean_session"] = True
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                         transport=transport, **kwargs)
    if transport == "websockets":
        client.ws_set_options(path="/mqtt")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message

    if v5:
        client.connect(host, port, keepalive=30, clean_start=True)
    else:
        client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        wait("CONNACK", lambda: state["connack"] is not None)
        flags, rc, props = state["connack"]
        if rc.is_failure:
            fail(f"CONNACK refused: {rc}")
        if flags.session_present:
            fail("session_present set for a clean session")
        if v5:
            if rc.value != 0:
                fail(f"CONNACK reason {rc.value:#x}, expected 0x00 Success")
            if props is None:
                fail("CONNACK has no properties")
            # Seed advertises its limits; check the ones the config documents.
            if not hasattr(props, "TopicAliasMaximum"):
                fail(f"CONNACK lacks Topic Alias Maximum: {props}")
            if not hasattr(props, "ReceiveMaximum"):
                fail(f"CONNACK lacks Receive Maximum: {props}")

        result, mid = client.subscribe(topic, qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS:
            fail(f"subscribe call failed: {result}")
        wait("SUBACK", lambda: state["suback"] is not None)
        _, codes, _ = state["suback"]
        if len(codes) != 1:
            fail(f"SUBACK has {len(codes)} codes")
        if codes[0].is_failure or codes[0].value != 1:
            fail(f"SUBACK code {codes[0]} ({codes[0].value:#x}), expected granted QoS 1")

        payload = bytes(range(256)) * 4
        pub_props = None
        if v5:
            pub_props = Properties(PacketTypes.PUBLISH)
            pub_props.UserProperty = [("app", "seed-e2e"), ("n", "1")]
            pub_props.ContentType = "application/octet-stream"
            pub_props.CorrelationData = b"\x00corr\xff"
        info = client.publish(topic, payload, qos=1, properties=pub_props)
        wait("PUBACK", lambda: state["puback"] is not None)
        _, prc, _ = state["puback"]
        if v5 and (prc.is_failure or prc.value not in (0x00, 0x10)):
            fail(f"PUBACK reason {prc} ({prc.value:#x})")
        if not info.is_published():
            fail("publish not acknowledged")

        wait("the message", lambda: len(state["messages"]) >= 1)
        msg = state["messages"][0]
        if msg.topic != topic:
            fail(f"topic {msg.topic!r} != {topic!r}")
        if msg.payload != payload:
            fail("payload differs")
        if msg.qos != 1:
            fail(f"delivered at QoS {msg.qos}, expected 1")
        if msg.retain:
            fail("retain flag set on a live message")
        if v5:
            p = msg.properties
            got_user = getattr(p, "UserProperty", None)
            if got_user != [("app", "seed-e2e"), ("n", "1")]:
                fail(f"user properties {got_user!r}")
            if getattr(p, "ContentType", None) != "application/octet-stream":
                fail(f"content type {getattr(p, 'ContentType', None)!r}")
            if getattr(p, "CorrelationData", None) != b"\x00corr\xff":
                fail(f"correlation data {getattr(p, 'CorrelationData', None)!r}")

        client.unsubscribe(topic)
        client.disconnect()
    finally:
        client.loop_stop()
    print(f"OK {transport} {version}")


if __name__ == "__main__":
    main()
