"""Uplink: markers, the durable outbox, the MQTT publisher and its payloads."""
